"""Adversarial review of the session's last changes (a20fb77, 2a251f0, b1a13ad): a cheating node, a
hostile claimant and an honest model's load against them.

Scope: (1) a recorded ``chain_read`` judged by its batch's commit block without RPC, and what the
validator cannot re-read as `evidence.OwnSide`, a local failure checked again while the window is
open (`supernet.validator.chain_check`, `tool_check`, `verifier`); (2) `Verifier.unloadable` and
`Validator._declare_models(without=)`; (3) `supernet.node.service.wallet_float.WalletFloat` before
the node's answers (`AvailabilityResponder`); (4) the one-pass float32/bfloat16 load
(`loader._ReadOnceSource`), shards naming a tensor twice, a head against its tie flag. Out of scope
(being edited): ``node/supernet/node/kernel/replay.py``, ``validator/supernet/validator/llm_check.py``.
Real parts: Anvil (the session's, and one started here that keeps only recent states, as a full
node does), the deployed contracts, the node's `Database`, `AvailabilityResponder` and embedded
store, the whole `Verifier` over traces committed as an honest-looking node commits them (helpers
of tests/unit/test_review_rational_node2.py and tests/unit/test_validator_attacks.py), the real
loader on files written here.

Found (``test_attack_*``, failing until fixed):

1. HIGH, FIXED (`test_defence_a_latest_read_pinned_to_state_validators_no_longer_hold_is_judged`):
   a read of ``latest`` may name *any* block below the commit block, and a validator whose RPC
   keeps recent states only (a geth/reth full node: 128 blocks; here an Anvil with
   ``--prune-history``) cannot re-read an old one: `OwnSide`, a local failure, checked again until
   the window closes and then logged "UNCHECKED". The node pins its read to an old block (its real
   hash) and records any value: every such validator is told to try again, none ever accuses.
   The commit-block rule bounds the pin from above only; the documented known limit ("a read of
   ``latest`` may be pinned to any final block", docs/validator.md) assumed the old value is then
   re-read, but without that state it is the node's word, and the new `OwnSide` path turns it
   into re-checks until "unchecked" instead of a final "unverifiable" (no better). Fixed by
   design, in time rather than blocks (block rates differ 50x between chains): a tag read's pin
   is at most `chain_read.MAX_PIN_AGE_S` (6 h) older than its batch's commit block (headers are
   kept by every RPC), else a finding; a validator's RPC must hold that span's states.
2. MEDIUM, FIXED (`test_defence_an_eth_call_that_runs_out_of_gas_everywhere_is_judged`): an
   ``eth_call`` that runs out of gas at the RPC's cap fails there as a JSON-RPC error, not a
   revert, so the validator's re-read is `OwnSide` for ever; an honest node records
   ``CHAIN_UNREACHABLE``, a cheating one any value. The same where the node's own RPC has a higher
   gas cap than the validators'. Fixed: every call runs at the protocol's `CHAIN_READ_GAS` (10M),
   node and validator alike, and a re-read that runs out of it (`OUT_OF_GAS` wordings) shows a
   recorded value to be made up: a finding.
3. MEDIUM, FIXED (`test_defence_the_float_is_priced_at_a_floored_answers_fee_cap`): `WalletFloat`
   prices an answer at `fees()`'s cap (2 x base fee + the RPC's tip), but on a deployment with an
   answer gas price floor the answer is sent at ``claim_fee_cap(tip=floor)``; at the base fee of 0
   such chains have, the wallet is judged "enough" at a fraction of what the answer needs, no
   credit is pulled, the answer cannot be paid, and the honest node is slashed while its credits
   (here 3x the answer) sit in the TaskManager: the griefing the float was made to stop.
   Fixed with 4 by design: one pricing for the float and the sender (`Binding.answer_fee_cap`,
   the cap `answer` signs with, floor included; `gas_limit` over the formula's gas x 5/4).
4. LOW, FIXED (`test_defence_the_float_covers_a_large_answers_gas_limit`): without a floor, the
   float's margin (formula x 5/4) is below the sender's (`gas_limit`: estimate x 1.3) for traces
   over ~100 KB (measured: 200 KB trace, limit 10,448,139 gas, float 10,252,000): a wallet in
   between is judged enough, nothing is pulled, and the answer cannot be paid.
5. LOW, FIXED (`test_defence_a_format_that_loads_again_is_declared_again`): one failed load
   (memory pressure once) leaves `Verifier.unloadable` for the process's life: the format later
   loads and is checked, yet is never declared again (`_declare_models` only shrinks it) until a
   restart. Fixed with 6: `unloadable` maps a format to its last failed load, a load that works
   removes it, and the step declares again whenever the set changes (`_declare_loadable`).
6. LOW, FIXED (`test_defence_a_format_that_cannot_load_is_tried_once_per_back_off`): a failed
   load is not remembered: each receipt of that format (and each re-check of each) attempts the
   whole load again. A node serving such a format with its own accounts makes every validator
   load a model per receipt, and each receipt ends "unchecked" (a cheat's cover). Fixed: one
   load of a format at a time, a failure remembered for `LOAD_RETRY_S` (receipts meanwhile are
   local failures without a load).

Checked and holding (``test_defence_*``): a read at the commit block itself, or past it, is a finding
without an RPC, and a read at the block just below with the honest value is clean (no off-by-one:
a read is pinned to a block final before the commit's transaction, so strictly below its block);
every path that builds a `Manifest` for checking or voting passes the batch's ``commit_block``
(`Disputes.manifest`, ``posted``, ``claimed``, `load_manifest`; the column is NOT NULL); the
float32 and bfloat16 one-pass loads give the model, id and logits of the former path (tied and
untied, a bfloat16 file) and the GGUF and safetensors copies of the catalog's SmolLM2 keep their
id (measured once, not run here: 14-31 s each on this machine: float32 0xbf35a52d..., peak RSS
790 MB vs 1,298 before; bfloat16 530 vs 1,176; GGUF float32 975 vs 1,193: no memory regression).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from chain_fixtures import Actors, burn_address_exists, stake_network
from llm_fixtures import TINY, make_tiny_llama
from safetensors.torch import save_file
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.chain_read import CHAIN_UNREACHABLE, MAX_PIN_AGE_S, block_ref, connected
from supernet.node.llm.loader import load_model
from supernet.node.llm.manifest import build_manifest, model_id
from supernet.node.llm.model import Llama
from supernet.node.llm.weights import read_hf_dir
from supernet.node.service.availability import AvailabilityResponder
from supernet.node.service.db import Database
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, increase_time, mine, set_balance, set_next_base_fee
from supernet.sdk.chain.bindings import fees
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.models import served_model_id
from supernet.sdk.store import StoreClient
from supernet.validator.evidence import OwnSide
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import LOAD_RETRY_S, Manifest, Verifier

from tests.unit.test_review_hostile_parties import _committed_batch
from tests.unit.test_review_rational_node2 import (
    VALIDATOR,
    BalanceOracle,
    OneCopyScorer,
    chain_read_record,
    doc,
    honest_read,
    limits,
    signed,
)
from tests.unit.test_validator_attacks import (
    DOMAIN,
    MODEL_ID,
    NODE,
    WEIGHTS,
    DictStore,
    MemoryQuestion,
    StandInScorer,
    commit_entry,
    empty_search,
)

GWEI = 10**9
ADDRESS = "0x" + "5a" * 20  # holds no ether: any other balance is the node's word
LOOP = "0x" + "10" * 20  # JUMPDEST PUSH1 0 JUMP: runs out of whatever gas it is given
LOOP_CODE = "0x5b600056"


class CallOracle(Agent):
    """Answers with a contract's ``eth_call`` answer read by the built-in ``chain_read``."""

    agent_id = "call-oracle"
    description = "Tells what a contract answers to some calldata."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        args = {"method": "call", "address": input["address"], "data": input["data"]}
        read = await ctx.tools.call("chain_read", args)
        return f"answer {read['value']}"


