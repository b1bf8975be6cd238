"""Adversarial review of this session's changes (ad15c60..HEAD): the decoy fault that is meant to
be found only by a re-score (`faults._corrupt_tokens` with `Generation.stop_ids`, the dispatcher
passing stop ids, `decoys.decoy_faults`, `Database.recent_inputs` decoded), the client's
model-format rule (`types.pick_model_id`, `served_format`, `serves_model`, `NodeInfo` bounds) and
`Client._registered_endpoint` reading the registry directly.

Real parts: the real SmolLM2-135M engine under the real `Kernel` and dispatcher, with the node's own
decoy injector (`decoy_faults` of its key, as ``app.py`` builds it); the validator's real model-free
checks (`check_shape`, `check_grammar`) on the traces the kernel records; the real node `Database`;
the real `pick_model_id` on `NodeInfo` documents as a node's ``GET /v1/node`` builds them. A SPY:
`RecordingInjector` is the real `FaultInjector` (same seed, same code) that also keeps the honest
`Generation` the dispatcher hands it, so that the same real call can be run through the decoy
fault under many task ids without running the model again.

Found (both FIXED):

- MEDIUM, FIXED (the dispatcher hands the engine's EOS ids when the call names no stop tokens,
  `LLMEngine.eos_token_ids`; now `test_defence_the_real_dispatcher_hands_the_decoy_fault_no_stop_ids`)
  (the "FIXED" shape tell was not fixed in the real node): the dispatcher hands the decoy
  fault ``stop_ids=tuple(params.stop_token_ids or ())`` (dispatch.py:479), but the kernel never
  sets ``stop_token_ids`` (None: "the model's EOS tokens", sampling.py:82), so every real call
  reaches `_corrupt_tokens` with ``stop_ids == ()``. Its pool is then every id of the output,
  the final ``<|im_end|>`` included, so a replaced token is the EOS in a sizeable share of decoys:
  the validator's model-free `check_shape` flags "a stop token before the end of the output" on
  them and never on an honest call. The unit test of the fix passed ``stop_ids=(eos,)`` by hand, so
  it did not see this. A lazy validator collects those bounties without re-scoring
  (the test named above). Fix: hand the engine's
  effective stop set (``params.stop_token_ids`` if not None, else the engine's EOS ids).
- MEDIUM, FIXED (the planter replays only unconstrained inputs, `decoys._unconstrained`:
  `test_defence_a_decoy_never_replays_a_structured_output_input`; what the edit does to a
  constrained call stays, `test_known_limit_the_tokens_fault_breaks_a_structured_output_call`):
  a decoy on a structured-output input (``response_format`` json, or ``tools``: the tool
  grammar) fails the model-free grammar walk. `recent_inputs` now returns dict inputs as sent
  (db.py:404), so the planter replays OpenAI-route inputs with their ``response_format``/``tools``;
  `_corrupt_tokens` swaps in any other id of the output, which mostly leaves the grammar, and
  `check_grammar` (no model, no tolerance) flags it (measured: 35 of 40 decoys of a real
  ``json_object`` reply, with the stop ids already handed right; 0 honest); an honest call never does
  (the known-limit test above). Fix: on a constrained
  call, draw the replacement among the ids the grammar mask allows at that position (what a
  rational cheat does), or plant only unconstrained inputs.

Checked and holding:

- The decoy fault's secret seed is a pure function of the node key: a restarted node corrupts a
  resumed decoy exactly as before, another key differently
  (`test_defence_the_decoy_seed_is_stable_across_restarts_and_secret_per_key`).
- The ``tokens`` fault always changes the call it fires on, even on degenerate outputs (one
  repeated id, one token, a lone stop token), so ``--fault tokens`` never counts an injection that
  changed nothing (`test_defence_the_tokens_fault_always_changes_what_it_fires_on`).
- `recent_inputs` decodes object, string and unicode inputs as sent, never a decoy's own
  (`test_defence_recent_inputs_returns_inputs_as_sent`).
- The model-format rule: an honest float32 node is accepted by name, by lower- or upper-case
  ``0x`` id, bfloat16 refused by default and accepted when asked; a ``modelNames`` entry cannot
  redirect a ``0x`` id; a stated format the id is not the hash of is refused
  (`test_defence_the_model_format_rule_accepts_honest_nodes`).
- `Client._registered_endpoint` (read, not tested here): ``getNode`` of an unregistered address does
  not revert (ServiceManager.sol:546), it returns endpoint ``""``, which `_read_auth` refuses with a
  `ClientError` naming the node; a failing RPC read raises the web3 error raw, as before this change
  (the removed branch only covered a registry without ``get_node``).
- Known limit: a node of the previous version (no ``modelFormats``) is refused by the new client:
  the id alone does not say its precision, so the client cannot sign safely
  (`test_known_limit_a_node_without_model_formats_is_refused`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account
from supernet.node.agents.chat import ChatAgent
from supernet.node.faults import FaultInjector, Generation
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.service.db import Database
from supernet.node.service.decoys import DecoyPlanter, decoy_faults
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.types import ClientError, pick_model_id, serves_model
from supernet.sdk.models import served_model_id
from supernet.sdk.node_api import NodeInfo
from supernet.validator.grammar_check import check_grammar
from supernet.validator.llm_check import check_shape
from supernet.validator.trace_view import parse_trace

from tests.unit.test_validator_attacks3 import NoEmbedder

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
USER = Account.from_key("0x" + "c1" * 32)
NODE_KEY = bytes.fromhex("c2" * 32)
NODE = Account.from_key(NODE_KEY)
DECOYS = 200


def needs_model(test: Any) -> Any:
    """The real SmolLM2 tests' marks."""
    for mark in (
        pytest.mark.model,
        pytest.mark.timeout(120),
        pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
    ):
        test = mark(test)
    return test


