"""Adversarial review 6 of framing an HONEST node, aimed at what was added since the earlier ones
(tests/unit/test_review_framing.py, test_review_framing4.py, test_review_framing_honest_node.py,
test_review_framing_llm.py, test_review_hostile_user.py): the OpenAI drop-in's check of an
answer's ``finish_reason`` / ``usage`` / ``logprobs`` against the trace
(`supernet.sdk.formats.chat_facts`, `supernet.sdk.openai_compat.answer_facts`), the node's
logprobs built from `Tokenizer.token_bytes`, stop strings and non-ASCII / emoji / invalid-UTF-8
token boundaries, structured output and tool calls.

Scope: a hostile user (alone, or with one validator) who crafts what it signs (the prompt, stop
lists, ``logprobs``, ``max_completion_tokens`` 1, temperature and ``top_p`` near 0, grammars, tools)
so that an honest node's correct answer fails the user's own verification (the drop-in refuses it
as a node's lie: ``AnswerMismatchError``, recorded ``answer_mismatch``), or looks like fraud to a
validator.

Real parts: the node's real service app (``POST /v1/chat/completions``, `routes_chat`,
`chat_result`) on a real `KernelExecutor` over the real `Kernel`, the real SmolLM2-135M engine
and the real embedded content store (in process); the official ``openai`` client (AsyncOpenAI) on
the real `SupernetAuth`, which reads each answer's trace from the node's advertised store and runs
`answer_facts` on it; for the validator side, the whole real `Verifier` with a float32
`ModelScorer` (`tests.integration.test_user_framing_attacks.honest_verdict`). FAKES, named: the
node's chain is `tests.node_fixtures.FakeChain` (deposits in a dict) and the drop-in's signing rule
is `AnyModel` (a chain's `SigningRule` would refuse a model no validator quorum registered on a
devnet this test does not build). Neither takes part in what is checked here: the facts check reads
no chain, and Anvil adds nothing to it but start-up time.

Found:

1. MEDIUM: a stop string that starts on a token boundary and spans two or more tokens makes
   every honest answer that asks for ``logprobs`` fail the drop-in's check, as a node that "states
   what its trace does not"
   (`test_attack_a_stop_string_over_two_tokens_fails_an_honest_answer_with_logprobs`, now
   `test_defence_a_stop_string_over_two_tokens_passes_an_honest_answer_with_logprobs`).
   FIXED as proposed: `least_span` takes the signed stop strings and leaves room after the answer
   for the end-of-turn token or the longest one's bytes (a token each at most); the entries'
   bytes still spell the answer. The slack this gives a node (withholding the last entries of a
   stop-string-ended answer by crediting their bytes to earlier ones) is part of the documented
   known limit on how the bytes are split (docs/security-parameters.md).
   `answer_facts.least_span` wants at least ``n - 1 - (len(output) - len(content))`` entries (n:
   the call's recorded tokens): it assumes ``output`` is the call's whole text with the stop string
   still in it, and that the last token is the end-of-turn token. The real kernel cuts the output
   at the first stop string itself (`dispatch._StopWatcher.final_text`: the LLM event's ``text``
   and the chat agent's output, which the receipt commits), and the call ends on the token that
   completes the stop string, not on the end-of-turn token. So the drop-in sees no cut bytes and
   still takes one token off: any stop string whose text lies in two tokens after the answer's last
   byte leaves the honest node one entry short. "What is the capital of France?" with
   ``stop=[" is Paris"]`` (greedy: "The capital of France| is| Paris"): 4 honest entries, 5
   required; ``stop=["The capital"]``: the answer is "" and 0 entries, 1 required. Plain and
   streamed answers alike (the stream raises at its end, after showing the text). ``"\\nUser:"``,
   ``"\\n\\n###"``, a name of two tokens: ordinary stop lists do this. Who is harmed: the honest
   node (its paid answer is refused by its user's client and recorded ``answer_mismatch``, the
   error text calling it a lie, so a user concludes it cheats and routes away) and every honest
   user of ``stop`` + ``logprobs`` (the answer is paid for and never handed over; the record keeps
   no promise, so not even an omission claim is left). A hostile user gets a reproducible "proof"
   that an honest node lies. The validators clear the same receipt
   (`test_defence_the_validators_clear_the_receipt_the_drop_in_refuses`): no slash, no refund.
   Why the earlier reviews missed it: tests/unit/test_openai_answer_facts.py and
   tests/integration/test_review_openai_gateway3.py build traces whose output still holds the
   stop string (the FAKE executor; ``content = output.split(stop[0])[0]``), a shape the real kernel
   never commits; the end-to-end tests with the real model (tests/integration/test_openai_client.py)
   never combine ``stop`` and ``logprobs``. `chat_result`'s docstring ("the chat agent does not pass
   them to the model yet") is stale the same way.
   Fix (by design): size the slack by what can follow the answer, not by a cut the drop-in cannot
   see. After the answer's last byte a call holds either the end-of-turn token alone or the tokens
   of the stop string that ended it, each token at least one of its bytes; so where the signed
   input has stop strings, ``least = n - max(1, max(len(s.encode()) for s in stops))``, and
   ``n - 1`` for a ``stop`` call without them (the entries' ``bytes`` must still spell the answer,
   which pins every entry up to its end). Or record in the LLM event whether a stop string ended
   the call (its ``params.stop_token_ids`` is null: the engine's default end-of-turn id, which the
   tokenizer-less drop-in cannot tell apart). Add an end-to-end test of ``stop`` + ``logprobs`` on
   the real kernel.

Checked and holding:

- Non-ASCII and invalid UTF-8 at the answer's edges: CJK and emoji split over byte-level tokens,
  an answer cut inside an emoji by ``max_completion_tokens`` 1 (it ends in U+FFFD), a stop string
  that is U+FFFD itself (the watcher stops on the half character, the kernel cuts before it), stop
  strings that are a CJK character or an emoji the model never completes, temperature and
  ``top_p`` of 1e-9 (greedy on both sides), temperature 2 with a seed: the node's entries (each
  its token's own bytes) pass the drop-in, plain and streamed
  (`test_defence_non_ascii_edges_and_sampling_limits_pass_the_drop_in`).
- Structured output and tool calls with ``logprobs``: a ``json_object`` answer, one with a stop
  string the grammar never lets the model emit, a ``required`` tool call cut by the token limit
  (text, ``length``), an ``auto`` tool chat answered in text with a stop string
  (`test_defence_grammars_and_tool_calls_with_logprobs_pass_the_drop_in`).
- A stop string that starts inside the token holding the answer's last byte (``"France is"``:
  " France" holds the space the answer ends with), or lies in one token: the one-token slack
  covers it (in the attack test's control).
- The validator's side of a stop-cut answer: the honest receipt verifies with no finding
  (the defence test above), so finding 1 costs the node its user's trust, not its stake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from eth_account import Account
from supernet.node.agents.chat import ChatAgent
from supernet.node.kernel.kernel import Kernel
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.runner import NodeService
from supernet.sdk.client.answer import AnswerMismatchError
from supernet.sdk.client.state import ClientState
from supernet.sdk.openai_compat import SupernetAuth
from supernet.sdk.store.embedded import in_process_client

from tests.integration.test_user_framing_attacks import describe, honest_verdict, llm_events, registry
from tests.node_fixtures import FakeChain
from tests.unit.test_validator_attacks3 import NoEmbedder

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
pytestmark = [
    pytest.mark.model,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (SMOLLM2 / "model.safetensors").exists(), reason="SmolLM2 not cached"),
]

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = "The capital of France is Paris."  # SmolLM2's greedy answer: The| capital| of| France| is| Paris|.


@pytest.fixture(scope="module")
def engine() -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(SMOLLM2)


class AnyModel:
    """FAKE signing rule (`supernet.sdk.client.signable.Signable`): no chain registry here."""

    def check(self, node: str, model_id: str, agent_hashes: Any) -> None:
        return None


class Drop:
    """The user's drop-in (the official async client on `SupernetAuth`) on an honest node."""

    def __init__(self, ai: openai.AsyncOpenAI, state: Path) -> None:
        self.ai, self.state = ai, state
        self.model = ""

    async def ask(self, content: str | list[dict[str, Any]], **kw: Any) -> tuple[str | None, Any]:
        """The answer's text and its message (plain) or None (streamed); raises what the drop-in
        raises."""
        messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
        if not kw.get("stream"):
            reply = await self.ai.chat.completions.create(model=self.model, messages=messages, **kw)
            return reply.choices[0].message.content, reply.choices[0]
        stream = await self.ai.chat.completions.create(model=self.model, messages=messages, **kw)
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text, None

    def statuses(self) -> list[str]:
        return sorted(r.status for r in ClientState.open(self.state).tasks.values())


