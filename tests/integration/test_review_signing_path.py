"""Adversarial review of the one transaction-signing path (commits 76a2621, c4d331a):
`bindings.build_signed` (fees via `fees`, the pinned chain id via `chain_id`/`pin_chain_id` and
its `_PinnedChainId` middleware, gas via `gas_limit`), `send`, `send_ether`,
`Binding.quote`/`transact(quote=)`/`answer`/`claim`, `priority_fee`, `fee_alarm`,
`DAEMON_MAX_PRIORITY_FEE` (the node's and validator's ``[chain] max_priority_fee_gwei``), the answer
floor pinned at `Contracts.connect`, and the node's `Web3Chain.sign_commit` (signed, persisted, then
broadcast).

Adversaries: a malicious or faulty JSON-RPC endpoint (a stdlib proxy in front of the real Anvil,
the attacker's code, rewriting or delaying only what each test names, as in
test_review_fee_policy.py), an honest operator (an older deployment file, a fee spike), and a user
whose prompt waits while the base fee rises. Real parts: Anvil (with EIP-7825's gas cap on), the
deployed contracts (``network``), the SDK's bindings, the node's `Web3Chain`, the money CLI
in-process. The reviews this builds on (not repeated here): test_review_money_keys.py,
test_review_fee_policy.py.

Found:

1. FIXED (low; liveness) the node orders its transactions under two locks that do not exclude each
   other: `Web3Chain.sign_commit` reads the "pending" nonce under the node's ``_tx_lock`` only, and
   its data-claim answers (`AvailabilityResponder`, ``asyncio.to_thread(om.answer_manifest)``,
   never under ``_tx_lock``) under `bindings._sender` only; and the signed commit is broadcast
   only after it is persisted. An answer sent while a commit is being signed takes the commit's
   nonce: the commit can never land (`wait_commit` -> None), the batch is signed again later; on a
   chain with a mempool the second of the two is refused ("replacement transaction underpriced")
   or, with fees 10 % higher, replaces the first (an answer then waits out `send`'s 120 s).
   `test_defence_an_answer_takes_the_nonce_of_a_commit_being_signed`.
   FIXED: one nonce order per account: `bindings.next_nonce` under `_sender` (`sign_commit` too).
2. FIXED (medium) a deployment file without ``minAnswerGasPrice`` (written before the parameter,
   or by hand) takes the floor from the RPC at `Contracts.connect`, unbounded: an RPC answering
   ``MIN_ANSWER_GAS_PRICE() = 10,000 gwei`` once at the node's start makes every answer of its
   lifetime tip 10,000 gwei (20x the daemon's 500 gwei ceiling; ~1.8 ETH for a 2-receipt manifest
   answer). The fix of test_review_fee_policy.py finding 1 only covers files that carry it.
   `test_defence_a_deployment_file_without_the_floor_takes_the_rpcs_floor_at_connect`.
   FIXED: a floor read from the RPC is not vouched for: held to the tip ceiling (`FeeTooHigh`).

Checked and holding:

- a lying ``eth_estimateGas`` (16M gas for an answer): the limit is signed within `TX_GAS_CAP`
  and the node pays only the gas it uses; 30M is passed through and refused by the chain
  (EIP-7825), nothing paid (a censoring RPC can refuse anything anyway);
- known limit: a quote held while the base fee rises past its cap is signed as quoted
  (`transact(quote=)` reads nothing before signing): Anvil refuses it in one line, nothing is
  spent and no nonce is taken; a mempool chain would hold it until the base fee falls;
- known limit: after `Contracts.connect` the pin answers every ``eth_chainId`` locally, so an RPC
  that moves to a twin deployment (same addresses on another chain) goes unnoticed by any check
  of ``w3.eth.chain_id``: the daemon reads the twin's state; its transactions, signed for the
  pinned chain, are refused there (nothing lands on either chain).

Read, no test: a validator's reveal (or any duty) refused by `FeeTooHigh` is not caught by the
challenger (`FeeTooHigh` is no `ContractError`): the reveal pass ends, `fee_alarm` logs "DUTY NOT
SENT" and the service retries it every poll interval at the same ceiling, never a higher tip, so a
spike above 500 gwei outlasting the reveal phase loses the vote bond (0.1 ETH by default; a
~60k gas reveal costs ~0.03 ETH at 500 gwei, so between 500 and ~1,600 gwei a reveal worth sending
is refused). The ceiling is the operator's to raise; a fix by design would size a duty's ceiling
by what it protects (the bond over its gas) as its deadline nears. A "pending" nonce that lags
on a load-balanced RPC gives two `send`s in a row the same nonce (the `_sender` lock holds only
until the broadcast): the fix of finding 1 does not cover it (`next_nonce` holds nonces off
only while a signed one is not yet handed to the RPC, and those sent above it; a counter that
outlived them would open a gap at every dropped transaction or reorg). A
lying nonce with a gap leaves a persisted commit pending (`CommitPending`, re-broadcast) until
another transaction of the node uses the nonce: no worse than an RPC that drops the broadcast.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chain_fixtures import CHAIN_TEST_PARAMS, Actors, make_receipts
from eth_account.typed_transactions import TypedTransaction
from eth_utils import function_abi_to_4byte_selector, keccak
from hexbytes import HexBytes
from rpc_proxy import Forward, rpc_proxy
from rpc_proxy import answer as _answer
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import ChainSettings as NodeChainSettings
from supernet.sdk.chain import Batch, Contracts, ReceiptTree, bindings
from supernet.sdk.chain.anvil import Anvil
from supernet.sdk.chain.bindings import (
    DAEMON_MAX_PRIORITY_FEE,
    NONCE_RESERVATION_S,
    TX_GAS_CAP,
    FeeTooHigh,
    load_abi,
    next_nonce,
    release_nonce,
    reserve_nonce,
    send_ether,
)
from supernet.sdk.chain.contracts import FLOOR_PARAM
from supernet.sdk.chain.deployment import DeploymentError
from supernet.sdk.money_cli import app as account_app
from typer.testing import CliRunner

GWEI = 10**9
ETHER = 10**18

_FLOOR_CALL = "0x" + keccak(text="MIN_ANSWER_GAS_PRICE()")[:4].hex()
_COMMIT_BATCH = (
    "0x"
    + function_abi_to_4byte_selector(
        next(f for f in load_abi("TaskManager") if f.get("name") == "commitBatch")
    ).hex()
)


def _rpc(c: Contracts) -> str:
    return str(c.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def _post(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()).get("result")


def _honest(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
    return None


def _signed(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every transaction the proxy was handed, decoded."""
    raws = [r["params"][0] for r in seen if r["method"] == "eth_sendRawTransaction"]
    return [dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict()) for raw in raws]