@dataclass(frozen=True)
class RecordingInjector(FaultInjector):
    """SPY: the real `FaultInjector` (same seed, same code), keeping each honest `Generation` the
    dispatcher hands it."""

    seen: list[Generation] = field(default_factory=list)

    def on_generation(self, key: str, gen: Generation, model_perturbed: bool = False) -> Generation:
        self.seen.append(gen)
        return super().on_generation(key, gen, model_perturbed)


@pytest.fixture(scope="module")
def engine() -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(SMOLLM2, max_batch=2, max_seq_len=1024)


@pytest_asyncio.fixture
async def decoy_kernel(engine: Any, store_client: Any) -> Any:
    from supernet.node.agents.registry import AgentRegistry
    from supernet.node.kernel.kernel import Kernel

    agents = AgentRegistry()
    agents.register(ChatAgent)
    spy = RecordingInjector(seed=decoy_faults(NODE_KEY).seed)  # as app.py builds a planting node's
    kernel = Kernel(engine, store_client, None, embedder=NoEmbedder(), agents=agents, faults=spy)
    await kernel.setup()
    yield kernel, spy
    await kernel.stop()


async def run_decoy(
    kernel: Any, spy: RecordingInjector, task_input: Any, nonce: int
) -> tuple[Any, Generation]:
    """Run ``task_input`` on the chat agent as one of the node's decoys; returns the trace's first
    LLM call (as the validator parses it) and the honest generation the dispatcher handed the fault."""
    req = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=bytes.fromhex(kernel.model_id[2:]),
        agent_hash=bytes.fromhex(kernel.profile("chat").hash()[2:]),
        input_hash=input_hash(task_input),
        max_fee=100,
        nonce=nonce,
        deadline=2**40,
    )
    task_id = "0x" + hash_task_request(req, DOMAIN).hex()
    spy.decoys.add(task_id)  # what `DecoyPlanter.plant_once` does before sending it
    spec = TaskSpec(
        task_id=task_id,
        agent_id="chat",
        input=task_input,
        user=USER.address,
        fee=100,
        agent_hash="0x" + req.agent_hash.hex(),
        request=req.to_json(),
        request_signature="0x" + sign_task_request(req, DOMAIN, USER).hex(),
        model_id=kernel.model_id,
    )
    outcome = await kernel.run_task(spec)
    trace = parse_trace(dict(await kernel.store.get_dag(outcome.trace_cid)))
    assert trace.llm_calls and spy.seen, "the chat agent made its LLM call"
    return trace.llm_calls[0], spy.seen[-1]


