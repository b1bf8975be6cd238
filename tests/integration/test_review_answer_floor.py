"""Adversarial review of the answer gas price floor, on a real Anvil.

Scope: data claims (availability in the TaskManager, omission and manifest in the OmissionManager)
are priced at ``ClaimBond.gasPrice(MIN_ANSWER_GAS_PRICE)`` = max(block.basefee, floor), a
TaskManager constructor parameter the OmissionManager copies; the claim's deposit covers its
costliest answer at that price and the answer is paid its cost at that price. The SDK's claims
cover max(fee cap, floor) (`Binding.claim`); ``supernet contracts deploy`` refuses a chain whose
latest base fee is 0 unless ``--min-answer-gas-price`` (gwei) is given. Attacked as a node baiting
claims, as a claimant griefing an honest node, and as a deployer making a mistake the CLI should
catch.

Found:

- MEDIUM, FIXED: the answer was paid at the floor whatever its own transaction paid. A node whose
  answer lands below the floor (its own block, a 0-price bundle or sponsored transaction, a
  validator accepting less than the floor the deployer set, a base fee between 0 and the floor
  with no tip) is paid ``floor x gas`` for an answer that cost it less: every claim it baits by
  withholding pays it (~0.0025 ether a 30 KB trace at a 2 gwei floor answered at price 0, up to
  ~0.032 ether at the largest trace), out of the claimant's deposit, on top of the 10 % fee the
  claimant burns. Now an answer paying less than its price a gas is refused
  (`ClaimBond.costOfAnswer`: ``AnswerBelowPrice``, only where the floor is above the base fee)
  (test_defence_an_answer_sent_below_the_floor_is_refused).
- MEDIUM, FIXED: the deploy CLI took any floor: one given in wei (``--min-answer-gas-price
  1000000000`` for 1 gwei) deploys a floor of 1 ether a gas, an availability claim then needs
  ~15.9M ether, so no data claim can ever be opened and withholding is free
  (test_defence_the_deploy_cli_refuses_a_floor_given_in_wei: above 10,000 gwei is refused).
- MEDIUM, FIXED: the deploy CLI only refused a base fee of exactly 0. A chain whose base fee is
  negligible but not 0 (Polygon PoS at low load: wei against a 25+ gwei minimum tip; 1 wei here)
  deploys with floor 0, its answers paid ~nothing: the asymmetry the floor was added to close
  (test_defence_the_deploy_cli_refuses_a_negligible_base_fee_chain_without_a_floor: now also a
  base fee under a tenth of the RPC's suggested tip).
- LOW, FIXED: a positive floor under 1 wei (``--min-answer-gas-price 1e-10``: the deployer's ether
  or a typo) rounds to 0 and skips the zero-base-fee refusal: a zero-base-fee chain deployed
  without a floor, which only an explicit ``0`` should do
  (test_defence_the_deploy_cli_refuses_a_sub_wei_floor).
- LOW, FIXED: on a proof-of-authority chain (BNB Chain, Polygon PoS: a block's extraData is longer
  than 32 bytes) the CLI's base-fee check and the SDK's claim fee cap raise web3's
  ExtraDataLengthError (no POA middleware in `make_web3`): ``supernet contracts deploy`` dies
  with a traceback and an SDK claim cannot be sent, on the very chains the floor exists for
  (test_defence_the_floor_checks_work_on_a_proof_of_authority_chain: `make_web3` injects web3's
  ``ExtraDataToPOAMiddleware``; the CLI's check catches web3's errors).
- LOW, FIXED: the SDK sent a node's answer with the RPC's suggested tip whatever the floor: where
  the floor (the chain's least accepted price) is below that tip the honest node pays the
  difference on every claim (0.5 gwei x its gas here), so a claimant's griefing costs the node
  (test_defence_the_sdks_answer_pays_the_floor_as_its_tip: `Binding.answer` tips the floor).

Checked and holding:

- Both contracts price at the same max(base fee, floor) in the same block: a deposit one wei
  short is refused by both, below, at and above the floor, and the exact one accepted
  (test_defence_both_contracts_require_the_same_deposit_around_the_floor).
- A base fee rising above the floor after the claim: the deposit's cover is for the worst answer,
  so an ordinary answer at 3x the claim's price is still paid its cost in full
  (test_defence_a_base_fee_rising_past_the_floor_after_the_claim_still_pays_the_answer).
- An RPC whose block has no baseFeePerGas is refused (read as 0) by the deploy CLI
  (test_defence_the_deploy_cli_refuses_an_rpc_without_a_base_fee).
- ``supernet contracts info`` showed the floor, in wei, from the deployment file only; now also
  the chain's, and a mismatch (test_defence_info_shows_the_chains_floor_and_a_files_that_differs).

Read, no test: calldata and execution are counted by the same formula at the floor as at the base
fee, so the floor only scales the known few-hundred-gas margin an answer is paid above its
gasUsed (at most ~600 x floor a claim: 1.2e-6 ether at a 2 gwei floor); the
OmissionManager copies the TaskManager's floor once (both immutable), and the
ServiceManager is wired to one OmissionManager by its deployer: they cannot drift; the SDK's
claim cap is max(fee cap, floor), its tip min(suggested, cap), so where the suggested tip is
below the floor the claim still covers the floor; a floor near uint256's top makes
``worstGas x price`` overflow and every claim revert (the same as the wei-unit finding).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from chain_fixtures import Actors, burn_address_exists, make_receipts, stake_network
from supernet.sdk.chain import Contracts, ReceiptTree, bindings
from supernet.sdk.chain.anvil import Anvil, mine, set_next_base_fee
from supernet.sdk.chain.bindings import claim_fee_cap
from supernet.sdk.chain.cli import MAX_FLOOR_GWEI
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.chain.deployment import Deployment
from typer.testing import CliRunner
from web3.exceptions import ContractLogicError

from tests.integration.test_review_answer_prices2 import (
    OVER_LIMIT_GAS,
    _availability_claim,
    _base_fee,
    _dense,
    _direct,
    _send_raw,
    _zero_base_fee,
)

GWEI = 10**9
FLOOR = 2 * GWEI


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _floored(chain: Contracts, actors: Actors, floor: int) -> Contracts:
    """A staked network deployed (inside ``chain``'s snapshot) with ``MIN_ANSWER_GAS_PRICE`` = floor."""
    params = dataclasses.replace(chain.params, min_answer_gas_price=floor)
    c = stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)
    burn_address_exists(c)
    return c