async def _chain_read_verdict(
    agent: type[Agent],
    task_input: dict[str, Any],
    args: dict[str, Any],
    result: dict[str, Any],
    rpc: str,
    commit_block: int | None,
) -> Any:
    """The whole `Verifier`'s verdict on a receipt whose trace holds one ``chain_read`` (``args``
    -> ``result``), committed in a batch at ``commit_block``; the validator re-reads over ``rpc``."""
    tools = [chain_read_record(rpc)]
    lim = limits(4)
    req, task_id = signed(agent, task_input, tools, lim, MODEL_ID)
    event = {"kind": "tool", "name": "chain_read", "args": args, "deterministic": False}
    event |= {"result": result, "error": None}
    said = "balance" if agent is BalanceOracle else "answer"
    trace = doc(agent, task_id, task_input, [event], f"{said} {result['value']}", tools, lim)
    store = DictStore()
    agents = AgentRegistry()
    agents.register(agent)
    entry = commit_entry(store, req, task_id, trace)
    verifier = Verifier(store, StandInScorer(), RegistryRunner(store, rpc), DOMAIN, VALIDATOR, agents=agents)
    return await verifier.verify(1, NODE.address, 0, Manifest({0: entry}, commit_block=commit_block))


# -- 1. chain_read: what a validator's RPC cannot re-read ------------------------------------------------