@pytest_asyncio.fixture
async def drop(engine: Any, tmp_path: Path) -> AsyncIterator[Drop]:
    """An honest node in process (real kernel, engine and store; FAKE chain) and its user's drop-in,
    which reads each answer's trace from the node's advertised store (over the node's app)."""
    store = in_process_client(tmp_path / "store")
    kernel = Kernel(engine, store, None, embedder=NoEmbedder(), agents=registry())
    await kernel.setup()
    chain = FakeChain()
    user = Account.create()
    chain.deposits[user.address] = 10**18
    cfg = NodeSettings.load(None, data_dir=tmp_path / "node", batch={"max_size": 1, "max_age_s": 0.2})
    service = NodeService(cfg, KernelExecutor(kernel, "smollm2", 10**9), load_account(cfg), store, chain)
    await service.setup()
    state = tmp_path / "user"
    signer = SupernetAuth(
        user,
        chain.domain,
        rule=AnyModel(),
        state_dir=state,
        store_transport=httpx.ASGITransport(app=service.app),
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), auth=signer, timeout=60)
    ai = openai.AsyncOpenAI(base_url="http://node/v1", api_key="-", http_client=http, max_retries=0)
    d = Drop(ai, state)
    d.model = (await ai.models.list()).data[0].id
    try:
        yield d
    finally:
        await http.aclose()
        await service.cleanup()
        await kernel.stop()
        await store.aclose()


