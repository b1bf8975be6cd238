"""Structured output's pieces: the grammar a response_format gives, the token mask it allows, the
trace field that records it, the signed input that covers it and the API's checks of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from supernet.node.llm.grammar import (
    GrammarConstraint,
    GrammarError,
    allowed_masks,
    grammar_of,
    prepare_tokenizer,
    stop_key,
)
from supernet.node.service.chat_params import UnsupportedParameterError, chat_plan
from supernet.node.service.errors import BadRequestError
from supernet.node.service.schemas import ChatCompletionCreate
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import Trace, example_dag
from supernet.sdk.openai_compat import chat_task_input

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}


def test_grammar_of_each_response_format() -> None:
    assert grammar_of(None) is None and grammar_of({"type": "text"}) is None
    doc = json.loads(grammar_of(FORMAT) or "")
    assert doc == {"grammars": [{"json_schema": {**SCHEMA, "x-guidance": {"whitespace_flexible": False}}}]}
    assert (
        json.loads(grammar_of({"type": "json_object"}) or "")["grammars"][0]["json_schema"]["type"]
        == "object"
    )
    # a pure function of the schema: key order in the request does not matter
    reordered = {"type": "json_schema", "json_schema": {"schema": dict(reversed(list(SCHEMA.items())))}}
    assert grammar_of(reordered) == grammar_of(FORMAT)
    # the schema's own llguidance options win over the default
    flexible = {
        "type": "json_schema",
        "json_schema": {"schema": {**SCHEMA, "x-guidance": {"whitespace_flexible": True}}},
    }
    assert '"whitespace_flexible":true' in (grammar_of(flexible) or "")


@pytest.mark.parametrize(
    "bad", [{"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}}]
)
def test_grammar_of_refuses_what_gives_no_grammar(bad: dict[str, Any]) -> None:
    with pytest.raises(GrammarError):
        grammar_of(bad)


def test_trace_params_carry_the_grammar_only_on_constrained_calls() -> None:
    plain = example_dag()
    assert "grammar" not in plain["events"][0]["params"] and Trace.from_dag(plain).to_dag() == plain
    constrained = example_dag()
    constrained["events"][0]["params"]["grammar"] = grammar_of(FORMAT)
    parsed = Trace.from_dag(constrained)
    assert parsed.events[0].params.grammar == grammar_of(FORMAT)  # type: ignore[union-attr]
    assert parsed.to_dag() == constrained
    constrained["events"][0]["params"]["grammar"] = {"json_schema": SCHEMA}
    with pytest.raises(FormatError, match=r"params\.grammar"):
        Trace.from_dag(constrained)


def test_the_signed_input_covers_the_response_format() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "response_format": FORMAT}
    assert chat_task_input(body)["response_format"] == FORMAT
    assert "response_format" not in chat_task_input({**body, "response_format": None})


def _body(**kw: Any) -> ChatCompletionCreate:
    return ChatCompletionCreate.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **kw}
    )


def test_api_accepts_json_formats_and_names_bad_ones() -> None:
    for fmt in (FORMAT, {"type": "json_object"}, {"type": "text"}):
        chat_plan(_body(response_format=fmt))
    with pytest.raises(UnsupportedParameterError) as unsupported:
        chat_plan(_body(response_format={"type": "grammar"}))
    assert unsupported.value.detail.get("param") == "response_format"
    for schema in ({"type": "nonsense"}, {"type": "array", "uniqueItems": True}):  # unknown; not enforceable
        bad_schema = {"type": "json_schema", "json_schema": {"schema": schema}}
        with pytest.raises(BadRequestError) as bad:
            chat_plan(_body(response_format=bad_schema))
        assert bad.value.detail.get("param") == "response_format"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    from supernet.node.llm.tokenizer import Tokenizer

    return Tokenizer(smollm2_dir)


EOS = (2,)


@pytest.mark.model
def test_mask_walk_accepts_schema_json_and_stops_only_when_complete(tokenizer: Any) -> None:
    grammar = grammar_of(FORMAT) or ""
    ids = [*tokenizer.encode('{"n":42}'), EOS[0]]
    masks, bad = allowed_masks(GrammarConstraint(tokenizer, grammar, 49152, EOS), ids)
    assert bad is None and masks.shape == (len(ids), 49152)
    assert not bool(masks[0, EOS[0]]) and bool(masks[-1, EOS[0]])  # the stop token only at the end
    assert int(masks[-1].sum()) == 1  # the object is complete: nothing but the stop token


@pytest.mark.model
def test_mask_walk_names_the_first_token_outside_the_grammar(tokenizer: Any) -> None:
    grammar = grammar_of(FORMAT) or ""
    ids = tokenizer.encode('{"n":"x"}')
    _, bad = allowed_masks(GrammarConstraint(tokenizer, grammar, 49152, EOS), ids)
    prefix = tokenizer.encode('{"n":')
    assert bad is not None and bad <= len(prefix)
    # an early stop token (truncated JSON) is outside the grammar too
    _, early = allowed_masks(GrammarConstraint(tokenizer, grammar, 49152, EOS), [*prefix, EOS[0]])
    assert early == len(prefix)


@pytest.mark.model
def test_a_grammar_that_does_not_compile_is_refused(tokenizer: Any) -> None:
    with pytest.raises(GrammarError):
        GrammarConstraint(tokenizer, '{"grammars": [{"json_schema": {"type": "nonsense"}}]}', 49152, EOS)


@pytest.mark.model
async def test_constrained_generation_preempted_and_resumed_continues_exactly(smollm2_dir: Path) -> None:
    """The engine masks every step of a constrained generation (the JSON validates); a resumed one
    rebuilds its grammar state from the tokens so far and ends exactly as the uninterrupted one."""
    from supernet.node.llm import LLMEngine, SamplingParams

    engine = LLMEngine.load(smollm2_dir, max_batch=2, max_seq_len=256)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }
    params = SamplingParams(
        max_new_tokens=32,
        temperature=1.0,
        top_p=0.95,
        seed=5,
        grammar=grammar_of({"type": "json_schema", "json_schema": {"schema": schema}}),
    )
    async with engine:
        prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Name a city."}])
        whole = await engine.submit(prompt, params).result()
        assert whole.finish_reason == "stop" and "city" in json.loads(
            engine.tokenizer.decode(whole.output_ids[:-1])
        )
        handle = engine.submit(prompt, params)
        async for _ in handle:
            break
        resumed = await engine.submit(prompt, params, resume=await handle.preempt()).result()
    assert resumed.output_ids == whole.output_ids


@pytest.mark.model
def test_the_tokenizer_view_is_built_once_before_submission(tokenizer: Any) -> None:
    """`LLMEngine.prepare_grammar` builds llguidance's tokenizer in a worker thread before the
    scheduler submits a constrained call; a constraint made afterwards (on the event loop) must
    find it built, whatever the order of its stop tokens."""
    stops = [2, 0, 1, 0]  # a key no other test builds
    assert prepare_tokenizer(tokenizer, 49152, stops) is True
    assert prepare_tokenizer(tokenizer, 49152, [0, 1, 2]) is False  # built: nothing to do
    assert stop_key(stops) == (0, 1, 2)
    c = GrammarConstraint(tokenizer, grammar_of(FORMAT) or "", 49152, [1, 2, 0])
    assert prepare_tokenizer(tokenizer, 49152, c.stop_ids) is False  # the constraint used that view


@pytest.mark.model
async def test_a_token_the_grammar_refuses_after_its_mask_allowed_it_fails_the_call_unstreamed(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grammar engine whose matcher refuses a token its own mask allowed (a fault we cannot cause
    with llguidance, faked here by `advance` refusing the 4th token) used to be ignored: the node
    went on generating and recorded a token a validator's walk finds outside the grammar, a
    fraud finding against an honest node. Now the call fails before that token is streamed (its
    task gets no receipt), and the engine goes on serving the other sequences."""
    from supernet.node.llm import LLMEngine, SamplingParams
    from supernet.node.llm.errors import LLMError

    real_advance = GrammarConstraint.advance
    taken: dict[int, int] = {}

    def refusing_advance(self: GrammarConstraint, token: int) -> bool:  # the named fake
        taken[id(self)] = taken.get(id(self), 0) + 1
        return False if taken[id(self)] == 4 else real_advance(self, token)

    monkeypatch.setattr(GrammarConstraint, "advance", refusing_advance)
    engine = LLMEngine.load(smollm2_dir, max_batch=2, max_seq_len=256)
    constrained = SamplingParams(max_new_tokens=24, temperature=0.0, seed=1, grammar=grammar_of(FORMAT))
    plain = SamplingParams(max_new_tokens=8, temperature=0.0, seed=1)
    async with engine:
        prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Give n."}])
        handle = engine.submit(prompt, constrained)
        other = engine.submit(prompt, plain)
        streamed = []
        with pytest.raises(LLMError, match="refused a token its own mask allowed"):
            async for event in handle:
                streamed.append(event)
        with pytest.raises(LLMError):
            await handle.result()
        assert len(streamed) == 3, "the refused token is never streamed"
        assert (await other.result()).finish_reason in ("stop", "length")