@pytest.fixture(scope="module")
def full_node() -> Iterator[Anvil]:
    """An Anvil that keeps the states of its last 16 blocks only, as a full node (not an archive)
    does: what most validators' RPCs are (geth and reth keep 128 by default)."""
    proc = Anvil(accounts=2)
    # Anvil's own option, through the wrapper's argument list (it has no parameter for it); the
    # rest as the session's Anvil (final two blocks behind the head)
    proc._args += ["--prune-history", "16"]
    with proc:
        mine(proc.web3(), 1)
        increase_time(proc.web3(), MAX_PIN_AGE_S + 60)  # block 1 is older than any pin may be
        mine(proc.web3(), 40)
        yield proc


@pytest.mark.anvil
async def test_defence_a_latest_read_pinned_to_state_validators_no_longer_hold_is_judged(
    full_node: Anvil,
) -> None:
    """HIGH. Who gains: the node (and whoever pays it for an answer): any balance or contract
    answer it likes, shown to the agent, and no validator whose RPC is a full node ever accuses it.

    Attack: the agent reads ``balance`` at ``latest`` (no ``block`` argument). The node pins the
    result to block 1, with block 1's real hash and a value of its choosing. `check_chain_read`
    checks only that the pin is below the commit block; the validator's RPC no longer holds
    block 1's state ("BlockOutOfRangeError", geth's "missing trie node"), so the re-read fails,
    `OwnSide`: a local failure, re-checked with back-off until the window closes and then logged
    "UNCHECKED" (`Validator._closed`). The controls: the same lie pinned to the honest (recent)
    block is a finding, the honest read is clean.

    Fix (by design): bound the pin from below for a tag read (``latest``/``safe``/``finalized``):
    a protocol constant ``MAX_PIN_AGE`` (blocks: finality lag + the batcher's largest age + a task's
    longest run); a pin below ``commit_block - MAX_PIN_AGE`` is a finding decided without RPC, as
    the upper bound is (the node's batcher commits within it). Then a validator needs the states
    of ``MAX_PIN_AGE`` + one challenge window of blocks, a requirement it checks at start (one
    read at ``head - that``), refusing to run on a shorter history; explicit old ``block``
    arguments need an archive RPC on both sides or are refused by the tool alike (a deterministic
    "older than the protocol reads" below the same bound).
    """
    url = full_node.url
    args = {"method": "balance", "address": ADDRESS}
    task_input = {"address": ADDRESS}
    honest = await honest_read(url, args)
    commit = honest["block"] + 3
    mine(full_node.web3(), 3)  # the commit's block exists: its timestamp bounds the pin's age
    clean = await _chain_read_verdict(BalanceOracle, task_input, args, honest, url, commit)
    assert clean.ok and clean.unverifiable is None, (clean.findings, clean.unverifiable)
    lie = str(10**21)
    recent = await _chain_read_verdict(BalanceOracle, task_input, args, {**honest, "value": lie}, url, commit)
    assert [f.check.value for f in recent.findings] == ["tool"], recent
    async with connected(url) as w3:
        number, block_hash = block_ref(await w3.eth.get_block(1))
    old = {"block": number, "block_hash": block_hash, "value": lie}
    verdict = await _chain_read_verdict(BalanceOracle, task_input, args, old, url, commit)
    assert verdict.findings, (
        f"a balance of {lie} wei pinned to block 1 (real hash) of an address that never held ether is "
        f"a local failure on a full-node validator, checked again until the window closes: "
        f"{verdict.unverifiable} (local={verdict.local_failure})"
    )


