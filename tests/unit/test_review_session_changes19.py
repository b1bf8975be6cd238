"""Review 19: this session's fixes of earlier findings (8cea40c..HEAD, sdk node validator), attacked
as a cheating node, a hostile user or racing validators would: the sample kept with its seed
(`Validator._open_batch`, `TurnOrder.samples`), the protocol's bound on stop strings
(`MAX_STOP_STRINGS` x `MAX_STOP_CHARS`, `LLMChat`, `Sampling.from_dag`) and the validator's stop
scan by the engine's own watcher (`dispatch.first_stop`), the seal of the seed block at a
validator's first retry (`Availability._seal`, `TaskManager.seal_seed_block`, `SeedBeacon.sealed`),
and the drop-in's slack after a ``stop`` call (`answer_facts.least_span`). Real parts: Anvil with
the compiled contracts and two embedded content stores (`tests.unit.test_review_validator_game`'s
``game``), the real `Availability` / `TaskManagerClient` / `Disputes` / `Verifier`, SmolLM2's real
tokenizer (`supernet.node.llm.tokenizer.Tokenizer`), the node's answer rule (`chat_facts`) and
the drop-in's (`answer_facts`).

Found:

- LOW, FIXED (`test_attack_data_served_by_the_first_retry_still_costs_the_validator_a_seal`, now
  `test_defence_data_served_by_the_first_retry_costs_the_validator_no_seal`: the validator looks
  first and seals once the entry's retries are spent and it is still unreadable): the seal
  comes before the look. `Availability._retry` (validator/supernet/validator/availability.py:134-139)
  calls `_seal` when ``row.attempts == 0`` and only then `_verdict`; so an entry whose data the node
  served meanwhile (a store hiccup, or a node that serves every batch a few seconds late on
  purpose) still costs the validator a seal transaction (~60k gas under PREVRANDAO, its header in
  calldata) and a wait for its receipt (up to 120 s each, one after another in the availability
  step). The docstring says "at the first retry of an entry this validator ... cannot read".
  The node pays nothing for it and risks nothing (it served in time). Fix: look first, seal only
  if the entry is still unreadable (better: only once it stays unreadable as the seed block nears
  `blockhash`'s reach, or when the claim is opened: what the seal protects is a pick past the
  seed's horizon, which a few seconds' delay never reaches).
- LOW, a KNOWN LIMIT now
  (`test_attack_validators_retrying_one_withheld_batch_in_one_block_each_pay_for_its_seal`, now
  `test_known_limit_validators_sealing_one_seed_block_in_one_block_each_pay`; with the seal moved
  to when the retries are spent, only data withheld past them costs seals):
  "One seal per seed block (~55k gas), the first validator's" does not hold. Every validator
  sampled for a withheld batch notes it on the same followed block and retries it a backoff later,
  so their first retries land in one block: each sees the block unsealed, estimates (against the
  mined state: fine) and sends; the first mined seals, the others are mined and revert
  (`BlockAlreadySealed`), gas paid (measured on Anvil: ~65k gas the seal, ~40k the reverted one).
  `seal_seed_block` then reads the chain and goes on (no stall),
  but with k sampled validators a node's one withheld (or slow) batch costs k seal transactions.
  Fix: together with the one above (seal late, only where needed); a validator-specific delay, or
  a check of the pending block before sending, would cut the race.
- LOW, FIXED (`test_attack_a_special_token_before_the_stop_string_fails_an_honest_answer_with_logprobs`,
  now `..._passes_an_honest_answer_with_logprobs`: the node's rule spans the text-free tokens right
  after a cut answer, an empty entry each, so every token left holds a stop string's byte):
  `least_span` (sdk/supernet/sdk/openai_compat/answer_facts.py:177-191) allows after a ``stop``
  call's answer at most ``max(1, bytes of the longest signed stop string)`` tokens, "each holding at
  least one of its bytes". A special token other than the end-of-turn one holds none (SmolLM2:
  ``<|endoftext|>`` and ``<|im_start|>`` are not stop tokens, `stop_text` skips them, the engine does
  not mask them: a sampled answer draws them). One between the answer and the stop string (``Paris``
  ``<|endoftext|>`` ``\\n`` with ``stop=["\\n"]``) gives the honest node's answer (`chat_facts.spanned`:
  1 entry) one entry fewer than the drop-in requires (2): the user's client refuses the paid answer
  as a node's lie (``AnswerMismatchError``). Rare for an honest user; a hostile one (sampling, its
  own seed, the model at hand) searches offline for a seed that draws it. Fix: count after the
  answer ``max(1, longest stop's bytes)`` plus the special tokens there: without a tokenizer the
  drop-in knows their ids only as "not the answer's bytes", so either record in the trace (or the
  answer) how many tokens the stop took, or allow any number of trailing entries whose bytes are
  empty (the node's rule gives them none).

Checked and holding:

- `first_stop` agrees with the old prefix rule (the first k whose decode holds a stop string) on
  1,500 crafted sequences of SmolLM2 tokens: lone UTF-8 bytes (the byte-level alphabet's 0x80-0xff),
  tokens whose text alone is partial, all 17 special tokens (no text: the watcher's context
  reaches further back), ordinary tokens; stop strings cut from the end of a prefix's text (U+FFFD
  that a later token completes away), and through the validator's `_past_stop_string` with its
  decode (`_Decoder`) (`test_defence_first_stop_agrees_with_the_prefix_rule_on_crafted_sequences`).
  For a byte-level tokenizer the watcher's `_whole` fallback is unreachable (the anchor is at a
  whole character of the window, so appending bytes never rewrites the context's text): read, and
  no fuzzed case reached it.
- Every stop list the shipped code makes is within the bound and a tuple: ReAct's two strings, the
  chat agent's input schema (``maxItems`` 4, ``maxLength`` 64 counted in code points as `LLMChat`
  and the trace reader count them, astral characters included), the OpenAI schema
  (`schemas.StopStrings`), `AgentContext.llm.chat`'s ``tuple(stop)``; a trace recording a fifth or a
  65-character string is malformed
  (`test_defence_every_shipped_stop_list_is_within_the_protocols_bound`). (Read: an agent that
  passes ``stop="Observation:"``, a string, gets ``tuple`` of its characters: refused now with a
  ValueError from its own syscall, the same in the replay, never a malformed trace.)
- A validator whose seal cannot be sent (no ether) logs it and goes on retrying; the entry is
  not lost (`test_defence_a_seal_that_cannot_be_sent_never_stalls_the_retries`). `_seal` catches
  every error; `seal_seed_block`'s re-read after a failed seal takes `sealed()` (the ``Sealed``
  event, ``blockNumber`` indexed) or an expired zero as done.
- The threaded shape check (`verifier._shapes`) decodes with the scorer's tokenizer while another
  thread encodes with ``encode_special_tokens`` switched (`Tokenizer._encode`, what a replay's chat
  template does): the `tokenizers` binding holds the GIL in ``decode``/``encode``, so no "Already
  borrowed" and the same texts (`test_defence_threaded_decodes_do_not_race_the_encoders_switch`).
- Known limit (`test_known_limit_the_stop_slack_lets_a_node_withhold_an_answers_last_entries`):
  the new slack lets a node drop up to ``max(1, longest stop's bytes) - 1`` more trailing
  ``logprobs`` entries of a stop-ended answer than before (their bytes folded into an earlier
  entry): the drop-in, without a tokenizer, cannot tell how the bytes split (documented,
  docs/security-parameters.md; test_review_framing6.py).
- Read, not tested: the sample kept with its seed is drawn again when the seed differs, and kept
  when the seed reads as expired later (what was sampled in time stands); a batch already finished
  (e.g. nothing sampled for this validator) is not reopened when a reorg later replaces its seed
  block, and rows the availability path holds for the old sample stay there (claimed, or refused
  `NotSampled` at estimate and retried until the window closes). The seed block is
  ``SEED_DELAY_BLOCKS`` younger than the commit the follower confirmed, so this needs a reorg of
  that depth range only; the integration test covers the pending case
  (tests/integration/test_seed_beacon.py). Under BLOCKHASH each first retry costs an
  ``eth_getLogs`` (`SeedBeacon.sealed`) besides the seal; `_check_finish`'s single decode changed
  one corner: a call that records the empty stop string ``""`` and is not scored now reads as
  ended on a stop string (``"" in ""``); an unscored call has a finding already, and no shipped path
  makes ``""`` (the schemas' ``minLength`` 1).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import TypeAdapter, ValidationError
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.react import STOPS as REACT_STOPS
from supernet.node.kernel.dispatch import _StopWatcher, first_stop, stop_text
from supernet.node.service.schemas import StopStrings
from supernet.sdk.agents.syscalls import LLMChat, Message
from supernet.sdk.chain.anvil import mine
from supernet.sdk.formats.chat_facts import CallFacts, token_logprobs
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import MAX_STOP_CHARS, MAX_STOP_STRINGS, Sampling
from supernet.sdk.openai_compat.answer_facts import _logprobs_problem, least_span
from supernet.sdk.store.cids import encode_dag
from supernet.validator.availability import Availability
from supernet.validator.llm_check import _past_stop_string
from web3 import Web3

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_validator_game import Game, _commit

game = vgame.game  # fixture: real Anvil, the contracts, two embedded stores (`full`, `partial`)

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
needs_tokenizer = pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="SmolLM2 not cached")
WITHHELD = encode_dag({"kind": "a trace only the baited validator is shown", "n": 1})  # `_commit`'s entry 0


@pytest.fixture(scope="module")
def tok() -> Any:
    from supernet.node.llm.tokenizer import Tokenizer

    return Tokenizer(SMOLLM2)


# -- 1. the validator's stop scan: the engine's watcher against the old prefix rule ---------------


def _prefix_rule(tok: Any, ids: list[int], stops: tuple[str, ...]) -> int | None:
    """The rule `first_stop` replaced: the fewest leading tokens whose decode holds a stop string."""
    return next((k for k in range(1, len(ids) + 1) if any(s in stop_text(tok, ids[:k]) for s in stops)), None)


@needs_tokenizer
def test_defence_first_stop_agrees_with_the_prefix_rule_on_crafted_sequences(tok: Any) -> None:
    """A node picks the output tokens and (within the agent's call) nothing else; a hostile user picks
    the stop strings. Crafted: lone bytes of multi-byte characters, tokens whose text alone is
    partial, special tokens (no text under `stop_text`: the watcher's context must reach past them),
    stop strings taken from the end of a prefix's text (a U+FFFD there that the next token may
    complete away). The engine's watcher (`first_stop`), the old prefix rule and the validator's
    `_past_stop_string` (with its `_Decoder`) agree on every one."""
    from supernet.node.llm.tokenizer import _byte_level_bytes

    special = sorted(tok._special_ids)
    assert len(special) == 17
    single = {}
    for i in range(tok.vocab_size):
        if i not in tok._special_ids:
            raw = _byte_level_bytes(tok._pipeline.id_to_token(i))
            if len(raw) == 1 and raw[0] >= 0x80:
                single[raw[0]] = i
    lone = sorted(single.values())
    partial = [i for i in range(17, tok.vocab_size) if "\ufffd" in tok.decode([i], skip_special_tokens=True)]
    assert len(lone) > 100 and partial  # the lone bytes a byte-level vocabulary holds

    def decode(ids: Any) -> str:
        return stop_text(tok, ids)

    rng = random.Random(19)
    stopped = with_fffd = 0
    for _ in range(1500):
        ids: list[int] = []
        for _ in range(rng.randint(3, 30)):
            r = rng.random()
            pool = lone if r < 0.45 else special if r < 0.6 else partial if r < 0.75 else None
            ids.append(rng.choice(pool) if pool else rng.randrange(17, tok.vocab_size))
        text = stop_text(tok, ids[: rng.randint(1, len(ids))])
        stops: list[str] = []
        for _ in range(rng.randint(1, MAX_STOP_STRINGS)):
            if not text:
                stops.append("\ufffd")
                continue
            size = rng.randint(1, min(8, len(text)))
            start = len(text) - size - rng.randint(0, min(2, len(text) - size))
            stops.append(text[start : start + size])
        stops_t = tuple(stops)
        old, new = _prefix_rule(tok, ids, stops_t), first_stop(tok, ids, stops_t)
        assert new == old, (ids, stops_t, old, new)
        stopped += old is not None
        if any("\ufffd" in s for s in stops_t):
            with_fffd += 1
            last_proper = _prefix_rule(tok, ids[:-1], stops_t)
            assert _past_stop_string(ids, stops_t, decode) == last_proper, (ids, stops_t)
    assert stopped > 1400 and with_fffd > 300  # the fuzz reached the cases it is for


# -- 2. the bound on stop strings: every shipped path within it -----------------------------------


def test_defence_every_shipped_stop_list_is_within_the_protocols_bound() -> None:
    """An honest node must never record a call the validator reads as malformed: every stop list the
    shipped code makes passes `LLMChat` and `Sampling.from_dag`, and what the node's schemas accept
    is exactly what the bound allows (characters counted as code points everywhere: a 64-emoji
    string passes all three, a 65-character one none)."""
    import jsonschema

    chat = (Message("user", "hi"),)
    assert LLMChat(chat, stop=tuple(REACT_STOPS)).stop == REACT_STOPS  # ReAct's own list

    astral = "\U0001f600" * MAX_STOP_CHARS  # 64 code points, 256 UTF-8 bytes, 128 UTF-16 units
    at_bound = [astral, "x" * MAX_STOP_CHARS, "a", "\ufffd"]
    over = [[*at_bound, "y"], ["x" * (MAX_STOP_CHARS + 1)]]
    task = {"messages": [{"role": "user", "content": "hi"}], "stop": at_bound}
    jsonschema.validate(task, ChatAgent.input_schema)  # the chat agent (POST /v1/tasks) takes it
    TypeAdapter(StopStrings).validate_python(at_bound)  # the OpenAI route takes it
    assert LLMChat(chat, stop=tuple(at_bound)).stop == tuple(at_bound)  # the agent's call (tuple(stop))
    base = Sampling(
        max_new_tokens=4, temperature=0.0, top_p=1.0, seed=0, stop_token_ids=None, stop=tuple(at_bound)
    )
    assert Sampling.from_dag(base.to_dag(), "p").stop == tuple(at_bound)  # a trace that records it
    for stop in over:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**task, "stop": stop}, ChatAgent.input_schema)
        with pytest.raises(ValidationError):
            TypeAdapter(StopStrings).validate_python(stop)
        with pytest.raises(ValueError, match="stop string"):
            LLMChat(chat, stop=tuple(stop))
        with pytest.raises(FormatError):
            Sampling.from_dag({**base.to_dag(), "stop": stop}, "p")


# -- 3. the seal at the first retry ----------------------------------------------------------------


async def _settle(*_args: object) -> bool:
    return True


def _availability(party: Any, retries: int = 4) -> Availability:
    return Availability(
        party.client,
        party.db,
        party.disputes,
        party.disputes.verifier,
        _settle,
        retries=retries,
        backoff_s=0.01,
    )


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
async def test_defence_data_served_by_the_first_retry_costs_the_validator_no_seal(game: Game) -> None:
    """Was an attack (LOW; FIXED: the validator seals only once an entry's retries are spent and it still
    cannot read it, `Availability._retry`). A node serves entry 0's trace a moment late: the validator's
    first fetch misses it (noted missing), the node puts it up before the first retry. The retry reads it
    and settles its verdict; the seal it sent first was for nothing (the validator paid gas and waited for
    a receipt). A node doing this to every batch makes every sampled validator pay a seal per seed block,
    at no cost or risk to itself. Safe: a validator that can read the entry at its first retry sends no
    transaction."""
    g = game
    batch_id, _, _ = await _commit(g)
    v = g.party(g.actors.validators[1], g.stores["partial"], "v")  # entry 0's trace withheld from it
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    av = _availability(v)
    av.note(batch, 0, "trace withheld")
    await g.stores["partial"].put_block(WITHHELD, "dag-cbor")  # the node serves it, a moment late
    await asyncio.sleep(0.02)
    w3, me = g.chain.w3, g.actors.validators[1].address
    nonce, balance = w3.eth.get_transaction_count(me), w3.eth.get_balance(me)
    await av.step(v.client.timestamp())
    assert [r.status for r in v.db.missing()] == ["fetched"], "the retry read the entry"
    tm = g.chain.task_manager
    sealed = tm.seed_beacon.sealed(tm.seed_block(tm.batch(batch_id)))
    assert w3.eth.get_transaction_count(me) == nonce, (
        f"the validator sent a seal (sealed: {sealed}) for an entry it read at the same retry: "
        f"{balance - w3.eth.get_balance(me)} wei"
    )


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
async def test_known_limit_validators_sealing_one_seed_block_in_one_block_each_pay(
    game: Game,
) -> None:
    """Known limit (was reported LOW). Two validators sampled for a batch whose entry 0 the node
    withholds spend their retries together (as on a chain with 12 s blocks: both seals wait in the
    mempool). Both find the seed block unsealed and send; the second mined reverts
    `BlockAlreadySealed`, its gas (~40k) paid: "one seal per seed block" is the first validator's
    only when the others see it mined. Bounded: at most one reverted seal per racing validator and
    seed block, only once a node withholds data past the retries (data served within them costs no
    seal), and nothing stalls (`seal_seed_block` reads the chain after a failed seal)."""
    g = game
    batch_id, _, _ = await _commit(g)
    parties = [g.party(g.actors.validators[i], g.stores["partial"], f"v{i}") for i in (1, 2)]
    avs = []
    for p in parties:
        p.follower.catch_up()
        batch = p.db.batch(batch_id)
        assert batch is not None
        avs.append(_availability(p, retries=1))  # spent at the first retry: the seal is due
        avs[-1].note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    w3 = g.chain.w3
    side = Web3(Web3.HTTPProvider(w3.provider.endpoint_uri))  # type: ignore[attr-defined]
    who = [p.account.address for p in parties]
    nonces = [w3.eth.get_transaction_count(a) for a in who]
    first = int(w3.eth.block_number) + 1
    done = threading.Event()

    def miner() -> None:  # mine once both seals wait (or after 10 s), then automine again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not done.is_set():
            pending = [side.eth.get_transaction_count(a, "pending") for a in who]
            if all(p > n for p, n in zip(pending, nonces, strict=True)):
                break
            time.sleep(0.05)
        side.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        side.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]

    side.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    worker = threading.Thread(target=miner, daemon=True)
    worker.start()
    try:
        now = parties[0].client.timestamp()
        await asyncio.gather(*(av.step(now) for av in avs))
    finally:
        done.set()
        worker.join(15)
        side.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    tm = g.chain.task_manager
    beacon = tm.seed_beacon
    assert beacon.sealed(tm.seed_block(tm.batch(batch_id))), "sealed"
    seals = [
        w3.eth.get_transaction_receipt(tx["hash"])["status"]
        for n in range(first, int(w3.eth.block_number) + 1)
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]
        if tx["from"] in who and tx["to"] == beacon.address
    ]
    assert sorted(seals) in ([1], [0, 1]), seals  # the limit: at most one reverted seal beside the one
    for p, av in zip(parties, avs, strict=True):
        # nothing stalled: each went on to the claim (its own, or the other's followed); a claim
        # mined in the same block as the other's reverts and is deferred: the next step follows it
        rows = p.db.missing()
        if [r.status for r in rows] == ["retrying"]:
            await av.step(max(r.next_try for r in rows) + 1)
        assert [r.status for r in p.db.missing()] == ["challenged"], p.db.missing()


@pytest.mark.anvil
@pytest.mark.asyncio(loop_scope="session")
async def test_defence_a_seal_that_cannot_be_sent_never_stalls_the_retries(game: Game) -> None:
    """A validator whose account cannot pay for the seal (no ether): the failure is logged, the
    retry goes on and the entry stays in the availability path; a second validator then seals."""
    g = game
    batch_id, _, _ = await _commit(g)
    poor = g.party(Account.create(), g.stores["partial"], "poor")
    poor.follower.catch_up()
    batch = poor.db.batch(batch_id)
    assert batch is not None
    av = _availability(poor, retries=1)  # spent at the first retry: the seal is due
    av.note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    await av.step(poor.client.timestamp())
    assert [r.status for r in poor.db.missing()] == ["retrying"], "deferred (no ether for its claim either)"
    tm = g.chain.task_manager
    number = tm.seed_block(tm.batch(batch_id))
    assert not tm.seed_beacon.sealed(number)
    mine(g.chain.w3, 1)
    rich = g.party(g.actors.validators[2], g.stores["partial"], "rich")
    rich.follower.catch_up()
    row = rich.db.batch(batch_id)
    assert row is not None
    av2 = _availability(rich, retries=1)
    av2.note(row, 0, "trace withheld")
    await asyncio.sleep(0.02)
    await av2.step(rich.client.timestamp())
    assert tm.seed_beacon.sealed(number)


# -- 4. the drop-in's slack after a stop call -------------------------------------------------------


def _honest_answer(tok: Any, ids: list[int], stop: str) -> tuple[CallFacts, str, list[dict[str, Any]]]:
    """What the node's kernel records for a ``stop`` call ending on ``stop`` (its watcher's cut text)
    and the ``logprobs`` entries its answer carries (`token_logprobs`, the node's rule)."""
    assert first_stop(tok, ids, (stop,)) == len(ids), "the engine's watcher ends the call on the last token"
    output = _StopWatcher(tok, (stop,), lambda _i, _t: None).final_text(tuple(ids))
    logprobs = tuple(-0.25 * (i + 1) for i in range(len(ids)))
    facts = CallFacts(5, len(ids), "stop", (1, 2, 3, 4, 5), tuple(ids), logprobs)
    return facts, output, token_logprobs(tok, facts, output)


@needs_tokenizer
def test_defence_a_special_token_before_the_stop_string_passes_an_honest_answer_with_logprobs(
    tok: Any,
) -> None:
    """Was an attack (LOW, FIXED: the node's rule, `chat_facts.spanned`, now also spans the text-free tokens
    right after a cut answer, an empty entry each, so that every token left after it holds a byte of the
    stop string, as `least_span` counts). An honest sampled call: ``Paris``, then ``<|endoftext|>`` (id 0:
    not SmolLM2's stop token, so the engine goes on; `stop_text` skips it), then ``\\n``, the signed stop
    string, which ends the call. The kernel records ``Paris``; the node's answer carried one logprobs
    entry (the token holding ``Paris``), and the drop-in, which allows after the answer ``max(1, 1 byte)``
    = 1 token wanted two: the honest answer was refused as a lie. (Crafted ids: the node's engine draws
    any id under sampling; a hostile user searches seeds for one such draw.)"""
    ids = [*tok.encode("Paris"), 0, *tok.encode("\n")]
    assert len(ids) == 3 and stop_text(tok, ids) == "Paris\n"
    facts, output, entries = _honest_answer(tok, ids, "\n")
    assert output == "Paris" and [(e["token"], e["bytes"]) for e in entries] == [
        ("Paris", list(b"Paris")),
        ("", []),
    ]
    control_ids = [*tok.encode("Paris"), *tok.encode("\n")]  # no special token: it passes
    c_facts, c_output, c_entries = _honest_answer(tok, control_ids, "\n")
    assert _logprobs_problem(c_facts, c_output, c_output, [{"content": c_entries}], ["\n"]) is None
    problem = _logprobs_problem(facts, output, output, [{"content": entries}], ["\n"])
    least = least_span(facts, output, output, ["\n"])
    assert problem is None, f"the drop-in refuses the honest answer: {problem} (least_span {least})"


@needs_tokenizer
def test_known_limit_the_stop_slack_lets_a_node_withhold_an_answers_last_entries(tok: Any) -> None:
    """By design (documented known limit): the drop-in has no tokenizer, so it cannot tell how an
    answer's bytes split over tokens. With a signed stop string of L bytes it allows up to
    ``max(1, L)`` tokens after the answer, so a node may fold the bytes of the answer's last
    ``L - 1`` tokens into an earlier entry and drop their entries (their logprobs go unreported),
    and still pass: a weaker report, never a false logprob (each entry's value is the trace's)."""
    stop = "\n\nUser:"  # 7 bytes
    ids = [*tok.encode("The capital of France is Paris, a city"), *tok.encode(stop)]
    facts, output, entries = _honest_answer(tok, ids, stop)
    assert _logprobs_problem(facts, output, output, [{"content": entries}], [stop]) is None
    least = least_span(facts, output, output, [stop])
    assert least < len(entries)
    kept = entries[:least]
    folded = bytes(kept[-1]["bytes"]) + b"".join(bytes(e["bytes"]) for e in entries[least:])
    kept[-1] = {**kept[-1], "bytes": list(folded), "token": folded.decode("utf-8", "replace")}
    assert _logprobs_problem(facts, output, output, [{"content": kept}], [stop]) is None


# -- 5. the threaded shape check and the tokenizer -------------------------------------------------


@needs_tokenizer
def test_defence_threaded_decodes_do_not_race_the_encoders_switch(tok: Any) -> None:
    """`verifier._shapes` now decodes in a worker thread while the replay of another receipt may
    render a chat template (`Tokenizer._encode`: ``encode_special_tokens`` switched on the shared
    pipeline under a lock that decodes do not take). Two decoding threads (the watcher's window
    decodes and a whole decode) beside an encoding one for 2 s: no error, the same texts."""
    ids = tok.encode("\u2014" + "=" * (64 * 400))[:400]
    want = (stop_text(tok, ids), first_stop(tok, ids[:200], ("\ufffd\ufffd",)))
    errors: list[str] = []
    done = threading.Event()

    def decoding() -> None:
        while not done.is_set():
            try:
                got = (stop_text(tok, ids), first_stop(tok, ids[:200], ("\ufffd\ufffd",)))
                if got != want:
                    errors.append("another text")
            except Exception as exc:  # recorded for the assertion below
                errors.append(repr(exc))

    def encoding() -> None:
        while not done.is_set():
            try:
                tok.apply_chat_template([{"role": "user", "content": "hi <|im_start|> there " * 20}])
            except Exception as exc:  # recorded for the assertion below
                errors.append(repr(exc))

    threads = [threading.Thread(target=f, daemon=True) for f in (decoding, decoding, encoding)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    done.set()
    for t in threads:
        t.join(10)
    assert not errors, errors[:3]