async def _outcome(drop: Drop, content: Any, **kw: Any) -> tuple[str | None, Any] | Exception:
    try:
        return await drop.ask(content, **kw)
    except Exception as exc:  # what the drop-in raised on the honest answer
        return exc


# -- 1. a stop string over two tokens + logprobs: an honest answer refused as a lie --------------------


async def test_defence_a_stop_string_over_two_tokens_passes_an_honest_answer_with_logprobs(
    drop: Drop,
) -> None:
    """Was an attack (FIXED, see the module): the user signs ``stop`` strings that begin on a token boundary
    of the model's answer and span two tokens (``" is Paris"``, ``"The capital"``), with ``logprobs:
    true``. The honest node stops on the token completing the stop string, the kernel cuts the output
    before it, and the node reports one entry per token the answer spans (its bytes spell the answer). The
    drop-in required one entry more (`answer_facts.least_span`: ``n - 1``, the cut bytes it cannot see
    counted as 0) and raised `AnswerMismatchError` ("the answer states what its trace does not"), plain
    and streamed. Safe behaviour asserted: the honest answers are handed over."""
    control, _ = await drop.ask(FRANCE, max_completion_tokens=12, logprobs=True)
    assert control == GREEDY  # the model's greedy answer, as the attack relies on
    one_token, _ = await drop.ask(FRANCE, max_completion_tokens=12, logprobs=True, stop=["France is"])
    assert one_token == "The capital of "  # starts inside " France": the one-token slack covers it

    cases = {
        "plain, ' is Paris'": ({"stop": [" is Paris"]}, "The capital of France"),
        "streamed, ' is Paris'": ({"stop": [" is Paris"], "stream": True}, "The capital of France"),
        "plain, 'The capital' (empty answer)": ({"stop": ["The capital"]}, ""),
    }
    refused: dict[str, str] = {}
    for name, (kw, want) in cases.items():
        got = await _outcome(drop, FRANCE, max_completion_tokens=12, logprobs=True, **kw)
        if isinstance(got, Exception):
            assert isinstance(got, AnswerMismatchError), got
            assert "logprobs for an answer spanning at least" in str(got)
            refused[name] = str(got).split(": ", 1)[-1]
        else:
            assert got[0] == want
        # without logprobs the same honest answers pass: only the facts check refuses them
        text, _ = await drop.ask(FRANCE, max_completion_tokens=12, **{k: v for k, v in kw.items()})
        assert text == want
    assert refused == {}, f"honest answers refused by the user's drop-in: {refused}; {drop.statuses()}"