@pytest.mark.anvil
async def test_defence_an_eth_call_that_runs_out_of_gas_everywhere_is_judged(
    chain: Contracts, anvil: Anvil
) -> None:
    """MEDIUM. Who gains: the node: any answer it likes for a contract call that no RPC can finish
    at its gas cap (a loop; a heavy view: an aggregate over a large array), shown to the agent.

    Attack: the agent ``eth_call``s a contract that runs out of gas. An honest node's RPC fails:
    the tool records ``CHAIN_UNREACHABLE`` (accepted as the RPC's moment). A cheating node records a
    value pinned to a real final block instead. The validator's re-read fails the same way, as a
    JSON-RPC error ("EVM error OutOfGas", not a revert), which `check_chain_read` takes for its own
    RPC's state: `OwnSide`, re-checked until the window closes, never judged. The same where the
    node's RPC runs calls with a higher gas cap than the validators' (geth: ``--rpc.gascap``).

    Fix (by design): make a call's outcome a function of the chain: `read_at` sends the call with
    an explicit protocol gas (``CHAIN_READ_GAS``, below every supported RPC's cap; a validator
    checks its RPC allows it at start), and an EVM failure at that gas (out of gas, invalid opcode)
    is a recorded outcome like a revert (``{"reverted": "0x"}`` or ``{"failed": "out of gas"}``),
    which a validator re-reads and compares; only a transport error stays `OwnSide`.
    """
    chain.w3.provider.make_request("anvil_setCode", [LOOP, LOOP_CODE])  # type: ignore[arg-type]
    mine(chain.w3, 3)  # the code is in the finalized state
    args = {"method": "call", "address": LOOP, "data": "0x"}
    task_input = {"address": LOOP, "data": "0x"}
    with pytest.raises(Exception, match=CHAIN_UNREACHABLE):  # what an honest node records
        await honest_read(anvil.url, args)
    final = await honest_read(anvil.url, {"method": "block_number"})
    lie = {"block": final["block"], "block_hash": final["block_hash"], "value": "0x" + "00" * 31 + "2a"}
    mine(chain.w3, 3)  # the commit's block
    verdict = await _chain_read_verdict(CallOracle, task_input, args, lie, anvil.url, final["block"] + 3)
    assert isinstance(verdict.unverifiable, OwnSide) or verdict.findings
    assert verdict.findings, (
        "a value recorded for a call that runs out of gas on every RPC is this validator's local "
        f"failure, re-checked until the window closes: {verdict.unverifiable}"
    )


@pytest.mark.anvil
async def test_defence_the_commit_block_rule_has_no_off_by_one(anvil: Anvil) -> None:
    """A read is pinned to a block final before the task's receipt is signed, so before the
    commit's transaction is even sent: strictly below its block. The honest read with the commit
    in the very next block is clean; the same read claimed at the commit block, or past it, is a
    finding with no RPC asked (a validator without one decides it too)."""
    args = {"method": "balance", "address": ADDRESS}
    task_input = {"address": ADDRESS}
    honest = await honest_read(anvil.url, args)
    edge = await _chain_read_verdict(BalanceOracle, task_input, args, honest, anvil.url, honest["block"] + 1)
    assert edge.ok and edge.unverifiable is None, (edge.findings, edge.unverifiable)
    for commit in (honest["block"], honest["block"] - 1):
        at = await _chain_read_verdict(BalanceOracle, task_input, args, honest, anvil.url, commit)
        assert [f.check.value for f in at.findings] == ["tool"], (commit, at)
        assert "not before its batch's commit" in at.findings[0].message


def test_defence_every_manifest_the_validator_checks_carries_its_commit_block() -> None:
    """Every place that builds the `Manifest` a check or a vote reads passes the batch's commit
    block (read from the source, so a new path without it fails here): `load_manifest`'s callers
    and the fallbacks of posted and claimed entries; the database column is NOT NULL."""
    import inspect

    from supernet.validator import challenger, db, verifier

    src = inspect.getsource(challenger)
    assert src.count("Manifest(") == src.count("commit_block=batch.commit_block")
    assert "batch.count, batch.commit_block" in src  # load_manifest's call
    assert inspect.getsource(verifier.load_manifest).count("commit_block=commit_block") == 1
    assert "commit_block INTEGER NOT NULL" in inspect.getsource(db)


