"""Adversarial review of the SDK's one fee policy and chain id pin (commit 76a2621):
`bindings.fees` (an RPC-suggested tip above `MAX_PRIORITY_FEE` is refused with `FeeTooHigh`),
`pin_chain_id`/`chain_id`, `send`, `send_ether`, `Binding.quote`/`transact`/`answer`/`claim`,
`MAX_ANSWER_FLOOR`, `make_web3`'s cached ``eth_chainId``, `Contracts.connect` (tip_ceiling,
pinning), and the money CLI's ``--max-priority-fee`` and "gas: at most" prompt. Every signer of
the project was followed to ask whether it goes through that policy: the SDK's `send`, the node's
`Web3Chain.sign_commit`, the validator's chain client.

Adversaries: a malicious JSON-RPC endpoint (a stdlib proxy in front of the real Anvil, the
attacker's code, rewriting only the answers named in each test, as
tests/integration/test_review_money_keys.py does), and an honest chain in a fee spike (the same
proxy answering a 60 gwei tip, as Polygon PoS asks at busy times). Real parts: Anvil, the deployed
contracts (``network``), the SDK's bindings, the node's `Web3Chain`, the validator's
`TaskManagerClient`, the money CLI in-process.

Found (all fixed but one part of 5, a known limit):

1. FIXED (medium) a lying ``eth_call`` to ``MIN_ANSWER_GAS_PRICE()`` set the node's answer tip up
   to `MAX_ANSWER_FLOOR` (10,000 gwei, 200x the 50 gwei ceiling; ~1.85 ETH of tips for one
   2-receipt manifest answer): the floor is now a deployment parameter, pinned at
   `Contracts.connect` from the deployment file (read once there for a file without it), never
   asked per answer (`Binding.answer_floor`).
2. FIXED (medium) the node's ``commitBatch`` (`Web3Chain.sign_commit`) was built by web3 outside
   `bindings.fees` (a 100,000 gwei tip signed as is): it now signs through
   `bindings.build_signed`, the one path `send` also uses (fees within the contracts' ceiling).
3. FIXED (low) `sign_commit` signed with ``w3.eth.chain_id`` in a worker thread (web3's cache is
   per thread: an RPC answering 1 later got the commit signed for chain 1): `build_signed` signs
   for the pinned `bindings.chain_id`, and the pin answers web3's own ``eth_chainId`` in every
   thread (a middleware `pin_chain_id` adds).
4. FIXED (low) the validator daemon never compared the RPC's chain id with the deployment's:
   `Validator.setup` connects with `Contracts.connect` (`TaskManagerClient.of`/`connect`): chain id
   compared and pinned, code checked; an RPC naming chain 1 is refused at connect.
5. Part FIXED, part KNOWN LIMIT (low) a claim's deposit: a first ``eth_maxPriorityFeePerGas``
   read that differed from the second inflated it (~58 ETH locked): `Binding.claim` now reads the
   tip once, holds it to the ceiling, and covers and signs that one number. A lying base fee
   (``eth_getBlockByNumber`` "latest") still inflates it (~74 ETH locked, refunded at settlement):
   `test_known_limit_a_lying_base_fee_inflates_a_claims_deposit` (the fix: a deployment-level
   bound on the gas price a claim covers).
6. FIXED (medium) liveness: a suggested tip above 50 gwei (an honest fee spike) stopped every
   answer the node owed (then a slash), while the commit paid any tip: the node's and the
   validator's ``[chain] max_priority_fee_gwei`` (default 500 gwei, `DAEMON_MAX_PRIORITY_FEE`)
   is the ceiling of every transaction they sign, and a duty refused above it is logged as an
   error (`bindings.fee_alarm`).
7. FIXED (low) the prompt's "gas: at most X" was not what was signed (`transact` estimated
   again): `transact(quote=)` signs the quote's fees and gas limit, so a low estimate fails within
   the shown cost.

Checked and holding:

- the SDK's own transactions are never signed for another chain from any thread (the two-faced
  RPC of test_review_money_keys.py finding 2, the deposit sent from a new thread: signed for the
  pinned id, which web3's own check there now also uses);
- a chain without ``eth_maxPriorityFeePerGas`` (the method missing) and an ``eth_feeHistory``
  whose rewards lie: web3's fallback clamps the tip to 1-1.5 gwei and the deposit lands;
- a lying ``eth_getTransactionCount`` ("pending" = 0, a used nonce) is refused by the chain: one
  line, exit 1, the user's balance and channel unchanged.

Read, no test: the quote's fees are signed as quoted, so a base fee that rises past the quoted cap
while the prompt waits leaves the transaction pending (`send` gives up after 120 s; a later
command reads the "pending" nonce past it); a nonce lie that replaces a pending transaction needs
a mempool (automine here) and an RPC that relays can drop any transaction anyway; the node's
decoy funding and redeem threshold read ``eth_gasPrice`` (a lie moves the node's ether to its own
decoy account or delays its redeems, no loss to another party).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors, make_receipts
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes
from rpc_proxy import Forward, Rewrite, rpc_proxy
from rpc_proxy import answer as _answer
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import ChainSettings as NodeChainSettings
from supernet.sdk.chain import Batch, Contracts, DeploymentError, ReceiptTree
from supernet.sdk.chain.bindings import DAEMON_MAX_PRIORITY_FEE, MAX_PRIORITY_FEE, FeeTooHigh, claim_fee_cap
from supernet.sdk.money_cli import app as account_app
from supernet.validator.chain import TaskManagerClient
from supernet.validator.config import ChainSettings as ValidatorChainSettings
from typer.testing import CliRunner

GWEI = 10**9
ETHER = 10**18


def _key_env(acct: Any) -> dict[str, str]:
    return {"SUPERNET_USER_KEY": "0x" + bytes(acct.key).hex()}


def _rpc(c: Contracts) -> str:
    return str(c.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def _common(c: Contracts, tmp_path: Path, rpc: str) -> list[str]:
    dep = c.deployment.save(tmp_path / "deployment.json")
    return ["--rpc", rpc, "--deployment", str(dep)]


def _decode(raw: bytes | str) -> dict[str, Any]:
    return dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())


def _signed(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every transaction the proxy was handed, decoded."""
    return [_decode(r["params"][0]) for r in seen if r["method"] == "eth_sendRawTransaction"]


