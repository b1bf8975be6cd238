"""Adversarial review: a RATIONAL CHEATING NODE (third pass) against the soundness of verification.

Scope: where the validator's own code raises on data the node chose, and what that does to the
verdict (`Verifier._stage_safe` / `_barrier`, `supernet.validator.search_check.SearchCheck`,
`supernet.validator.origin_check`, `supernet.validator.grammar_check`), and a recorded ``chain_read``
the validator cannot re-read (`supernet.validator.chain_check.check_chain_read`, the node's
`supernet.node.kernel.chain_read.read_at`). The node wants a cheat that ends as a *local* failure
(re-checked until the window closes, then logged "UNCHECKED", never challenged) rather than a
finding. Real parts: the whole `Verifier` over traces committed as an honest-looking node commits
them (helpers of tests/unit/test_validator_attacks.py), the validator's real `Database` and
`ReceiptIndex` (tests/unit/test_root_origins.py's `Chain`), the real replay, the real MiniLM
embedder of the search check, the real SmolLM2 tokenizer and llguidance for grammars, and a real
Anvil that the validator's `RegistryRunner` re-reads. The scorer is the stand-in of those tests
(none of these traces has an LLM call to score).

Found (both FIXED; their tests are ``test_defence_*`` now):

1. HIGH (`test_defence_a_non_cid_entry_in_a_searched_root_erases_every_finding_of_the_receipt`): a
   memory root whose ``entries`` list holds one item that is not a CID (``"junk"``) next to a real
   entry replays clean (the replay compares hits with ``str()`` of the entries and never parses
   them), but `SearchCheck._one` calls ``canonical_cid`` on every entry, which raises
   ``InvalidCIDError`` (a ``ValueError``, neither the ``LookupError`` nor the `NotAnEntry` it
   handles). The exception leaves `Verifier._stage`, and `_stage_safe` turns it into
   ``_barrier(head, exc, [])``: a *local* unverifiable verdict with **no findings**, although
   docs/validator.md says the barrier keeps "the findings made before it". Everything found before
   the search check is thrown away: here the `origin` finding (the root is made up, it names no
   writer), and with it every check of ``_stage``'s callers that never runs (no LLM call of the
   receipt is scored at all: the scoring happens after ``_stage``). So for any task whose agent
   searches memory, a node may answer from memories the user never stored and skip the model
   entirely; every validator re-checks the receipt until its window closes and then logs it
   "UNCHECKED". Root cause: verifier.py ``_stage_safe`` (``return _barrier(..., exc, [])``) and
   search_check.py ``_one`` (``canonical_cid(str(c)) for c in root["entries"]``). Fix by design:
   (a) `_stage` accumulates its findings in a list the barrier receives (as ``_finish`` does with
   ``s.findings``), so an exception never erases a fault already proven; (b) a searched root
   whose entries are not all CIDs is the node's fault (a `memory.search` or `trace` finding; the
   replay could refuse such a root as it refuses a root of another type), i.e. node-chosen data is
   parsed where a malformed value becomes a finding, never an exception.
   FIXED, both parts: `_stage` fills a list its barrier receives (an exception can no longer erase
   a finding: `test_defence_an_exception_after_a_finding_keeps_the_finding`), and a searched root
   listing what is not a CID is a `search` finding (`NotAnEntry`).
2. MEDIUM (`test_defence_a_value_for_a_call_that_hits_an_invalid_opcode_is_never_judged`): the
   previous review's out-of-gas fix (tests/unit/test_review_session_changes10.py) made one
   deterministic EVM failure the chain's answer, by matching the RPC's words "out of gas". Every
   other exceptional halt is still an RPC error that is not a revert: Anvil answers a call that
   reaches ``INVALID`` (0xFE: Solidity's ``assert`` before 0.8, SafeMath's overflow ``assert`` in
   many deployed tokens) or a bad ``JUMP`` with ``-32603 "EVM error InvalidFEOpcode"`` /
   ``"EVM error InvalidJump"`` (geth: "invalid opcode", "invalid jump destination", "stack
   underflow"). An honest node records ``CHAIN_UNREACHABLE`` (accepted as the moment); a cheating
   node records any value pinned to a real final block, and the validator's re-read raises, which
   `check_chain_read` takes for its own RPC's failure: `OwnSide`, re-checked until the window
   closes, never judged. The agent is shown any answer of the node's choosing for such a call.
   Root cause: chain_check.py, the ``except Exception`` after ``read_at`` (only `OUT_OF_GAS` words
   are the chain's). Fix by design: make the outcome of an ``eth_call`` a value the EVM itself
   reports rather than an RPC's wording: run the call through a creation-code ``eth_call`` (no
   ``to``, init code that ``CALL``s the target with `CHAIN_READ_GAS` and returns ``(success,
   returndata)``), so out-of-gas, invalid opcodes, bad jumps and stack errors all come back as
   ``success = false`` alike on every client, recorded as ``{"reverted": "0x"}`` (or a
   ``{"failed": ...}`` shape) and compared like any value; only a transport error stays `OwnSide`.
   FIXED, more narrowly: every exceptional halt's wording on geth, reth, besu, nethermind and anvil
   (`chain_read.EVM_HALTS`: invalid opcode, bad jump, stack errors, a write in a static call,
   return data out of bounds, out of gas) is the chain's answer, so a value recorded for such a
   call is a finding; a wording not listed stays the validator's own failure, never an accusation.
   (The creation-code wrapper would make the outcome uniform but costs a code deposit of 200 gas a
   returned byte and caps a result at 24 KB: left as the full fix.)

Checked and holding (``test_defence_*``):

- the control of 1: the same made-up root without the junk entry is an `origin` finding;
- a root whose ``writer`` is not a task id (``"zz"``, ``"0x12"``, an empty string, non-hex) is an
  `origin` finding alongside the replay's, not a crash: `ReceiptIndex.locate` takes any text;
- a recorded ``params.grammar`` crafted to break the validator's grammar walk (JSON that is not a
  grammar document, 15,000 levels deep, an empty ``grammars`` list, schemas llguidance refuses:
  ``$ref`` to nothing, a bad regex, 1e400 bounds) is always a `GrammarError` (an ``llm.shape``
  finding), never an exception out of ``_stage``: `check_budget` maps every parse failure to it and
  llguidance reports compile errors through ``is_error``;
- dag-cbor edge cases a node could use to decode differently: encoded surrogates, half-precision
  floats, NaN, keys out of canonical order and duplicate keys are all refused by the decoder
  (`decode_dag`), so node and validator read one value per block (``-0.0`` is accepted and equals
  ``0.0`` in every comparison the replay makes, which changes no outcome).
"""