def as_decoys(honest: Generation) -> list[tuple[int, ...]]:
    """The same honest call as ``DECOYS`` decoys of the node (its real decoy fault, fresh task ids)."""
    faults = decoy_faults(NODE_KEY)
    rnd = random.Random(23)
    out = []
    for _ in range(DECOYS):
        task_id = "0x" + rnd.randbytes(32).hex()
        faults.decoys.add(task_id)
        out.append(faults.on_generation(f"{task_id}:0", honest).output_ids)
    return out


@needs_model
async def test_defence_the_real_dispatcher_hands_the_decoy_fault_no_stop_ids(decoy_kernel: Any) -> None:
    """SAFE: a decoy made by the real node (kernel, dispatcher, its decoy injector) trips the
    model-free `check_shape` no more often than an honest call (never). Today the dispatcher hands
    the fault ``stop_ids=()`` (the kernel leaves ``stop_token_ids`` None: the engine's EOS), so the
    replacement pool holds the final ``<|im_end|>`` and lands it mid-output."""
    kernel, spy = decoy_kernel
    call, honest = await run_decoy(kernel, spy, "Answer in one word: what colour is the sky?", 1)
    eos = tuple(kernel.engine.model.cfg.eos_token_ids)
    assert honest.finish_reason == "stop" and honest.output_ids[-1] in eos, "an honest reply ends in EOS"
    honest_call = replace(call, output_ids=honest.output_ids)
    assert not check_shape(honest_call, eos), "the honest call passes the shape check"
    flagged = sum(bool(check_shape(replace(call, output_ids=ids), eos)) for ids in as_decoys(honest))
    assert flagged <= DECOYS // 100, (
        f"check_shape (no model) flags {flagged} of {DECOYS} decoys of this real call and no honest "
        f"call: the dispatcher handed the fault stop_ids={honest.stop_ids!r} (the engine stops on "
        f"{eos}), so _corrupt_tokens drew the final EOS into the middle of the output"
    )


@needs_model
async def test_known_limit_the_tokens_fault_breaks_a_structured_output_call(decoy_kernel: Any) -> None:
    """The ``tokens`` fault on a constrained call (``response_format``, ``tools``) replaces ids with
    any other id of the output, which mostly leaves the grammar: the model-free grammar walk finds
    it. A rational cheat would pick an id the mask allows; the fault does not, so decoys never run on
    such inputs (`test_defence_a_decoy_never_replays_a_structured_output_input`). Pinned here: a
    change that keeps the edit inside the grammar turns this around (then decoys may use them)."""
    kernel, spy = decoy_kernel
    task_input = {
        "messages": [{"role": "user", "content": "Give a JSON object with a name and an age."}],
        "response_format": {"type": "json_object"},
        "max_new_tokens": 24,
    }
    call, honest = await run_decoy(kernel, spy, task_input, 2)
    assert call.grammar is not None, "the call is constrained"
    # the engine's stop ids handed as the first finding's fix would: this tell is the grammar's
    honest = replace(honest, stop_ids=tuple(kernel.engine.model.cfg.eos_token_ids))
    tokenizer, eos = kernel.engine.tokenizer, tuple(kernel.engine.model.cfg.eos_token_ids)
    vocab = int(kernel.engine.model.cfg.vocab_size)
    honest_call = replace(call, output_ids=honest.output_ids)
    assert not check_grammar(honest_call, tokenizer, vocab, eos), "the honest call walks its grammar"
    decoys = as_decoys(honest)[:40]  # a grammar walk per call: keep it light
    flagged = sum(bool(check_grammar(replace(call, output_ids=ids), tokenizer, vocab, eos)) for ids in decoys)
    assert flagged > len(decoys) // 2, f"check_grammar flags {flagged} of {len(decoys)} such edits"