# -- 2. a format that failed to load --------------------------------------------------------------------


class FlakyScorer(StandInScorer):
    """A validator whose second format fails to load once (memory pressure at that moment: a
    batch's scoring, another process), then loads: the real `ModelScorer.for_compute` keeps no
    failure, so the next receipt tries the load again."""

    def __init__(self) -> None:
        self.loads = 0

    def for_compute(self, compute: str) -> Any:
        if compute == self.dtype:
            return self
        self.loads += 1
        if self.loads == 1:
            raise MemoryError(f"cannot hold a {compute} copy of the weights right now")
        sibling = StandInScorer()
        sibling.dtype = compute
        return sibling


def _f16_receipts(store: DictStore, count: int) -> Manifest:
    """``count`` clean receipts of a float16-weights node (no LLM call: a memory search)."""
    f16 = served_model_id(WEIGHTS, "float16-weights")
    entries = {}
    for i in range(count):
        question = f"where are my keys? ({i})"
        lim = limits(8)
        req, task_id = signed(MemoryQuestion, {"q": question}, [], lim, f16)
        trace = doc(
            MemoryQuestion,
            task_id,
            {"q": question},
            empty_search(question),
            "unknown",
            [],
            lim,
            f16,
            "float16-weights",
        )
        entries[i] = commit_entry(store, req, task_id, trace)
    return Manifest(entries)


def _verifier(store: DictStore, scorer: Any) -> Verifier:
    agents = AgentRegistry()
    agents.register(MemoryQuestion)
    return Verifier(store, scorer, RegistryRunner(store, None), DOMAIN, VALIDATOR, agents=agents)


async def test_defence_a_format_that_loads_again_is_declared_again() -> None:
    """LOW. Who loses: the nodes serving that format (clients stop signing it for want of
    checkers, `supernet.sdk.chain.coverage`) and the users who would pick them; a node that wants
    a format checked by fewer validators gains.

    A load that fails once (memory pressure at that moment) puts the format in
    `Verifier.unloadable`, and `Validator._step` then declares the validator's ids without it
    (`_declare_models(without=)`). Nothing ever takes it out: the next receipt loads the format
    (`ModelScorer.for_compute` keeps no failure) and is checked clean, yet the format stays out of
    the declaration until the process restarts (`setup` declares every format again).

    Fix (by design): ``unloadable`` is the formats whose *last* load failed: a load that succeeds
    removes it and the step declares the format again (`_declare_models` already compares with
    what is on chain); or load every declared format at start and declare only those that load
    (no load at check time, so no transient failure to remember).
    """
    store = DictStore()
    manifest = _f16_receipts(store, 2)
    scorer = FlakyScorer()
    verifier = _verifier(store, scorer)
    first = await verifier.verify(1, NODE.address, 0, manifest)
    assert first.local_failure and "cannot score in float16-weights" in str(first.unverifiable)
    assert set(verifier.unloadable) == {"float16-weights"}
    verifier.unloadable["float16-weights"] -= LOAD_RETRY_S  # its back-off has passed
    second = await verifier.verify(1, NODE.address, 1, manifest)
    assert second.ok and second.unverifiable is None, second  # the format loads and is checked now
    assert "float16-weights" not in verifier.unloadable, (
        "a format this validator loads and checks stays out of its on-chain declaration after one "
        f"failed load (unloadable={verifier.unloadable}) until the process restarts"
    )