def _call_data(request: dict[str, Any]) -> str:
    tx = request["params"][0]
    return str(tx.get("data") or tx.get("input") or "")


def _tip_paid(c: Contracts, receipt: Any) -> int:
    base = int(c.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"])
    return int(receipt["effectiveGasPrice"]) - base


def _as_build_node(url: str, c: Contracts, actors: Actors, deployment: Any = None) -> Contracts:
    """Connected as `build_node` connects the node: the daemon's default ceiling, as duties."""
    dep = c.deployment if deployment is None else deployment
    return Contracts.connect(url, dep, actors.node, tip_ceiling=NodeChainSettings().tip_ceiling(), duty=True)


def _manifest_claim(c: Contracts, actors: Actors) -> tuple[Batch, int, list[Any]]:
    """A 2-receipt batch of `Actors.node`, its manifest claimed by a validator: (header, id, receipts)."""
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(actors.node).task_manager.commit_batch(tree.root, 2, "bafym").value.batch_id
    header = c.task_manager.batch(batch_id)
    manifest_id = c.as_account(actors.validators[0]).omission_manager.challenge_manifest(header).value
    return header, manifest_id, receipts


# ------------------------------------------------------------------ nonces


@pytest.mark.anvil
def test_defence_an_answer_takes_the_nonce_of_a_commit_being_signed(
    network: Contracts, actors: Actors
) -> None:
    """Severity low (liveness). The node's transactions are ordered by two locks that never meet:
    `Web3Chain.sign_commit` holds the node's ``_tx_lock`` (not `bindings._sender`) from reading the
    "pending" nonce to signing, then releases it; the commit is persisted and only then broadcast
    (another ``_tx_lock`` hold). The node's answers to data claims (`AvailabilityResponder`:
    ``asyncio.to_thread(self.om.answer_manifest, ...)`` on ``chain.contracts.omission_manager``)
    go through `send`, which holds `bindings._sender` only. Both read the same pending nonce while
    neither is broadcast: here the RPC is slow on the commit's gas estimate (any RPC is, a little)
    and the answer, sent meanwhile, lands at the nonce the commit was signed with. The commit can
    never land (`wait_commit` -> None, "nonce was used by another transaction"); the batcher signs
    the batch again next round. On a chain with a mempool the later of the two is refused
    ("replacement transaction underpriced": the batcher's `broadcast` raises, it is not in its
    benign list) or, when its fees are 10 % higher, replaces the other (an answer then waits out
    `send`'s 120 s before the next scan retries it): commits and answers delayed, never lost.
    Who gains: nobody directly; a claimant racing the answer window gains time.

    Fix (by design): one order for every transaction of an account in the process: the nonce is
    taken under `bindings._sender` by `sign_commit` too, and a signed-not-yet-broadcast commit
    holds its nonce (a local next-nonce per account, advanced when a transaction is signed and
    reset from the chain only when none is outstanding), instead of re-reading "pending".

    FIXED: every nonce comes from `bindings.next_nonce` (the RPC's pending count, above every
    nonce reserved and not yet released), called under `bindings._sender`; `sign_commit` signs
    under `_sender` too and reserves its nonce (`build_signed(reserve=True)`), `broadcast`
    releases it once the RPC was handed the commit. Here the answer waits for the commit's
    signing, then takes the next nonce; both land."""
    header, manifest_id, receipts = _manifest_claim(network, actors)
    tree = ReceiptTree.from_receipts(make_receipts(network, actors.users, actors.node.address, 3))
    nonce_read, answered = threading.Event(), threading.Event()

    def slow_commit_estimate(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        if request["method"] == "eth_estimateGas" and _call_data(request).startswith(_COMMIT_BATCH):
            if not nonce_read.is_set():
                nonce_read.set()  # the commit has read its nonce; its estimate is slow
                answered.wait(5)
        return None

    answers: list[object] = []
    with rpc_proxy([_rpc(network)], slow_commit_estimate) as (url, seen):
        chain = Web3Chain(_as_build_node(url, network, actors), actors.node)
        om = chain.contracts.omission_manager  # what `NodeRunner` hands its AvailabilityResponder

        def answer() -> None:  # the responder's worker thread, while the batcher signs
            try:
                if nonce_read.wait(30):
                    answers.append(om.answer_manifest(manifest_id, header, receipts))
            except Exception as exc:
                answers.append(exc)
            finally:
                answered.set()

        worker = threading.Thread(target=answer)
        worker.start()
        commit = asyncio.run(chain.sign_commit(tree.root, len(tree), "bafycommit"))
        asyncio.run(chain.broadcast(commit))  # as the batcher does, once it is persisted
        worker.join(30)
        landed = asyncio.run(chain.wait_commit(commit, timeout_s=10))
    answer_tx = [t for t in _signed(seen) if not HexBytes(t["data"]).hex().startswith(_COMMIT_BATCH[2:])]
    assert len(answers) == 1 and not isinstance(answers[0], Exception), answers
    assert [t["nonce"] for t in answer_tx] != [], seen
    assert commit.nonce not in [t["nonce"] for t in answer_tx], (
        f"the answer and the commit were both signed at nonce {commit.nonce}: the commit "
        f"{'landed' if landed is not None else 'can never land (wait_commit -> None)'}"
    )


class _Pool:
    """A fake RPC's pool of one account's transactions: its pending count is the nonces from 0
    it holds without a gap (a transaction above a gap is queued, not counted, as geth's and
    Anvil's are); a nonce handed to it twice is the collision the nonce order exists to prevent."""

    def __init__(self) -> None:
        self.nonces: set[int] = set()
        self.lock = threading.Lock()

    def get_transaction_count(self, address: str, block: str) -> int:
        if block == "latest":
            return 0  # nothing is mined: the pool only holds
        assert block == "pending"
        with self.lock:
            count = 0
            while count in self.nonces:
                count += 1
            return count

    def take(self, nonce: int) -> None:
        with self.lock:
            assert nonce not in self.nonces, f"nonce {nonce} signed twice"
            self.nonces.add(nonce)


class _FakeW3:
    def __init__(self) -> None:
        self.eth = _Pool()


_ACCOUNT = "0x" + "11" * 20


def test_unit_a_reserved_nonce_is_skipped_until_released_and_sends_above_it_with_it() -> None:
    """`next_nonce`: the pending count, skipping a nonce reserved (signed, not yet handed to the
    RPC) and the nonces sent above it (the RPC counts none above the gap); released after a
    broadcast the RPC took, the count covers them all; after one it refused, the gap goes to the
    next transaction."""
    w3: Any = _FakeW3()
    assert next_nonce(w3, _ACCOUNT) == 0
    reserve_nonce(w3, _ACCOUNT, 0)  # a commit signed, being persisted
    for answer in (1, 2):  # two answers sent meanwhile: queued above the gap, uncounted
        assert next_nonce(w3, _ACCOUNT) == answer
        w3.eth.take(answer)
        release_nonce(w3, _ACCOUNT, answer, sent=True)
    assert w3.eth.get_transaction_count(_ACCOUNT, "pending") == 0
    assert next_nonce(w3, _ACCOUNT) == 3
    release_nonce(w3, _ACCOUNT, 0, sent=False)  # the commit's broadcast was refused
    assert next_nonce(w3, _ACCOUNT) == 0, "the gap goes to the next transaction"
    w3.eth.take(0)
    reserve_nonce(w3, _ACCOUNT, next_nonce(w3, _ACCOUNT))  # another commit, at 3
    assert next_nonce(w3, _ACCOUNT) == 4
    w3.eth.take(3)
    release_nonce(w3, _ACCOUNT, 3, sent=True)  # broadcast: the RPC counts it
    assert next_nonce(w3, _ACCOUNT) == 4
    reserve_nonce(w3, _ACCOUNT, 4)
    release_nonce(w3, _ACCOUNT)  # the node starts (`Web3Chain`): nothing of its is outstanding
    assert next_nonce(w3, _ACCOUNT) == 4
    assert next_nonce(_FakeW3(), _ACCOUNT) == 0, "held nonces are the client's"


class _LaggingPendingEth:
    """A named fake of an RPC whose pending count lags its latest (Anvil mining on arrival under
    load, foundry-rs/foundry #7388; a load balancer's backends): 5 mined, the pool's count says 4.
    The race is too narrow to cause on demand on a real Anvil."""

    def get_transaction_count(self, address: str, block: str) -> int:
        return {"latest": 5, "pending": 4}[block]


def test_unit_a_pending_count_below_the_latest_never_reuses_a_mined_nonce() -> None:
    """A nonce under the latest count is taken already: signing at it ends in "nonce too low",
    and the commit is then dead (the CI run of 3e982e9 failed on that race on Anvil)."""
    w3: Any = type("W3", (), {"eth": _LaggingPendingEth()})()
    assert next_nonce(w3, _ACCOUNT) == 5


def test_unit_a_lost_reservation_stops_holding_after_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation never released (an error between signing and broadcasting) holds its nonce
    off for `NONCE_RESERVATION_S` at most, and the nonces sent above it with it: then the next
    transaction fills the gap and the queued ones behind it are counted."""
    clock = [1000.0]
    monkeypatch.setattr(bindings, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    w3: Any = _FakeW3()
    reserve_nonce(w3, _ACCOUNT, 0)  # lost: never released
    clock[0] += 10
    assert next_nonce(w3, _ACCOUNT) == 1
    w3.eth.take(1)
    release_nonce(w3, _ACCOUNT, 1, sent=True)
    clock[0] += NONCE_RESERVATION_S - 10  # the bound, from the reservation
    assert next_nonce(w3, _ACCOUNT) == 2
    clock[0] += 1
    assert next_nonce(w3, _ACCOUNT) == 0, "expired: the gap is filled"
    w3.eth.take(0)
    assert next_nonce(w3, _ACCOUNT) == 2


def test_unit_commits_and_sends_from_threads_never_share_a_nonce() -> None:
    """Two threads send (`send`'s order: `_sender` from `next_nonce` to handing it over) while a
    third signs commits (`sign_commit`'s: `_sender` to reserve, persisted outside it, then
    broadcast and released under it, as `Web3Chain.broadcast` does): no nonce twice, no gap."""
    w3: Any = _FakeW3()
    lock = bindings._sender(_ACCOUNT)
    errors: list[BaseException] = []

    def commits() -> None:
        for _ in range(20):
            with lock:
                nonce = next_nonce(w3, _ACCOUNT)
                reserve_nonce(w3, _ACCOUNT, nonce)
            time.sleep(0.002)  # persisted before it is broadcast
            with lock:
                try:
                    w3.eth.take(nonce)
                finally:
                    release_nonce(w3, _ACCOUNT, nonce, sent=True)

    def sends() -> None:
        for _ in range(40):
            with lock:
                nonce = next_nonce(w3, _ACCOUNT)
                w3.eth.take(nonce)
                release_nonce(w3, _ACCOUNT, nonce, sent=True)
            time.sleep(0.0005)

    def run(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (commits, sends, sends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert w3.eth.nonces == set(range(100))
    assert next_nonce(w3, _ACCOUNT) == 100


# ------------------------------------------------------------------ the answer floor


@pytest.mark.anvil
def test_defence_a_deployment_file_without_the_floor_takes_the_rpcs_floor_at_connect(
    network: Contracts, actors: Actors
) -> None:
    """Severity medium. `Contracts.connect` pins the answer floor from the deployment file's
    ``minAnswerGasPrice``; for a file without it (one written before the parameter existed, or by
    hand: `ProtocolParams.from_dict` silently keeps the default 0 for it) it reads
    ``MIN_ANSWER_GAS_PRICE()`` once, from the RPC, and pins that - unbounded. An RPC answering
    10,000 gwei (`MAX_ANSWER_FLOOR`) at the node's start makes every answer of the node's lifetime
    tip 10,000 gwei, 20x its 500 gwei ceiling (`Binding.answer` raises the ceiling to
    `MAX_ANSWER_FLOOR` for the floor): ~1.8 ETH of tips for the 2-receipt manifest answer here (it
    is paid a few micro-ETH), tens of ETH for a full batch's; a lie above `MAX_ANSWER_FLOOR`
    instead makes every answer `FeeTooHigh` (the node slashed). The block producer running the
    RPC gains the tips. test_review_fee_policy.py finding 1's fix holds only for files with it.

    Fix (by design): a read floor is the RPC's word, held to the caller's tip ceiling like any
    suggested tip (`FeeTooHigh`, "add minAnswerGasPrice to the deployment file"), or signing
    daemons refuse a deployment file without it (`DeploymentError`) and `supernet deploy` always
    writes it.

    FIXED: a floor is vouched for (`floor_vouched`) only when it is the deployment file's or the
    caller's (`answer_floor=`); one `Contracts.connect` reads from the RPC is not, and
    `Binding.answer` (and `claim`) hold it to the binding's tip ceiling, as any tip an RPC
    suggests: `FeeTooHigh` here ("add minAnswerGasPrice to the deployment file"), nothing paid.
    `supernet contracts deploy` writes ``minAnswerGasPrice`` always (`ProtocolParams.to_dict`)."""
    header, manifest_id, receipts = _manifest_claim(network, actors)
    lie = 10_000 * GWEI
    dep = network.deployment
    old_file = dataclasses.replace(dep, params={k: v for k, v in dep.params.items() if k != FLOOR_PARAM})

    def floor(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        if request["method"] == "eth_call" and _call_data(request) == _FLOOR_CALL:
            return _answer(request, "0x" + lie.to_bytes(32, "big").hex())
        return None

    before = network.w3.eth.get_balance(actors.node.address)
    with rpc_proxy([_rpc(network)], floor) as (url, _):
        try:
            node = _as_build_node(url, network, actors, old_file)
            answer = node.omission_manager.answer_manifest(manifest_id, header, receipts)
        except (DeploymentError, FeeTooHigh):
            return  # the secure behaviour: refused, nothing paid at the RPC's floor
    tip = _tip_paid(network, answer.receipt)
    lost = before - network.w3.eth.get_balance(actors.node.address)
    assert tip <= DAEMON_MAX_PRIORITY_FEE, (
        f"the answer tipped {tip // GWEI} gwei a gas (the deployment's floor is "
        f"{CHAIN_TEST_PARAMS.min_answer_gas_price}): the node spent {lost / ETHER:.3f} ETH, "
        f"was paid {int(answer.value['answerCost']) / ETHER:.6f} ETH"
    )


# ------------------------------------------------------------------ gas limits


@pytest.mark.anvil
def test_defence_a_lying_gas_estimate_costs_the_node_only_the_gas_it_uses(
    network: Contracts, actors: Actors
) -> None:
    """An RPC answering every ``eth_estimateGas`` of the node's with 16M gas (30M) gets the answer
    signed at `TX_GAS_CAP` (2^24, `gas_limit`'s margin stops there) and the node pays the gas the
    answer uses, at the block's price: unused gas is never charged. At 30M the estimate passes
    `gas_limit` as is and the chain refuses the transaction (EIP-7825's cap, on here as on
    mainnet): nothing is paid, as for any RPC that drops a transaction."""
    header, manifest_id, receipts = _manifest_claim(network, actors)
    lie = [30_000_000]

    def estimate(request: dict[str, Any], _: Forward) -> dict[str, Any] | None:
        return _answer(request, hex(lie[0])) if request["method"] == "eth_estimateGas" else None

    node = actors.node.address
    with rpc_proxy([_rpc(network)], estimate) as (url, seen):
        om = _as_build_node(url, network, actors).omission_manager
        before = network.w3.eth.get_balance(node)
        with pytest.raises(Exception, match="gas"):
            om.answer_manifest(manifest_id, header, receipts)
        assert [t["gas"] for t in _signed(seen)] == [30_000_000]
        assert network.w3.eth.get_balance(node) == before
        lie[0] = 16_000_000
        answer = om.answer_manifest(manifest_id, header, receipts)
    assert _signed(seen)[-1]["gas"] == TX_GAS_CAP
    used, price = answer.gas_used, int(answer.receipt["effectiveGasPrice"])
    assert used < 1_000_000
    assert before - network.w3.eth.get_balance(node) == used * price


# ------------------------------------------------------------------ the prompt


@pytest.mark.anvil
def test_known_limit_a_quote_held_while_the_base_fee_rises_is_signed_as_quoted(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Known limit (low). ``account deposit`` quotes (fee cap = 2 x base fee + tip), waits for the
    user's yes, and signs the quote (`transact(quote=)`: no read of the base fee before signing).
    Here the base fee rises 50x between the quote and the yes: the deposit is signed with a cap
    below the base fee. Anvil refuses it at once ("max fee per gas less than block base fee"): one
    line, exit 1, no nonce taken, the balance and the channel unchanged (pinned here). A chain
    with a mempool (geth) keeps it instead, pending until the base fee falls below the cap: `send`
    gives up after 120 s, the nonce stays taken, and a later command queues behind it (a repeated
    deposit then lands twice; a deposit is withdrawable, so a delay, not a loss).

    Why acceptable: the quote is the bound the user agreed to (test_review_fee_policy.py finding
    7); signing more would break that. What would fix the wait: `transact(quote=)` reads the
    latest base fee first and refuses a quote whose cap is under it ("fees rose since the quote:
    run it again"), nothing signed."""
    user, node = actors.users[0], actors.node.address
    upstream = _rpc(network)
    quoted = [False]

    def rise_after_quote(request: dict[str, Any], forward: Forward) -> dict[str, Any] | None:
        if request["method"] != "eth_estimateGas" or quoted[0]:
            return None
        quoted[0] = True
        answer = forward()  # the quote's estimate: the prompt now waits; the base fee rises
        base = int(network.w3.eth.get_block("latest")["baseFeePerGas"])
        _post(upstream, "anvil_setNextBlockBaseFeePerGas", [hex(max(50 * base, 50 * GWEI))])
        _post(upstream, "evm_mine", [])
        return answer

    balance = network.w3.eth.get_balance(user.address)
    nonce = network.w3.eth.get_transaction_count(user.address)
    channel = network.payments.channel(user.address, node)
    with rpc_proxy([upstream], rise_after_quote) as (url, seen):
        dep = network.deployment.save(tmp_path / "deployment.json")
        args = ["deposit", node, "1gwei", "--rpc", url, "--deployment", str(dep)]
        env = {"SUPERNET_USER_KEY": "0x" + bytes(user.key).hex()}
        result = CliRunner().invoke(account_app, args, env=env, input="y\n")
    (tx,) = _signed(seen)
    assert tx["maxFeePerGas"] < int(network.w3.eth.get_block("latest")["baseFeePerGas"])
    assert result.exit_code == 1 and "base fee" in result.output, result.output
    assert len(result.output.strip().splitlines()) <= 2, result.output  # the prompt, then one line
    assert network.w3.eth.get_balance(user.address) == balance
    assert network.w3.eth.get_transaction_count(user.address, "pending") == nonce
    assert network.payments.channel(user.address, node) == channel


# ------------------------------------------------------------------ the pinned chain id


@pytest.mark.anvil
def test_known_limit_an_rpc_that_moves_to_a_twin_chain_goes_unnoticed_but_nothing_is_signed_there(
    network: Contracts, actors: Actors
) -> None:
    """Known limit (low). The pin (`_PinnedChainId`) answers ``eth_chainId`` locally from
    `Contracts.connect` on: an RPC that later moves to another chain (a re-pointed URL, a load
    balancer mixing networks) where the same deployer put the same contracts at the same
    addresses (a testnet twin) goes unnoticed by every check of ``w3.eth.chain_id`` (pinned here:
    it says the deployment's id); the daemon reads the twin's state (its claims, batches) as if it
    were the deployment's. Its transactions are signed for the pinned chain and the twin refuses
    them, so nothing lands on either chain; the refusals are the only sign (before the pin, web3's
    own check of each transaction's chain id said "the connected node is on ...").

    Why acceptable: the signatures never serve another chain (the aim of the pin); a daemon whose
    RPC moved cannot do its duties whatever it signs. What would fix the silence: a periodic check
    of the RPC's raw ``eth_chainId`` (``w3.provider.make_request``, under the pin) in the daemons'
    loops, stopping duties and alarming on a mismatch."""
    dep = network.deployment
    upstream = [_rpc(network)]
    with Anvil(chain_id=dep.chain_id + 1, accounts=2) as twin:
        twin_contracts = Contracts.deploy(twin.url, actors.deployer, CHAIN_TEST_PARAMS)
        assert twin_contracts.deployment.contracts == dep.contracts  # same deployer, same nonces
        with rpc_proxy(upstream, _honest) as (url, seen):
            node = _as_build_node(url, network, actors)
            upstream[0] = twin.url  # the RPC moves
            assert node.w3.eth.chain_id == dep.chain_id  # the pin: the move is not seen here
            raw = node.w3.provider.make_request("eth_chainId", [])  # type: ignore[arg-type]
            assert int(raw["result"], 16) == dep.chain_id + 1  # ... only under the pin
            # the twin's state, read as the deployment's: the node is not registered there
            assert not node.service_manager.get_operator(actors.node.address).registered
            assert network.service_manager.get_operator(actors.node.address).registered
            twin_nonce = twin_contracts.w3.eth.get_transaction_count(actors.node.address)
            with pytest.raises(Exception, match=r"(?i)chain"):  # the node funding a decoy account
                send_ether(node.w3, actors.node, actors.users[0].address, GWEI, node.tip_ceiling)
        assert [t["chainId"] for t in _signed(seen)] == [dep.chain_id]
        assert twin_contracts.w3.eth.get_transaction_count(actors.node.address) == twin_nonce