def _tip_paid(c: Contracts, receipt: Any) -> int:
    """The priority fee a mined transaction paid a gas (its price above its block's base fee)."""
    base = int(c.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"])
    return int(receipt["effectiveGasPrice"]) - base


def _tip(value: int) -> Rewrite:
    """Every ``eth_maxPriorityFeePerGas`` answered ``value``."""

    def rewrite(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        return _answer(request, hex(value)) if request["method"] == "eth_maxPriorityFeePerGas" else None

    return rewrite


def _two_faced_chain_id(right: int) -> Rewrite:
    """``eth_chainId`` answered ``right`` the first time, 1 (mainnet) afterwards."""
    asked = [0]

    def rewrite(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        if request["method"] != "eth_chainId":
            return None
        asked[0] += 1
        return _answer(request, hex(right) if asked[0] == 1 else "0x1")

    return rewrite


def _batch(c: Contracts, actors: Actors) -> tuple[Batch, list[Any]]:
    """A batch of 2 receipts committed by `Actors.node` (honestly): its header and receipts."""
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(actors.node).task_manager.commit_batch(tree.root, 2, "bafym").value.batch_id
    return c.task_manager.batch(batch_id), receipts


def _manifest_claim(c: Contracts, actors: Actors) -> tuple[Batch, int, list[Any]]:
    """`_batch`, its manifest claimed by a validator (honestly): (header, claim id, receipts)."""
    header, receipts = _batch(c, actors)
    manifest_id = c.as_account(actors.validators[0]).omission_manager.challenge_manifest(header).value
    return header, manifest_id, receipts


_FLOOR_CALL = "0x" + keccak(text="MIN_ANSWER_GAS_PRICE()")[:4].hex()


# ------------------------------------------------------------------ a malicious RPC endpoint


@pytest.mark.anvil
def test_defence_a_lying_floor_no_longer_sets_the_nodes_answer_tip(
    network: Contracts, actors: Actors
) -> None:
    """Severity medium. `Binding.answer` reads ``MIN_ANSWER_GAS_PRICE`` with an ``eth_call`` for
    every answer and, where it is not 0, tips exactly it under a ceiling raised to
    `MAX_ANSWER_FLOOR` (10,000 gwei): "the floor is the deployment's, not an RPC's suggestion" -
    but it is the RPC that answers the call. An RPC answering 10,000 gwei (the floor here is 0)
    makes the node's answer to a 2-receipt manifest claim pay ~1.85 ETH of tips (it is paid ~13
    micro-ETH for the answer), 200x what the 50 gwei ceiling allows; the costliest answers (a full
    batch, millions of gas) pay tens of ETH. A block producer running the node's RPC gains it for
    each claim anyone opens (a claimant burns 0.01 ETH a claim).

    Fix (by design): the floor is the deployment's parameter: taken from the deployment file
    (``params.minAnswerGasPrice``), or read once at `Contracts.connect`, compared with the file
    as the chain id is, and pinned; `answer` never raises the ceiling on an answer read per call.

    FIXED: `Contracts.connect` pins the deployment file's ``minAnswerGasPrice`` (read once at
    connect only for a file without it); `Binding.answer`/`claim` use the pinned floor and never
    ask the RPC for it."""
    header, manifest_id, receipts = _manifest_claim(network, actors)
    lie = 10_000 * GWEI

    def floor(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        if request["method"] != "eth_call":
            return None
        data = str(request["params"][0].get("data") or request["params"][0].get("input") or "")
        return _answer(request, "0x" + lie.to_bytes(32, "big").hex()) if data == _FLOOR_CALL else None

    before = network.w3.eth.get_balance(actors.node.address)
    with rpc_proxy(_rpc(network), floor) as (url, seen):
        node = Contracts.connect(url, network.deployment, actors.node)  # as the node's app does
        answer = node.omission_manager.answer_manifest(manifest_id, header, receipts)
    asked = [r for r in seen if r["method"] == "eth_call" and _FLOOR_CALL in json.dumps(r["params"])]
    assert asked == [], "the floor was asked of the RPC"
    tip, paid = _tip_paid(network, answer.receipt), int(answer.value["answerCost"])
    lost = before - network.w3.eth.get_balance(actors.node.address)
    assert tip <= MAX_PRIORITY_FEE, (
        f"the answer tipped {tip // GWEI} gwei a gas: the node spent {lost / ETHER:.3f} ETH, "
        f"was paid {paid / ETHER:.6f} ETH"
    )


@pytest.mark.anvil
def test_defence_the_nodes_commit_takes_the_one_fee_policy(network: Contracts, actors: Actors) -> None:
    """Severity medium. `Web3Chain.sign_commit` builds ``commitBatch`` with web3's defaults (no
    fee fields), not through `bindings.fees`: the tip is the RPC's ``eth_maxPriorityFeePerGas``,
    unchecked, the cap twice the base fee plus it. Test_review_money_keys.py's finding 1 (a
    100,000 gwei tip) was fixed for every transaction `send` signs; the node's commit - signed
    unattended for every batch - still signs it: a gas limit x fee cap of ~9 ETH a commit, paid
    to the block producer, until the node's ether is gone (then it misses its commit promises).

    Fix (by design): one policy for every signer: `sign_commit` takes its fees from
    `bindings.fees` with the contracts' ``tip_ceiling`` and its chain id from `bindings.chain_id`
    (e.g. a `bindings.build` that `send` and `sign_commit` share).

    FIXED: `sign_commit` signs through `bindings.build_signed`, the path `send` uses: the tip is
    held to the contracts' ceiling (`FeeTooHigh` here), the chain id is the pinned one."""
    tree = ReceiptTree.from_receipts(make_receipts(network, actors.users, actors.node.address, 2))
    with rpc_proxy(_rpc(network), _tip(100_000 * GWEI)) as (url, _):
        chain = Web3Chain(Contracts.connect(url, network.deployment, actors.node), actors.node)
        try:
            commit = asyncio.run(chain.sign_commit(tree.root, len(tree), "bafycommit"))
        except FeeTooHigh:
            return  # the secure behaviour: refused before signing
    tx = _decode(commit.raw)
    assert tx["maxPriorityFeePerGas"] <= MAX_PRIORITY_FEE, (
        f"commit signed with a {tx['maxPriorityFeePerGas'] // GWEI} gwei tip, "
        f"up to {tx['gas'] * tx['maxFeePerGas'] / ETHER:.2f} ETH of gas"
    )


@pytest.mark.anvil
def test_defence_the_nodes_commit_is_signed_for_the_pinned_chain_from_a_worker_thread(
    network: Contracts, actors: Actors
) -> None:
    """Severity low (medium where the node's key holds ether on the other chain). `sign_commit`
    signs with ``w3.eth.chain_id``; it runs in a worker thread (``asyncio.to_thread``) and web3's
    request cache, which `make_web3` relies on, is keyed by thread: the RPC is asked again. An RPC
    answering the deployment's id at connect and ``1`` afterwards gets the node's commit signed
    for chain 1, with the nonce and the (unbounded, finding 2) tip it chose: replayable there at
    the node's cost, and never landing here (the node's promised receipts go uncommitted).

    Fix (by design): `sign_commit` signs for `bindings.chain_id` (the id `Contracts.connect`
    checked and pinned): `make_web3`'s cache is per thread (its doc says so), the pin is not.

    FIXED: `build_signed` signs for `bindings.chain_id`, and the pin also answers web3's own
    ``eth_chainId`` in every thread (a middleware `pin_chain_id` adds): the RPC is not asked again."""
    tree = ReceiptTree.from_receipts(make_receipts(network, actors.users, actors.node.address, 2))
    with rpc_proxy(_rpc(network), _two_faced_chain_id(network.deployment.chain_id)) as (url, _):
        chain = Web3Chain(Contracts.connect(url, network.deployment, actors.node), actors.node)
        commit = asyncio.run(chain.sign_commit(tree.root, len(tree), "bafycommit"))
    assert _decode(commit.raw)["chainId"] == network.deployment.chain_id


@pytest.mark.anvil
def test_defence_the_validator_checks_and_pins_the_deployments_chain_id(
    network: Contracts, actors: Actors
) -> None:
    """Severity low (medium where the validator's key holds ether on the other chain).
    `ValidatorService.setup` built its chain client from ``make_web3(rpc_url)`` and
    `TaskManagerClient`, never `Contracts.connect`: the RPC's chain id was never compared with the
    deployment's and never pinned, so `bindings.chain_id` pinned whatever the RPC answered first.
    An RPC naming chain 1 got the validator's manifest claim (bond + cover, ~0.107 ETH of value)
    signed for chain 1; votes (``commitVote``, the vote bond) take the same `send`.

    Fix (by design): the validator connects as every other client does (`Contracts.connect`,
    verify on: chain id compared and pinned, code checked), or pins the deployment's id itself.

    FIXED: `Validator.setup` connects with `Contracts.connect` (its `TaskManagerClient.of`, here
    `TaskManagerClient.connect`, the same composition): an RPC naming chain 1 is refused at
    connect (nothing is signed), and one that answers the deployment's id at connect and 1 later
    gets the claim signed for the deployment's chain, from a worker thread too."""
    header, _ = _batch(network, actors)
    dep = network.deployment
    validator = actors.validators[0]

    def other_chain(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        return _answer(request, "0x1") if request["method"] == "eth_chainId" else None

    with rpc_proxy(_rpc(network), other_chain) as (url, seen):
        with pytest.raises(DeploymentError, match="chain 1"):
            client = TaskManagerClient.connect(url, dep, validator)  # the validator's setup
            client.challenge_manifest(header.batch_id)
    wrong = [(t["chainId"], t["value"]) for t in _signed(seen) if t["chainId"] != dep.chain_id]
    assert wrong == [], f"(chain id, value) signed for another chain than {dep.chain_id}: {wrong}"

    with rpc_proxy(_rpc(network), _two_faced_chain_id(dep.chain_id)) as (url, seen):
        client = TaskManagerClient.connect(url, dep, validator)
        claimed: list[object] = []
        worker = threading.Thread(target=lambda: claimed.append(client.challenge_manifest(header.batch_id)))
        worker.start()
        worker.join(60)
    signed = _signed(seen)
    assert [t["chainId"] for t in signed] == [dep.chain_id], (signed, claimed)
    assert network.omission_manager.batch_manifest(header.batch_id) is not None


@pytest.mark.anvil
def test_defence_a_claims_tip_is_read_once_and_held_to_the_ceiling(
    network: Contracts, actors: Actors
) -> None:
    """Severity low. `Binding.claim` sent ``bond + worst_gas x cap`` with ``cap =
    max(claim_fee_cap, floor)``, `claim_fee_cap` reading the RPC's tip on its own and `send`
    reading (and checking) it again: an RPC answering a 10,000 gwei tip the first time only made a
    validator's manifest claim (5.8M worst gas) post ~58 ETH instead of ~0.11 ETH (a lock until
    the claim settles).

    FIXED: `Binding.claim` reads the tip once (`bindings.priority_fee`), holds it to the binding's
    ceiling, and the deposit's cap and the signed fees use that one number: the first-tip lie is
    refused (`FeeTooHigh`, nothing sent, nothing locked), and a first tip within the ceiling is
    the one both covered and signed."""
    header, _ = _batch(network, actors)
    validator = actors.validators[0]
    bond = network.omission_manager.challenge_bond()
    worst = int(network.omission_manager.call("MANIFEST_WORST_GAS"))

    def first_tip(value: int) -> Rewrite:
        tips = [0]

        def rewrite(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
            if request["method"] != "eth_maxPriorityFeePerGas":
                return None
            tips[0] += 1
            return _answer(request, hex(value)) if tips[0] == 1 else None

        return rewrite

    balance = network.w3.eth.get_balance(validator.address)
    with rpc_proxy(_rpc(network), first_tip(10_000 * GWEI)) as (url, seen):
        with pytest.raises(FeeTooHigh):
            Contracts.connect(url, network.deployment, validator).omission_manager.challenge_manifest(header)
    assert [r["method"] for r in seen].count("eth_maxPriorityFeePerGas") == 1
    assert _signed(seen) == [] and network.omission_manager.batch_manifest(header.batch_id) is None
    assert network.w3.eth.get_balance(validator.address) == balance

    with rpc_proxy(_rpc(network), first_tip(40 * GWEI)) as (url, seen):
        Contracts.connect(url, network.deployment, validator).omission_manager.challenge_manifest(header)
    (tx,) = _signed(seen)
    claim = network.omission_manager.batch_manifest(header.batch_id)
    assert claim is not None and tx["maxPriorityFeePerGas"] == 40 * GWEI
    assert claim.deposit == tx["value"] == bond + worst * tx["maxFeePerGas"]


@pytest.mark.anvil
def test_known_limit_a_lying_base_fee_inflates_a_claims_deposit(network: Contracts, actors: Actors) -> None:
    """Severity low, known limit. A claim's deposit covers its worst answer at the claim's fee cap
    (`Binding.claim`: the latest base fee x 81/64 plus the tip, at least the floor), and the base
    fee is the RPC's answer: an RPC answering a 10,000 gwei base fee makes a validator's manifest
    claim (5.8M worst gas) post ~74 ETH instead of ~0.11 ETH (pinned here).

    Why acceptable: the contracts take any value above the least and give the excess back when
    the claim settles (answered or resolved, to ``claimable``): a lock for the answer window, not
    a loss, to the validator's own RPC, which also sees every other transaction it sends; the tip
    (the part paid to the block's producer) is held to the ceiling. What would fix it: a
    deployment-level bound on the gas price a claim covers (a ``MAX_CLAIM_GAS_PRICE`` parameter,
    or the caller's ceiling on the cap, `FeeTooHigh` above it as on tips)."""
    header, _ = _batch(network, actors)
    lie = 10_000 * GWEI
    honest_cap = claim_fee_cap(network.w3)

    def inflate(request: dict[str, Any], forward: Forward) -> dict[str, Any] | None:
        if request["method"] == "eth_getBlockByNumber" and request["params"][0] == "latest":
            answer = forward()
            answer["result"]["baseFeePerGas"] = hex(lie)
            return answer
        return None

    with rpc_proxy(_rpc(network), inflate) as (url, seen):
        Contracts.connect(url, network.deployment, actors.validators[0]).omission_manager.challenge_manifest(
            header
        )
    (tx,) = _signed(seen)
    claim = network.omission_manager.batch_manifest(header.batch_id)
    assert claim is not None  # the claim landed: what it locked is the question
    bond = network.omission_manager.challenge_bond()
    worst = int(network.omission_manager.call("MANIFEST_WORST_GAS"))
    assert tx["maxFeePerGas"] == lie * 81 // 64 + tx["maxPriorityFeePerGas"]
    assert tx["maxPriorityFeePerGas"] <= MAX_PRIORITY_FEE  # the tip is still held to the ceiling
    assert claim.deposit == bond + worst * tx["maxFeePerGas"] > 100 * (bond + worst * honest_cap)


# ------------------------------------------------------------------ an honest chain in a fee spike


@pytest.mark.anvil
def test_defence_a_tip_spike_above_50_gwei_no_longer_stops_the_nodes_answers(
    network: Contracts, actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    """Severity medium (liveness, then a slash). The node connected with the default ceiling
    (`build_node`: ``Contracts.connect(rpc, deployment, account)``; no setting raised it) and
    answers data claims through `Binding.answer` -> `send`: while the chain asked a tip above 50
    gwei (Polygon PoS at busy times; the RPC here is honest) every answer raised `FeeTooHigh`,
    `NodeAvailability` logged "retrying" at each scan, and a spike that outlasted the answer window
    let anyone resolve the claim: the node slashed to save a few hundredths of an ETH of tip. A
    validator's ``revealVote`` goes through the same `send` (an unrevealed vote loses its bond).

    Fix (by design): the daemons' settings carry the ceiling (``chain.max_priority_fee``), and a
    duty whose omission is slashed (an answer, a reveal, a promised commit) gets a ceiling sized
    by what it protects (the slash over its gas), under one policy with the commit.

    FIXED: the node's and the validator's ``[chain] max_priority_fee_gwei`` (default 500 gwei,
    `bindings.DAEMON_MAX_PRIORITY_FEE`) is the ceiling of every transaction they sign, commits
    included; `build_node` and the validator connect with it as duties, and a duty refused above
    it is logged as an error. The 60 gwei answer lands with the defaults; a 600 gwei one is
    refused, loudly."""
    header, manifest_id, receipts = _manifest_claim(network, actors)
    defaults = NodeChainSettings()
    assert ValidatorChainSettings.model_fields["max_priority_fee_gwei"].default == 500
    assert defaults.tip_ceiling() == DAEMON_MAX_PRIORITY_FEE == 500 * GWEI

    def as_build_node(url: str) -> Contracts:
        dep = network.deployment
        return Contracts.connect(url, dep, actors.node, tip_ceiling=defaults.tip_ceiling(), duty=True)

    with rpc_proxy(_rpc(network), _tip(600 * GWEI)) as (url, _):
        with caplog.at_level(logging.ERROR), pytest.raises(FeeTooHigh):
            as_build_node(url).omission_manager.answer_manifest(manifest_id, header, receipts)
    assert any("DUTY NOT SENT" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)

    with rpc_proxy(_rpc(network), _tip(60 * GWEI)) as (url, _):
        try:
            answer = as_build_node(url).omission_manager.answer_manifest(manifest_id, header, receipts)
        except FeeTooHigh as exc:
            pytest.fail(f"the node's answer was refused, the claim stays open to a slash: {exc}")
    assert int(answer.value["manifestId"]) == manifest_id
    assert _tip_paid(network, answer.receipt) == 60 * GWEI


# ------------------------------------------------------------------ the prompt


def _wei(number: str, unit: str) -> int:
    return int(Decimal(number) * {"ETH": ETHER, "gwei": GWEI, "wei": 1}[unit])


@pytest.mark.anvil
def test_defence_the_prompts_at_most_is_what_is_signed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Severity low. ``account deposit`` asks "... (gas: at most X)?" with X = the quote's gas
    limit x fee cap (`Binding.quote`), then `transact` estimates the gas again and signs that
    limit. An RPC answering the first ``eth_estimateGas`` with 21,000 (the second honestly) gets a
    yes to a bound below what is then signed (and paid: the deposit uses ~30,000 gas): the "at
    most" the user agreed to is not a bound.

    Fix (by design): sign the quoted transaction: `transact` takes the quote's gas limit (as it
    takes its fees), so a low estimate makes it fail within the shown cost, never cost more.

    FIXED: ``account``'s commands pass the quote to `Binding.transact` (``quote=``), which signs
    its fees and its gas limit: the lowered estimate's deposit runs out of gas within the bound
    shown (exit 1, "failed"), the user's channel unchanged."""
    user, node = actors.users[0], actors.node.address
    asked = [0]

    def estimate(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        if request["method"] != "eth_estimateGas":
            return None
        asked[0] += 1
        return _answer(request, hex(21_000)) if asked[0] == 1 else None

    balance = network.w3.eth.get_balance(user.address)
    channel = network.payments.channel(user.address, node)
    with rpc_proxy(_rpc(network), estimate) as (url, seen):
        args = ["deposit", node, "1gwei", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user), input="y\n")
    shown = re.search(r"gas: at most ([0-9.]+) (ETH|gwei|wei)\)", result.output)
    assert shown is not None, result.output
    (tx,) = _signed(seen)
    bound = tx["gas"] * tx["maxFeePerGas"]
    assert bound <= _wei(*shown.groups()), f"shown {shown.group(0)}, signed a bound of {bound / GWEI} gwei"
    assert asked[0] == 1  # the quote's estimate is the one signed, not asked again
    # the low estimate's limit runs out of gas: the deposit fails, within what was shown
    assert result.exit_code == 1 and "Payments.deposit failed" in result.output, result.output
    assert balance - network.w3.eth.get_balance(user.address) <= _wei(*shown.groups())
    assert network.payments.channel(user.address, node) == channel


# ------------------------------------------------------------------ what holds


@pytest.mark.anvil
def test_defence_the_sdks_transactions_are_never_signed_for_another_chain_from_any_thread(
    network: Contracts, actors: Actors
) -> None:
    """web3's cache of ``eth_chainId`` is per thread (finding 3), but `send` signs for
    `bindings.chain_id`, pinned per `Web3` object under a lock: a deposit sent from a thread that
    never asked, while the RPC now answers 1, is not signed for chain 1. (Before finding 3's fix
    web3's own check in that thread refused it: "declared chain ID 31337, but the connected node
    is on 1"; the pin now answers that check too, so it is signed for the pinned chain and
    lands.)"""
    user, node = actors.users[1], actors.node.address
    before = network.payments.channel(user.address, node).deposited
    outcome: list[object] = []
    with rpc_proxy(_rpc(network), _two_faced_chain_id(network.deployment.chain_id)) as (url, seen):
        c = Contracts.connect(url, network.deployment, user)

        def deposit() -> None:
            try:
                outcome.append(c.payments.deposit(node, GWEI))
            except Exception as exc:  # a refusal is fine; a foreign signature is not
                outcome.append(exc)

        worker = threading.Thread(target=deposit)
        worker.start()
        worker.join(60)
    signed = _signed(seen)
    assert all(t["chainId"] == network.deployment.chain_id for t in signed), (signed, outcome)
    landed = len(outcome) == 1 and not isinstance(outcome[0], Exception)
    assert network.payments.channel(user.address, node).deposited == before + (GWEI if landed else 0)


@pytest.mark.anvil
def test_defence_a_chain_without_max_priority_fee_and_a_lying_fee_history(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A chain whose RPC has no ``eth_maxPriorityFeePerGas``: web3 falls back to
    ``eth_feeHistory`` and clamps its estimate to 1-1.5 gwei, so rewards lied to 100,000 gwei
    change nothing, and the deposit lands. (On a chain whose least tip is above 1.5 gwei and whose
    RPC lacks the method, the transaction would wait: web3's clamp, not this commit's policy.)"""
    user, node = actors.users[2], actors.node.address

    def no_method(request: dict[str, Any], forward: Forward) -> dict[str, Any] | None:
        if request["method"] == "eth_maxPriorityFeePerGas":
            error = {"code": -32601, "message": "the method eth_maxPriorityFeePerGas does not exist"}
            return {"jsonrpc": "2.0", "id": request["id"], "error": error}
        if request["method"] == "eth_feeHistory":
            answer = forward()
            answer["result"]["reward"] = [[hex(100_000 * GWEI)] for _ in answer["result"]["reward"]]
            return answer
        return None

    before = network.payments.channel(user.address, node).deposited
    with rpc_proxy(_rpc(network), no_method) as (url, seen):
        args = ["deposit", node, "1gwei", "--yes", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user))
    assert result.exit_code == 0, result.output
    assert any(r["method"] == "eth_feeHistory" for r in seen)  # the fallback was taken
    assert [t["maxPriorityFeePerGas"] <= 3 * GWEI // 2 for t in _signed(seen)] == [True]
    assert network.payments.channel(user.address, node).deposited == before + GWEI


@pytest.mark.anvil
def test_defence_a_lying_pending_nonce_never_takes_a_used_one(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """An RPC answering ``eth_getTransactionCount(user, "pending")`` with 0 (a nonce the user
    already used): the signer never goes below the latest count (`bindings.next_nonce` takes the
    larger of the two, as Anvil's own pending count can lag its latest one), so the deposit is
    sent once, at the user's next nonce, instead of being refused "nonce too low" (it was, before
    the CI run of 3e982e9 showed the honest lag)."""
    user, node = actors.users[0], actors.node.address

    def stale(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        is_nonce = request["method"] == "eth_getTransactionCount" and request["params"][1] == "pending"
        return _answer(request, "0x0") if is_nonce else None

    nonce = network.w3.eth.get_transaction_count(user.address)
    assert nonce > 0  # 0 is a used nonce
    channel = network.payments.channel(user.address, node)
    with rpc_proxy(_rpc(network), stale) as (url, _):
        args = ["deposit", node, "1gwei", "--yes", *_common(network, tmp_path, url)]
        result = CliRunner().invoke(account_app, args, env=_key_env(user))
    assert result.exit_code == 0, result.output
    assert network.w3.eth.get_transaction_count(user.address) == nonce + 1
    assert network.payments.channel(user.address, node).balance == channel.balance + 10**9