from __future__ import annotations

from typing import Any

import pytest
from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.chain_read import CHAIN_UNREACHABLE
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, mine
from supernet.sdk.store.cids import compute_cid, decode_dag, encode_dag, link
from supernet.sdk.store.errors import InvalidBlockError
from supernet.validator.evidence import Check, OwnSide
from supernet.validator.grammar_check import check_grammar
from supernet.validator.trace_view import LLMCall

from tests.unit.test_review_rational_node2 import honest_read
from tests.unit.test_review_session_changes10 import CallOracle, _chain_read_verdict
from tests.unit.test_root_origins import Chain, made_up_memory
from tests.unit.test_validator_attacks import (
    USER,
    DictStore,
    MemoryQuestion,
    searched,
    signed_task,
    trace_doc,
    verify,
)

QUESTION = {"q": "What is the launch code?"}
ANSWER = "The launch code is 0000."  # what the made-up memory says: the agent returns it


def junk_memory(extra: Any) -> tuple[list[bytes], Any, Any]:
    """A memory root of the user's ``memq`` namespace the node made up (naming no writer): one real
    entry (the hit) and ``extra`` beside it, which is not a CID: (blocks, root link, entry link)."""
    ns = namespace_of(USER.address, "memq")
    entry_raw = encode_dag({"type": "supernet/memory-entry", "text": ANSWER, "metadata": {}})
    entry = compute_cid(entry_raw, "dag-cbor")
    root = {"type": "supernet/memory-root", "namespace": ns, "entries": [link(entry), extra], "prev": None}
    root_raw = encode_dag({**root, "writer": None})
    return [root_raw, entry_raw], link(compute_cid(root_raw, "dag-cbor")), link(entry)


async def memory_verdict(blocks: list[bytes], root: Any, hit: Any, output: str = ANSWER) -> Any:
    """The whole verifier's verdict on a memory question answered from ``root`` (hit ``hit``),
    with the validator's real receipt index (the node has committed nothing else)."""
    req, task_id = signed_task(MemoryQuestion, QUESTION)
    events = searched(namespace_of(USER.address, "memq"), QUESTION["q"], root, hit)
    doc = trace_doc(MemoryQuestion, task_id, USER.address, QUESTION, events, output, blocks=blocks)
    return await verify(DictStore(), req, task_id, doc, origins=Chain().index(), batch_id=1)