def _answer(c: Contracts, actors: Actors, data: bytes, base_fee: int, **fees: int) -> tuple[int, int, int]:
    """The node's availability answer ``data`` mined at ``base_fee`` with ``fees``:
    (what its transaction cost it, what it was credited, gasUsed)."""
    set_next_base_fee(c.w3, base_fee)
    before = c.task_manager.claimable(actors.node.address)
    receipt = _direct(c, actors.node, c.task_manager.address, data, **fees)
    assert _base_fee(c, receipt) == base_fee
    spent = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    return spent, c.task_manager.claimable(actors.node.address) - before, int(receipt["gasUsed"])


def _sdk_answer_at_zero_base_fee(c: Contracts, actors: Actors, trace: bytes) -> tuple[dict[str, Any], int]:
    """A validator's availability claim on a committed entry whose trace is ``trace``, answered by
    the node through the SDK (`Binding.answer`: its own fees) in a block of base fee 0: (the
    answer's transaction receipt, what the node was credited)."""
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    receipts[0] = dataclasses.replace(receipts[0], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(actors.node).task_manager.commit_batch(tree.root, 2, "bafym").value.batch_id
    mine(c.w3, 2)
    aid = c.as_account(actors.validators[0]).task_manager.challenge_availability(batch_id, 0).value
    set_next_base_fee(c.w3, 0)
    before = c.task_manager.claimable(actors.node.address)
    node_tm = c.as_account(actors.node).task_manager
    receipt = dict(node_tm.answer_availability(aid, receipts[0], list(tree.proof_at(0)), trace).receipt)
    return receipt, c.task_manager.claimable(actors.node.address) - before


def _cli(*args: str) -> Any:
    from supernet.sdk.chain.cli import app

    return CliRunner().invoke(app, list(args))


def _deploy_args(url: str, out: Path) -> list[str]:
    return ["deploy", "--rpc", url, "--account-index", "0", "--devnet-params", "--out", str(out)]


class _PoaChain(BaseHTTPRequestHandler):
    """A JSON-RPC endpoint answering as a proof-of-authority chain's node would (BNB Chain: base
    fee 0, a 97-byte extraData holding the validator's vanity and seal); ``block`` is overridden."""

    block: ClassVar[dict[str, Any]] = {}

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        results = {
            "eth_chainId": "0x38",
            "net_version": "56",
            "eth_blockNumber": self.block["number"],
            "eth_getBlockByNumber": self.block,
            "eth_maxPriorityFeePerGas": hex(GWEI // 10),
            "eth_gasPrice": hex(GWEI // 10),
        }
        if req["method"] in results:
            body = {"jsonrpc": "2.0", "id": req["id"], "result": results[req["method"]]}
        else:
            body = {"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "no such method"}}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


def _block(**fields: Any) -> dict[str, Any]:
    block = {
        "number": "0x2a",
        "hash": "0x" + "11" * 32,
        "parentHash": "0x" + "22" * 32,
        "timestamp": "0x6553f100",
        "gasLimit": "0x8f0d180",
        "gasUsed": "0x0",
        "miner": "0x" + "33" * 20,
        "extraData": "0x",
        "baseFeePerGas": "0x0",
        "difficulty": "0x2",
        "transactions": [],
    }
    block.update(fields)
    return {k: v for k, v in block.items() if v is not None}


@contextmanager
def _rpc_serving(block: dict[str, Any]) -> Iterator[str]:
    handler = type("Handler", (_PoaChain,), {"block": block})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------
# (1) the node: baiting claims it answers below the floor
# ---------------------------------------------------------------------------------------------


def test_defence_an_answer_sent_below_the_floor_is_refused(chain: Contracts, actors: Actors) -> None:
    """MEDIUM. A node withholds a 30 KB trace; a validator claims it (the SDK's claim, covering the
    worst answer at the 2 gwei floor); the node answers in a transaction that pays less than the
    floor and is paid the floor for every gas of it: at base fee 0 with gas price 0 (its own block
    as a validator of the chain, a 0-price bundle, a sponsored 'gasless' transaction, all valid on
    a zero-base-fee chain whatever the txpool's minimum), and at a base fee of a quarter of the
    floor with no tip. Measured: the 0-price answer (~1.25M gas) is paid ~0.0025 ether and cost 0;
    the quarter-floor one is paid 4x what it cost. Per baited claim the node gains
    (floor - its price) x gas (~0.032 ether at the largest trace, 15.9M gas), the claimant loses
    that plus the 0.01 ether fee: baiting pays, the asymmetry the floor's doc says "overpays it".

    Fix (by design): the answer must pay at least the price it is paid at, ``tx.gasprice >=
    ClaimBond.gasPrice(floor)`` (revert ``AnswerBelowFloor`` otherwise; on Ethereum with floor 0
    it always holds). A copy sent at a lower price is refused too. What would remain: a node that
    produces the block its answer lands in gets its own tip back (as a builder does on Ethereum),
    a known limit to document. (Paying ``min(gasPrice(floor), tx.gasprice)`` instead would let a
    claimant copy the node's pending answer into a 0-price bundle: the node paid 0 and its own
    answer reverting after paying the calldata floor.) Built: refused (``AnswerBelowPrice``), and
    the same answer at the floor is paid its cost.
    """
    c = _floored(chain, actors, FLOOR)
    for base_fee, fees in (
        (0, {"maxFeePerGas": 0, "maxPriorityFeePerGas": 0}),
        (FLOOR // 4, {"maxFeePerGas": FLOOR // 4, "maxPriorityFeePerGas": 0}),
    ):
        _zero_base_fee(c.w3)
        aid, data = _availability_claim(c, actors, _dense(30_000), actors.validators[0])
        assert c.task_manager.get_availability(aid).deposit >= c.params.challenge_bond + FLOOR * int(
            c.task_manager.call("AVAILABILITY_WORST_GAS")
        )
        with pytest.raises(ContractLogicError):  # AnswerBelowPrice: refused, not paid the floor
            _answer(c, actors, data, base_fee, **fees)
        # the same answer paying the floor is paid its cost
        spent, paid, _gas = _answer(c, actors, data, 0, maxFeePerGas=FLOOR, maxPriorityFeePerGas=FLOOR)
        assert 0 <= paid - spent <= OVER_LIMIT_GAS * FLOOR, (paid, spent)


# ---------------------------------------------------------------------------------------------
# (2) the claimant: an honest node's loss under the floor
# ---------------------------------------------------------------------------------------------


def test_defence_the_sdks_answer_pays_the_floor_as_its_tip(chain: Contracts, actors: Actors) -> None:
    """LOW. The deployer set the floor to the chain's least accepted gas price, 0.5 gwei; the RPC
    suggests a 1 gwei tip (Anvil's; BNB Chain's RPCs suggest above the validators' minimum). A
    claimant claims an entry the node holds (a griefing claim); the node answers through the SDK
    (`TaskManager.answer_availability`, web3's default fees: the suggested tip) at base fee 0 and
    pays 1 gwei a gas while it is paid 0.5: it loses half its answer's gas on every claim
    (~0.0006 ether for a 30 KB trace, ~0.008 at the largest), not a loss the claim's rule allows
    ("paid its cost at that price"). The claimant's own cost per claim (the 0.01 ether fee) stays
    higher, so griefing is not cheap, but the loss is the SDK's choice of tip.

    Fix (by design): the SDK sends a data claim's answer with a tip of at most
    ``gasPrice(floor) - base fee`` where the floor is above the base fee (what the contract pays),
    raising it only if the answer is not mined well before its deadline.
    """
    floor = GWEI // 2
    c = _floored(chain, actors, floor)
    _zero_base_fee(c.w3)
    assert int(c.w3.eth.max_priority_fee) > floor  # the suggested tip is above the floor
    receipt, paid = _sdk_answer_at_zero_base_fee(c, actors, _dense(30_000))
    assert _base_fee(c, receipt) == 0
    spent = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    assert paid >= spent, f"the honest node lost {spent - paid} wei answering ({spent} spent, {paid} paid)"


def test_defence_a_floor_above_the_tip_ceiling_is_still_the_answers_tip(
    chain: Contracts, actors: Actors
) -> None:
    """The SDK refuses RPC-suggested tips above `bindings.MAX_PRIORITY_FEE` (50 gwei: a lying RPC
    must not choose what the user pays). A deployment's floor above that (a chain whose least gas
    price is 100 gwei) is the deployment's, not a suggestion: the node's answer goes at it and is
    paid its cost. A floor reported above what a deployment may set is still refused."""
    floor = 100 * GWEI
    assert floor > bindings.MAX_PRIORITY_FEE
    c = _floored(chain, actors, floor)
    _zero_base_fee(c.w3)
    receipt, paid = _sdk_answer_at_zero_base_fee(c, actors, _dense(2_000))
    assert int(receipt["effectiveGasPrice"]) == floor
    assert paid >= int(receipt["gasUsed"]) * floor
    assert bindings.MAX_ANSWER_FLOOR // GWEI == MAX_FLOOR_GWEI  # the deploy CLI's bound is the SDK's


def test_defence_a_base_fee_rising_past_the_floor_after_the_claim_still_pays_the_answer(
    chain: Contracts, actors: Actors
) -> None:
    """A claim opened at base fee 0 covers the worst answer (15.9M gas) at the 2 gwei floor; the
    claimant then pushes (or waits for) the base fee to 3x the floor. The node's ordinary answer
    (a 30 KB trace, ~1.25M gas) is still paid its full cost at 6 gwei: the cover is sized for the
    largest answer, and the node may answer any time in its window besides. (Sent with a fixed gas
    limit: Anvil's eth_estimateGas runs at base fee 0, where a 0-tip answer is below the floor and
    refused; the mined one pays the base fee, above it. The SDK tips the floor, which estimates.)"""
    c = _floored(chain, actors, FLOOR)
    _zero_base_fee(c.w3)
    aid, data = _availability_claim(c, actors, _dense(30_000), actors.validators[0])
    deposit = c.task_manager.get_availability(aid).deposit
    set_next_base_fee(c.w3, 3 * FLOOR)
    before = c.task_manager.claimable(actors.node.address)
    fees = {"maxFeePerGas": 3 * FLOOR, "maxPriorityFeePerGas": 0}
    receipt = _send_raw(
        c.w3, actors.node, {"to": c.task_manager.address, "data": data, "gas": 3_000_000, **fees}
    )
    assert receipt["status"] == 1 and _base_fee(c, receipt) == 3 * FLOOR
    gas = int(receipt["gasUsed"])
    spent, paid = (
        gas * int(receipt["effectiveGasPrice"]),
        c.task_manager.claimable(actors.node.address) - before,
    )
    assert spent == gas * 3 * FLOOR
    assert 0 <= paid - spent <= OVER_LIMIT_GAS * 3 * FLOOR, (paid, spent)
    assert paid < deposit - c.params.challenge_bond // 10  # not capped by the deposit


# ---------------------------------------------------------------------------------------------
# (4) the two contracts agree
# ---------------------------------------------------------------------------------------------


def test_defence_both_contracts_require_the_same_deposit_around_the_floor(
    chain: Contracts, actors: Actors
) -> None:
    """In mined blocks at base fee 0, half the floor, the floor and 3x the floor, a claim sending
    ``bond + worstGas x max(base fee, floor) - 1`` is refused by the TaskManager (availability) and
    by the OmissionManager (manifest), and the exact deposit is accepted by both: one rule, one
    floor (the OmissionManager's is the TaskManager's)."""
    c = _floored(chain, actors, FLOOR)
    floors = {int(m.call("MIN_ANSWER_GAS_PRICE")) for m in (c.task_manager, c.omission_manager)}
    assert floors == {FLOOR}
    bond = c.params.challenge_bond
    av_worst = int(c.task_manager.call("AVAILABILITY_WORST_GAS"))
    mf_worst = int(c.omission_manager.call("MANIFEST_WORST_GAS"))
    claimant = actors.validators[1]
    for k, base_fee in enumerate((0, FLOOR // 2, FLOOR, 3 * FLOOR)):
        receipts = make_receipts(c, actors.users, actors.node.address, 2)
        tree = ReceiptTree.from_receipts(receipts)
        node_tm = c.as_account(actors.node).task_manager
        batch_id = node_tm.commit_batch(tree.root, 2, f"bafy{k}").value.batch_id
        mine(c.w3, 2)
        ref = c.task_manager.batch(batch_id).as_tuple()
        price = max(base_fee, FLOOR)
        calls = (
            (c.task_manager, c.task_manager.contract.functions.challengeAvailability(ref, 0), av_worst),
            (c.omission_manager, c.omission_manager.contract.functions.challengeManifest(ref), mf_worst),
        )
        for binding, fn, worst in calls:
            data = bytes.fromhex(fn._encode_transaction_data()[2:])
            for short in (1, 0):
                set_next_base_fee(c.w3, base_fee)
                tx = {
                    "to": binding.address,
                    "data": data,
                    "gas": 400_000,
                    "value": bond + worst * price - short,
                    "maxFeePerGas": price,
                    "maxPriorityFeePerGas": 0,
                }
                receipt = _send_raw(c.w3, claimant, tx)
                assert _base_fee(c, receipt) == base_fee
                assert receipt["status"] == 1 - short, (binding.name, base_fee, short)


# ---------------------------------------------------------------------------------------------
# (3) the deploy path
# ---------------------------------------------------------------------------------------------


def test_defence_the_deploy_cli_refuses_a_floor_given_in_wei(
    chain: Contracts, anvil: Anvil, tmp_path: Path
) -> None:
    """MEDIUM. The deployer means a 1 gwei floor and types it in wei: ``--min-answer-gas-price
    1000000000``. The CLI deploys MIN_ANSWER_GAS_PRICE = 1e18 wei a gas; an availability claim then
    must post ~15.9M ether, a manifest claim ~5.8M and an omission claim 0.2M (no one can), so no
    data claim can be opened on the deployment and a node withholds its data for free.

    Fix (by design): the CLI refuses a floor far above the chain's going price (say more than
    100x ``eth_gasPrice``, or above 10,000 gwei) unless forced, and prints the floor back in
    gwei and what a claim will cost at it; a floor that makes ``worstGas x floor`` overflow is
    refused by the constructor."""
    out = tmp_path / "wei.json"
    result = _cli(*_deploy_args(anvil.url, out), "--min-answer-gas-price", "1000000000")
    if result.exit_code == 0:
        c = Contracts.connect(anvil.url, Deployment.load(out))
        need = int(c.task_manager.call("availabilityBond"))
        assert need > 15 * 10**6 * 10**18  # ~15.9M ether for one availability claim
    assert result.exit_code != 0 and not out.exists(), "a 1e18 wei floor was deployed: no claim can be opened"


def test_defence_the_deploy_cli_refuses_a_negligible_base_fee_chain_without_a_floor(
    chain: Contracts, anvil: Anvil, tmp_path: Path
) -> None:
    """MEDIUM. A chain whose base fee is 1 wei (Polygon PoS at low load runs at a few wei against
    a 25+ gwei minimum tip): ``supernet contracts deploy`` without ``--min-answer-gas-price``
    deploys floor 0, since only a base fee of exactly 0 is refused. Its claims then post the bond
    plus 15.9M wei of cover, and an answer is paid 1 wei a gas while the node pays the
    chain's tip: the asymmetry docs/security-parameters.md says the floor closes "where the base
    fee is 0 or negligible".

    Fix (by design): refuse without a floor where the latest base fee is below the chain's
    suggested tip (``eth_maxPriorityFeePerGas``) or a set fraction of ``eth_gasPrice``, not only
    where it is 0."""
    set_next_base_fee(chain.w3, 1)
    mine(chain.w3, 1)
    assert int(chain.w3.eth.get_block("latest")["baseFeePerGas"]) == 1
    out = tmp_path / "tiny.json"
    result = _cli(*_deploy_args(anvil.url, out))
    if result.exit_code == 0:
        assert Deployment.load(out).params["minAnswerGasPrice"] == 0
    assert result.exit_code != 0 and not out.exists(), "deployed with floor 0 on a 1 wei base fee chain"


def test_defence_the_deploy_cli_refuses_a_sub_wei_floor(
    chain: Contracts, anvil: Anvil, tmp_path: Path
) -> None:
    """LOW. On a zero-base-fee chain the deployer gives ``--min-answer-gas-price 1e-10`` (a floor
    meant in ether, or a slip): a positive value, so the zero-base-fee refusal is skipped, and
    ``round(1e-10 * 1e9)`` = 0 is deployed. The opt-out the refusal offers is an explicit 0.

    Fix (by design): refuse a positive floor that rounds to 0 wei (and print the floor deployed,
    in wei and gwei)."""
    _zero_base_fee(chain.w3)
    mine(chain.w3, 1)
    out = tmp_path / "subwei.json"
    result = _cli(*_deploy_args(anvil.url, out), "--min-answer-gas-price", "1e-10")
    if result.exit_code == 0:
        assert Deployment.load(out).params["minAnswerGasPrice"] == 0
    refused = result.exit_code != 0 and not out.exists()
    assert refused, "a positive floor deployed as 0 on a zero-base-fee chain"


def test_defence_the_floor_checks_work_on_a_proof_of_authority_chain(tmp_path: Path) -> None:
    """LOW. BNB Chain and Polygon PoS (the chains the floor is for) are proof-of-authority: a
    block's extraData holds the validator's seal, longer than the 32 bytes web3 validates by
    default. ``make_web3`` adds no POA middleware, so ``supernet contracts deploy`` without a floor
    dies in its base-fee check with web3's ExtraDataLengthError (a traceback, not the refusal),
    and the SDK's `claim_fee_cap` raises the same: no claim can be sent there. (A local stand-in
    RPC serves BNB Chain's block shape; the code under test is the real CLI and SDK.)

    Fix (by design): `make_web3` injects web3's ``ExtraDataToPOAMiddleware`` (it only relaxes
    that check), and the CLI's check catches web3's own errors."""
    poa = _block(extraData="0x" + "d8" * 97)
    with _rpc_serving(poa) as url:
        result = _cli(*_deploy_args(url, tmp_path / "bnb.json"))
        cap_error: Exception | None = None
        try:
            claim_fee_cap(make_web3(url))
        except Exception as exc:  # whatever web3 raises is the finding
            cap_error = exc
    assert result.exit_code == 2 and "base fee is 0" in result.output, repr(result.exception)
    assert cap_error is None, repr(cap_error)


def test_defence_the_deploy_cli_refuses_an_rpc_without_a_base_fee(tmp_path: Path) -> None:
    """An RPC whose latest block has no baseFeePerGas (a pre-London chain or a node that omits
    it): the CLI reads it as 0 and refuses to deploy without a floor (rather than deploying floor 0
    on a chain whose every gas price is a tip)."""
    with _rpc_serving(_block(baseFeePerGas=None)) as url:
        out = tmp_path / "nofee.json"
        result = _cli(*_deploy_args(url, out))
    assert result.exit_code == 2 and "base fee is 0" in result.output, result.output
    assert not out.exists()


def test_defence_info_shows_the_chains_floor_and_a_files_that_differs(
    chain: Contracts, anvil: Anvil, tmp_path: Path
) -> None:
    """``supernet contracts info`` listed ``minAnswerGasPrice`` (in wei) from the deployment file
    only: a file edited (or written by hand for a deployment made another way) showed a floor the
    chain does not have (a known limit in the review: only the display, the SDK's claims read the
    floor from the chain). Now it also shows the TaskManager's floor read from the chain, and says
    so where the file's differs."""
    out = tmp_path / "floor.json"
    result = _cli(*_deploy_args(anvil.url, out), "--min-answer-gas-price", "0.5")
    assert result.exit_code == 0, result.output
    shown = _cli("info", "--deployment", str(out))
    assert shown.exit_code == 0 and "minAnswerGasPrice" in shown.output and "500,000,000" in shown.output
    assert "answer gas price floor" in shown.output and "is not the" not in shown.output
    data = json.loads(out.read_text())
    data["params"]["minAnswerGasPrice"] = 7 * GWEI
    out.write_text(json.dumps(data))
    c = Contracts.connect(anvil.url, Deployment.load(out))
    assert int(c.task_manager.call("MIN_ANSWER_GAS_PRICE")) == GWEI // 2
    shown = _cli("info", "--deployment", str(out))
    text = " ".join(shown.output.split())
    assert "7,000,000,000" in text and "500,000,000" in text  # the file's and the chain's
    assert "is not the TaskManager's (500,000,000 wei)" in text