def test_defence_a_decoy_never_replays_a_structured_output_input(tmp_path: Path) -> None:
    """The planter draws its decoys' inputs from the node's recent chat inputs as sent, leaving out
    those whose reply a grammar constrains (``response_format``, ``tools``): the decoy's edit would
    break the grammar, which the validator's model-free walk shows."""
    import json

    db = Database.open(tmp_path / "node.sqlite3")
    plain = ["Name a planet.", {"messages": [{"role": "user", "content": "hi"}]}]
    constrained = [
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
        {"messages": [{"role": "user", "content": "weather?"}], "tools": [{"type": "function"}]},
    ]
    with db.transaction() as c:  # the rows as the worker leaves a finished chat task
        for i, value in enumerate(plain + constrained):
            c.execute(
                "INSERT INTO tasks (id, user, nonce, model_id, agent, agent_hash, input, input_hash, "
                "max_fee, fee, deadline, signature, status, created_at, updated_at) "
                "VALUES (?, '0xu', ?, '0xm', 'chat', '0x', ?, '0x', '1', '1', 0, '0x', 'done', ?, ?)",
                (f"0x{i:064x}", str(i), json.dumps(value), float(i), float(i)),
            )
    planter = object.__new__(DecoyPlanter)  # only what `_pick_input` reads
    planter.db, planter.inputs, planter._rng = db, [], random.Random(5)
    picked = {json.dumps(planter._pick_input(), sort_keys=True) for _ in range(100)}
    assert picked == {json.dumps(v, sort_keys=True) for v in plain}, picked
    db.close()


def test_defence_the_decoy_seed_is_stable_across_restarts_and_secret_per_key() -> None:
    """A resumed decoy (planted before a restart) is corrupted exactly as before; another node's
    key (or the public seed 0) draws differently."""
    gen = Generation(prompt_ids=tuple(range(30, 60)), output_ids=(*range(100, 140), 2), stop_ids=(0, 2))
    task = "0x" + "ab" * 32
    first, again, other = decoy_faults(NODE_KEY), decoy_faults(NODE_KEY), decoy_faults(b"\x22" * 32)
    for f in (first, again, other):
        f.decoys.add(task)
    drawn = [first.on_generation(f"{task}:{i}", gen).output_ids for i in range(20)]
    assert drawn == [again.on_generation(f"{task}:{i}", gen).output_ids for i in range(20)]
    assert drawn != [other.on_generation(f"{task}:{i}", gen).output_ids for i in range(20)]
    assert first.seed != 0 and first.seed == again.seed != other.seed


def test_defence_the_tokens_fault_always_changes_what_it_fires_on() -> None:
    """``--fault tokens`` counts a task as injected only if the call changed: degenerate outputs
    included (one id repeated, a single token, a lone stop token, a length-cut output)."""
    faults = FaultInjector.from_cli(["tokens:1.0"])
    cases = [
        Generation(prompt_ids=(5, 6), output_ids=(9, 9, 9, 2), stop_ids=(2,)),
        Generation(prompt_ids=(5, 6), output_ids=(9,), finish_reason="length", stop_ids=(2,)),
        Generation(prompt_ids=(5, 6), output_ids=(2,), stop_ids=(2,)),
        Generation(prompt_ids=(2,), output_ids=(2,), stop_ids=(2,)),
        Generation(prompt_ids=(5, 6), output_ids=(9, 2)),
        Generation(prompt_ids=(5, 6), output_ids=(7, 8, 9, 10), finish_reason="length"),
    ]
    for n in range(50):
        for gen in cases:
            assert faults.on_generation(f"0x{n:064x}:0", gen).output_ids != gen.output_ids, gen