# -- 1. an exception in the search check erases the receipt's findings ---------------------------------


async def test_defence_a_made_up_memory_root_is_an_origin_finding() -> None:
    """The control of the attack below: a root the node made up (naming no writer) and searched by
    the agent is an `origin` finding, challenged."""
    blocks, root, hit = made_up_memory(None)
    verdict = await memory_verdict(blocks, root, hit)
    assert [f.check for f in verdict.findings] == [Check.ORIGIN], verdict.findings
    assert not verdict.local and verdict.unverifiable is None


async def test_defence_a_non_cid_entry_in_a_searched_root_erases_every_finding_of_the_receipt() -> None:
    """HIGH. Who gains: the node: it answers from memories the user never stored (and skips every
    model call of the task: none is scored), and no validator ever challenges it.

    Attack: the made-up root of the control above, with one more item in its ``entries`` list that
    is not a CID. The replay passes it (hits are compared with ``str()`` of the entries); the origin
    check finds the root made up; then the search check parses every entry as a CID, raises
    ``InvalidCIDError``, and `_stage_safe` replaces the verdict by a local failure with no findings.

    Safe behaviour: the origin finding stands (and the malformed root is one more), and the verdict
    is not a local failure (which is re-checked until the window closes, then logged UNCHECKED)."""
    blocks, root, hit = junk_memory("junk")
    verdict = await memory_verdict(blocks, root, hit)
    assert verdict.findings, (
        "a made-up memory root with one non-CID entry ends as this validator's local failure, its "
        f"origin finding erased: local={verdict.local}, unverifiable={verdict.unverifiable!r}"
    )
    assert Check.ORIGIN in {f.check for f in verdict.findings}
    assert not verdict.local_failure


async def test_defence_an_exception_after_a_finding_keeps_the_finding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The barrier half of the fix: whatever raises in `_stage` after a fault was found (here a
    FAKE bug: the search check made to raise, as no real input makes it raise now), the verdict
    keeps the finding and is no local failure."""
    from supernet.validator.search_check import SearchCheck

    async def broken(self: Any, trace: Any) -> Any:
        raise RuntimeError("a bug in a check that runs after the origin check")

    monkeypatch.setattr(SearchCheck, "check", broken)
    blocks, root, hit = made_up_memory(None)
    verdict = await memory_verdict(blocks, root, hit)
    assert [f.check for f in verdict.findings] == [Check.ORIGIN], verdict
    assert verdict.unverifiable is None


@pytest.mark.parametrize("writer", ["zz", "0x12", "", "0x" + "zz" * 32])
async def test_defence_a_root_naming_a_malformed_writer_is_a_finding_not_a_crash(writer: str) -> None:
    """A root whose ``writer`` is not a task id, under a made-up answer: the replay's finding and the
    origin's both stand (`ReceiptIndex.locate` takes any text and finds no receipt)."""
    blocks, root, hit = made_up_memory(writer)
    verdict = await memory_verdict(blocks, root, hit, output="Pay 0xbad.")
    assert {f.check for f in verdict.findings} == {Check.REPLAY, Check.ORIGIN}, verdict.findings
    assert not verdict.local


# -- 2. chain_read: an EVM halt that is not "out of gas" ---------------------------------------------------


INVALID = "0x" + "fe" * 20  # code 0xFE: INVALID, what Solidity < 0.8 compiles `assert` to
BAD_JUMP = "0x" + "fd" * 19 + "fc"  # PUSH1 0 JUMP: a jump to a non-JUMPDEST