async def test_defence_the_validators_clear_the_receipt_the_drop_in_refuses(
    engine: Any, store_client: Any
) -> None:
    """The same task (the chat agent's input for ``stop=[" is Paris"]``, ``logprobs``) run by the
    honest node's kernel and judged by the whole `Verifier` (replay, re-scoring in float32, the
    stop-string checks): no finding. Finding 1 is the drop-in's alone; a colluding validator gets
    no fraud verdict from it, and so the user no refund."""
    from supernet.validator.scoring import ModelScorer

    scorer = ModelScorer.load(str(SMOLLM2), dtype="float32", device="cpu")
    kernel = Kernel(engine, store_client, None, embedder=NoEmbedder(), agents=registry())
    await kernel.setup()
    try:
        task_input = {"messages": FRANCE, "max_new_tokens": 12, "stop": [" is Paris"], "logprobs": True}
        trace, verdict = await honest_verdict(kernel, store_client, scorer, ChatAgent, task_input)
    finally:
        await kernel.stop()
    call = llm_events(trace)[0]
    assert trace["output"] == "The capital of France"  # the kernel cut it: the stop string is gone
    assert call["finish_reason"] == "stop" and len(call["output_ids"]) == 6  # ... | is| Paris
    assert scorer.tokenizer.decode(call["output_ids"][-2:]) == " is Paris"  # no end-of-turn token
    assert verdict.unverifiable is None and verdict.findings == (), describe(verdict)


# -- checked and holding ------------------------------------------------------------------------------


async def test_defence_non_ascii_edges_and_sampling_limits_pass_the_drop_in(drop: Drop) -> None:
    """Attack: answers whose bytes end or break inside a character (CJK, emoji, U+FFFD), with
    ``logprobs`` asked for, stop strings on U+FFFD or on characters split over tokens, and sampling
    parameters at their limits, hoping the node's entries (`Tokenizer.token_bytes`) and the
    drop-in's reading of them (`byte_end`, the lossy decoding, `least_span`) disagree. Defence: each
    entry is its token's own bytes, cut at the answer's end, decoded as the tokenizer decodes;
    every honest answer below passes, plain and streamed."""
    mixed = "Write 中文 and 😀 twice."
    emoji = "Repeat: 😀😀😀"
    cases: list[tuple[str, dict[str, Any], str]] = [
        (mixed, {"max_completion_tokens": 12}, "\ufffd"),  # cut inside a character by the budget
        (mixed, {"max_completion_tokens": 12, "stop": ["\ufffd"]}, ""),  # stop on the half character
        (mixed, {"max_completion_tokens": 12, "stop": ["😀", "文"]}, "\ufffd"),  # never completed
        (emoji, {"max_completion_tokens": 1}, "\ufffd"),  # one token: half an emoji
        (emoji, {"max_completion_tokens": 3, "temperature": 1e-9, "top_p": 1e-9}, "😀"),
        (emoji, {"max_completion_tokens": 5, "temperature": 2, "seed": 7}, ""),
    ]
    for content, kw, ends in cases:
        for stream in (False, True):
            got = await _outcome(drop, content, logprobs=True, stream=stream, **kw)
            assert not isinstance(got, Exception), (content, kw, stream, got)
            assert (got[0] or "").endswith(ends), (content, kw, got[0])
            if not stream and kw.get("max_completion_tokens") == 1:
                assert got[1].finish_reason == "length" and len(got[1].logprobs.content) == 1
    assert set(drop.statuses()) == {"done"}


async def test_defence_grammars_and_tool_calls_with_logprobs_pass_the_drop_in(drop: Drop) -> None:
    """Attack: constrained answers with ``logprobs`` (a ``json_object`` grammar, one with a stop
    string inside what the grammar allows, tool calls cut by a tiny budget, an ``auto`` tool chat
    with a stop string), hoping the tool-call answer's text, its finish reason or its entries are
    read differently by node and drop-in. Defence: one rule on both sides (`chat_facts`,
    `parse_tool_call` / `check_answer`'s reading of the same output); each passes."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Say hi", {"max_completion_tokens": 8, "response_format": {"type": "json_object"}}),
        ("Say hi", {"max_completion_tokens": 8, "response_format": {"type": "json_object"}, "stop": ['"']}),
        ("Weather in Paris?", {"max_completion_tokens": 5, "tools": tools, "tool_choice": "required"}),
        (
            "Weather in Paris?",
            {"max_completion_tokens": 12, "tools": tools, "tool_choice": "auto", "stop": ["city"]},
        ),
        ("Say hi", {"max_completion_tokens": 8, "stop": ["Hi", "Hello", "hi", "!"]}),
    ]
    for content, kw in cases:
        got = await _outcome(drop, content, logprobs=True, **kw)
        assert not isinstance(got, Exception), (content, kw, got)
        assert got[1].finish_reason in ("stop", "length", "tool_calls")
    assert set(drop.statuses()) == {"done"}