def test_defence_recent_inputs_returns_inputs_as_sent(tmp_path: Path) -> None:
    """The column holds the input's JSON; `recent_inputs` hands back what the user sent (a string,
    an object, unicode), newest first, and never a decoy's own input."""
    import json

    db = Database.open(tmp_path / "node.sqlite3")
    sent: list[Any] = [
        "Name a planet.",
        {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
        'Ünïcødé \u2603 "quoted"',
    ]
    with db.transaction() as c:  # the rows as the worker leaves a finished chat task
        for i, value in enumerate(sent):
            c.execute(
                "INSERT INTO tasks (id, user, nonce, model_id, agent, agent_hash, input, input_hash, "
                "max_fee, fee, deadline, signature, status, created_at, updated_at) "
                "VALUES (?, '0xu', ?, '0xm', 'chat', '0x', ?, '0x', '1', '1', 0, '0x', 'done', ?, ?)",
                (f"0x{i:064x}", str(i), json.dumps(value), float(i), float(i)),
            )
    assert db.recent_inputs(32) == sent[::-1]
    db.close()


def _info(formats: dict[str, tuple[str, str]], names: dict[str, str] | None = None) -> NodeInfo:
    ids = list(formats)
    return NodeInfo.model_validate(
        {
            "address": NODE.address,
            "chainId": 31337,
            "verifyingContract": "0x" + "33" * 20,
            "taskFee": 10**15,
            "models": ids,
            "modelNames": names or {},
            "modelFormats": {m: {"weights": w, "compute": c} for m, (w, c) in formats.items()},
            "agents": {},
            "agentCards": [],
            "storeUrl": "http://127.0.0.1:1/v1/store",
        }
    )


WEIGHTS = "0x" + "77" * 32


def test_defence_the_model_format_rule_accepts_honest_nodes() -> None:
    f32, bf16 = served_model_id(WEIGHTS, "float32"), served_model_id(WEIGHTS, "bfloat16")
    info = _info(
        {f32.upper().replace("0X", "0x"): (WEIGHTS, "float32"), bf16: (WEIGHTS, "bfloat16")},
        {"smollm2-135m": f32, "smollm2-135m@bfloat16": bf16},
    )
    assert pick_model_id(info, "smollm2-135m") == f32.lower()
    assert pick_model_id(info, f32.upper().replace("0X", "0x")) == f32.lower()
    assert pick_model_id(info, None) == f32.lower()
    assert serves_model(info, "smollm2-135m") and serves_model(info, f32.upper().replace("0X", "0x"))
    with pytest.raises(ClientError, match="bfloat16"):
        pick_model_id(info, "smollm2-135m@bfloat16")
    assert pick_model_id(info, bf16, ("float32", "bfloat16")) == bf16.lower()
    # a name cannot redirect a 0x id, and a stated format the id is not the hash of is refused
    swapped = _info({f32: (WEIGHTS, "float32"), bf16: (WEIGHTS, "float32")}, {f32: bf16})
    assert pick_model_id(swapped, f32) == f32.lower()
    with pytest.raises(ClientError, match="not the hash"):
        pick_model_id(swapped, bf16, ("float32", "bfloat16"))


def test_known_limit_a_node_without_model_formats_is_refused() -> None:
    """A node of the previous version states no ``modelFormats``: the client refuses to sign (the
    id alone does not say its precision). By design: upgrading nodes is the way out."""
    f32 = served_model_id(WEIGHTS, "float32")
    info = _info({f32: (WEIGHTS, "float32")}).model_copy(update={"modelFormats": {}})
    with pytest.raises(ClientError, match="modelFormats"):
        pick_model_id(info, f32)