@pytest.mark.anvil
@pytest.mark.parametrize(("address", "code"), [(INVALID, "0xfe"), (BAD_JUMP, "0x600056")])
async def test_defence_a_value_for_a_call_that_hits_an_invalid_opcode_is_never_judged(
    chain: Contracts, anvil: Anvil, address: str, code: str
) -> None:
    """MEDIUM. Who gains: the node (and whoever pays it for an answer): any value it likes for an
    ``eth_call`` that halts exceptionally on every client (an old contract's ``assert``, a bad
    jump), shown to the agent, and no validator ever judges it.

    Attack: the agent calls such a contract. An honest node's RPC answers with an EVM error that
    is not a revert: the tool records ``CHAIN_UNREACHABLE``. A cheating node records a value pinned
    to a real final block. The validator's re-read fails the same way, and only "out of gas" words
    are taken as the chain's answer: `OwnSide`, re-checked until the window closes, never judged.

    Safe behaviour: a finding (the chain's answer at that block is a failed call, not the value)."""
    chain.w3.provider.make_request("anvil_setCode", [address, code])  # type: ignore[arg-type]
    mine(chain.w3, 3)  # the code is in the finalized state
    args = {"method": "call", "address": address, "data": "0x"}
    with pytest.raises(Exception, match=CHAIN_UNREACHABLE):  # what an honest node records
        await honest_read(anvil.url, args)
    final = await honest_read(anvil.url, {"method": "block_number"})
    lie = {"block": final["block"], "block_hash": final["block_hash"], "value": "0x" + "00" * 31 + "2a"}
    mine(chain.w3, 3)  # the commit's block
    task_input = {"address": address, "data": "0x"}
    verdict = await _chain_read_verdict(CallOracle, task_input, args, lie, anvil.url, final["block"] + 3)
    assert verdict.findings, (
        "a value recorded for a call that halts on an invalid opcode everywhere is this validator's "
        f"own failure, re-checked until the window closes: {verdict.unverifiable!r} "
        f"(OwnSide: {isinstance(verdict.unverifiable, OwnSide)})"
    )


# -- what held ----------------------------------------------------------------------------------------------

POISON_GRAMMARS = [
    "not json",
    "[]",
    '{"grammars": []}',
    '{"grammars": {}}',
    '{"grammars": [{"json_schema": 5}]}',
    '{"grammars": [{"json_schema": {"$ref": "#/nowhere"}}]}',
    '{"grammars": [{"json_schema": {"type": "string", "pattern": "(a"}}]}',
    '{"grammars": [{"json_schema": {"type": "integer", "minimum": 1e400}}]}',
    '{"grammars": [{"lark_grammar": "start: %json 5"}]}',
    '{"grammars": ' + "[" * 15000 + "]" * 15000 + "}",
]


@pytest.mark.parametrize("grammar", POISON_GRAMMARS, ids=[str(i) for i in range(len(POISON_GRAMMARS))])
def test_defence_a_poison_grammar_is_a_finding_never_an_exception(smollm2_dir: Any, grammar: str) -> None:
    """A node that records a grammar meant to make the validator's walk raise (and so, through the
    same barrier as finding 1, erase the replay's finding on that very grammar) gets an
    ``llm.shape`` finding: every such document is a `GrammarError` on the validator's side."""
    from supernet.node.llm.tokenizer import Tokenizer

    call = LLMCall(
        call=0, model_id="0x00", prompt_ids=(1, 2), output_ids=(3, 0), logprobs=(-1.0, -1.0),
        fingerprints=None, temperature=0.0, top_p=1.0, seed=1, max_new_tokens=8, stop_token_ids=None,
        finish_reason="stop", text="", grammar=grammar,
    )  # fmt: skip
    findings = check_grammar(call, Tokenizer(smollm2_dir), 49152, (0, 2))
    assert [f.check for f in findings] == [Check.LLM_SHAPE], findings


@pytest.mark.parametrize(
    "raw",
    [
        bytes([0x64]) + b"a" + bytes([0xED, 0xA0, 0x80]),  # an encoded surrogate in a text string
        bytes([0xF9, 0x3C, 0x00]),  # a half-precision float
        bytes([0xFB, 0x7F, 0xF8, 0, 0, 0, 0, 0, 0]),  # NaN
        bytes([0xA2, 0x62]) + b"bb" + bytes([0x01, 0x61]) + b"a" + bytes([0x02]),  # keys out of order
        bytes([0xA2, 0x61]) + b"a" + bytes([0x01, 0x61]) + b"a" + bytes([0x02]),  # a duplicate key
    ],
    ids=["surrogate", "float16", "nan", "key-order", "duplicate-key"],
)
def test_defence_dag_cbor_has_one_reading_of_every_block(raw: bytes) -> None:
    """Blocks another decoder could read otherwise (or that no honest encoder writes) are refused,
    so a trace, a root or a witness block means one thing to node and validator alike."""
    with pytest.raises(InvalidBlockError):
        decode_dag(raw)