async def test_defence_a_format_that_cannot_load_is_tried_once_per_back_off() -> None:
    """LOW. Who gains: a node that wants validators busy, or a format it serves unchecked.

    A failed load is not remembered: each receipt of the format asks `_decider`, which calls
    ``for_compute`` again, a whole load of the model in that format (seconds to minutes for a
    large model: read, convert, then fail for memory), serialised by its lock, and again at every
    back-off re-check of every such receipt (`recheck_at`). A node with accounts of its own signs
    N receipts in that format: N loads per validator per re-check round, and every receipt ends
    "unchecked" (a cover for a cheat among them). Measured here on 4 receipts of one batch.

    Fix (by design): remember the failure: a format whose load failed is not loaded again before a
    back-off of its own (one attempt per format per period, whatever the number of receipts), its
    receipts staying local failures meanwhile; or load the declared formats at start only.
    """
    store = DictStore()
    manifest = _f16_receipts(store, 4)
    scorer = OneCopyScorer()
    calls = 0
    real = scorer.for_compute

    def counted(compute: str) -> Any:
        nonlocal calls
        calls += compute != scorer.dtype
        return real(compute)

    scorer.for_compute = counted  # type: ignore[method-assign]
    verdicts = await _verifier(store, scorer).verify_many(1, NODE.address, [0, 1, 2, 3], manifest)
    assert all(v.local_failure for v in verdicts), verdicts
    assert calls <= 1, f"{calls} whole-model loads of one format that cannot load, for 4 receipts"


# -- 3. the wallet float --------------------------------------------------------------------------------


def _responder(c: Contracts, actors: Actors, db: Database, store: StoreClient) -> AvailabilityResponder:
    return AvailabilityResponder(db, store, c.as_account(actors.node).task_manager, actors.node.address, 0)


@pytest.mark.anvil
async def test_defence_the_float_is_priced_at_a_floored_answers_fee_cap(
    chain: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM. Who gains: a griefer with no stake (a competitor, a short on the node's stake): the
    honest node is slashed, the very attack `WalletFloat` was made to stop
    (tests/unit/test_review_hostile_parties.py).

    On a deployment with ``MIN_ANSWER_GAS_PRICE`` (the chains a floor is for: base fee 0, e.g.
    BNB Chain), the node sends an answer with the floor as its tip and ``claim_fee_cap(tip=floor)``
    as its cap (`Binding.answer`); `WalletFloat.most_cost` prices it at `fees()`'s cap instead, 2 x
    the base fee + the RPC's suggested tip: here 1 gwei against the answer's 10. A wallet holding
    twice the float's "need" is judged enough, no credit is pulled, and the answer cannot be paid
    ("gas required exceeds allowance"), while the node's credit from the previous answer (one
    whole answer at the floor, three times the wallet) sits in the TaskManager; the claim is
    resolved against the node and its stake slashed.

    Fix (by design): one function prices a duty for both the sender and the float: the float asks
    the binding what it will send (``answer``'s fee cap, floor included, and `gas_limit` of the
    formula or of an estimate), never a second formula; simplest, `cover` takes the quote
    (`Binding.quote`-like: gas limit x cap) of the very call about to be sent.
    """
    floor = 10 * GWEI
    params = dataclasses.replace(chain.params, min_answer_gas_price=floor)
    c = stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)
    burn_address_exists(c)
    node = actors.node.address
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=2, trace_bytes=2_000)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager
        responder = _responder(c, actors, db, store_client)
        set_next_base_fee(c.w3, 0)
        mine(c.w3)
        first = griefer.challenge_availability(header, 0).value
        wallet0 = c.w3.eth.get_balance(node)
        assert await responder.answer_once() == [first]
        spent = wallet0 - c.w3.eth.get_balance(node)
        mine(c.w3, 30)  # the RPC's tip suggestion back at its idle 1 gwei (the floor's tips age out)
        second = griefer.challenge_availability(header, 1).value
        # the float's former price (the default fee cap, the formula's gas x 5/4): the wallet is set
        # at twice it, which the floored answer cannot be signed with
        float_need = await responder._answer_gas(2_040) * 5 // 4 * fees(c.w3).max_fee_per_gas
        set_balance(c.w3, node, 2 * float_need)
        credit = c.task_manager.claimable(node)
        assert credit > 3 * 2 * float_need and spent > 2 * float_need, (credit, spent, float_need)
        for _ in range(2):
            await responder.answer_once()
        increase_time(c.w3, c.params.vote_window + 1)
        status = c.task_manager.get_availability(second).status
        if status == AvailabilityStatus.OPEN:
            griefer.resolve_availability(second)
        assert status == AvailabilityStatus.ANSWERED, (
            f"claim {second} left {status.name}: the float judged {2 * float_need} wei enough for an "
            f"answer that cost {spent} at the floor, and never pulled the {credit} wei of credit; "
            f"stake left {c.service_manager.get_node(node).stake}"
        )
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_the_float_covers_a_large_answers_gas_limit(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """LOW. Who gains: a griefer, as above, who steers the wallet into a narrow band (small claims
    move it by one small answer's cost each) and then claims an entry with a large trace.

    `WalletFloat` needs the pricing formula x 5/4 at the fee cap; the sender signs `gas_limit`
    (estimate x 1.3, up to `TX_GAS_CAP`). An answer's gas is the calldata floor (EIP-7623: 40 per
    byte) + ~37k, the formula 200k + 40 per byte: for traces over ~100 KB the limit passes the
    float (200 KB: 10,448,139 gas against 10,252,000). A wallet in between is judged enough,
    nothing is pulled, and the answer cannot be paid while the node's credits would pay it.

    Fix (by design): as above, the float covers what the sender will sign (one function for both:
    the margin is `gas_limit`'s, applied to the same estimate, and the fee cap the answer's).
    """
    c = network
    node = actors.node.address
    size = 200_000
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=2, trace_bytes=size)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager
        responder = _responder(c, actors, db, store_client)
        first = griefer.challenge_availability(header, 0).value
        assert await responder.answer_once() == [first]  # its credit is now in the TaskManager
        sent = c.w3.eth.get_transaction(c.w3.eth.get_block("latest")["transactions"][0])
        second = griefer.challenge_availability(header, 1).value
        float_gas = await responder._answer_gas(size + 20)
        cap = fees(c.w3).max_fee_per_gas  # the float's former price: formula x 5/4 at this cap
        assert int(sent["gas"]) > float_gas * 5 // 4, (sent["gas"], float_gas)
        set_balance(c.w3, node, float_gas * 5 // 4 * cap + (int(sent["gas"]) - float_gas * 5 // 4) * cap // 2)
        for _ in range(2):
            await responder.answer_once()
        status = c.task_manager.get_availability(second).status
        assert status == AvailabilityStatus.ANSWERED, (
            f"claim {second} left {status.name}: the float needs {float_gas * 5 // 4} gas at the cap, "
            f"the answer is signed with a limit of {sent['gas']}; the node's "
            f"{c.task_manager.claimable(node)} wei of credit was never pulled"
        )
    finally:
        db.close()


# -- 4. the one-pass load of float32 and bfloat16 -------------------------------------------------------


def _former_load(folder: Path, dtype: torch.dtype) -> tuple[Llama, str]:
    """The model and id the loader made before b1a13ad for float32/bfloat16: the file's tensors
    hashed as they are (`build_manifest`), the model built from them and cast, the rope tables
    rounded through the dtype and kept in float32."""
    cfg, tensors = read_hf_dir(folder)
    ident = model_id(build_manifest(tensors, cfg.to_dict(), None))
    model = Llama.from_hf_state_dict(cfg, {k: v.clone() for k, v in tensors.items()}).to(dtype=dtype)
    model.rope_cos, model.rope_sin = model.rope_cos.float(), model.rope_sin.float()
    return model, ident


@pytest.mark.parametrize("tied", [True, False])
def test_defence_the_one_pass_float32_and_bfloat16_loads_are_the_former_ones(
    tmp_path: Path, tied: bool
) -> None:
    """An honest model (a bfloat16 file, as most published ones are; tied and untied head) loads
    in float32 and bfloat16 to the very model, id and logits of the former path: no id changes
    for a served model, nothing an honest node and a validator on another version disagree on."""
    cfg = dataclasses.replace(TINY, tie_embeddings=tied)
    sd = {k: v.to(torch.bfloat16) for k, v in make_tiny_llama(3, cfg).to_hf_state_dict().items()}
    folder = tmp_path / "m"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))
    tokens = torch.tensor([[3, 14, 15, 92, 65, 7]])
    for compute, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        loaded = load_model(folder, device="cpu", compute=compute)
        former, ident = _former_load(folder, dtype)
        assert loaded.model_id == ident, compute
        new, old = loaded.model.state_dict(), former.state_dict()
        assert new.keys() == old.keys()
        for k in new:
            assert new[k].dtype == old[k].dtype and torch.equal(new[k], old[k]), (compute, k)
        assert torch.equal(loaded.model.rope_cos, former.rope_cos), compute
        with torch.no_grad():
            assert torch.equal(loaded.model.logits(loaded.model(tokens)), former.logits(former(tokens)))
