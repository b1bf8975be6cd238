"""Constrained decoding: the grammar of an OpenAI ``response_format`` and the token mask it allows.

A constrained LLM call carries a *grammar* (``SamplingParams.grammar``): an llguidance grammar
document, built from the call's ``response_format`` by `grammar_of` (a pure function of it, so a
validator's replay rebuilds the same string). At each output position the *mask* is the set of
tokens the grammar allows after the tokens so far (`GrammarConstraint.allowed`); the selection
rule (`supernet.node.llm.sampling`) then runs on the logits with every other token set to
``-inf``. The mask is a deterministic function of the grammar, the tokenizer and the tokens so
far, which is what lets a validator re-apply it exactly (docs/protocol.md "Token selection").

Rules both sides apply:

* ``{"type": "json_schema", "json_schema": {"schema": S, ...}}``: JSON valid against ``S``;
  ``{"type": "json_object"}``: any JSON object (the schema ``{"type": "object"}``). JSON is
  compact (no whitespace between tokens: ``x-guidance.whitespace_flexible`` false unless the
  schema's own ``x-guidance`` says otherwise), so a small model cannot loop on blank space.
* ``{"type": "tool_call", "tools": [{"name": N, "parameters": S}, ...], "text": b}`` (the
  kernel's own type, which the OpenAI API does not accept: the chat agent builds it from
  ``tools`` / ``tool_choice``, `supernet.node.agents.tool_calls`): compact JSON
  ``{"name":N,"arguments":A}`` with ``A`` valid against that tool's ``S`` (``name`` first, so the
  model names the function before its arguments); with ``text`` true, alternatively any text whose
  first character is not ``{`` (a lark grammar, `tool_call_lark`).
* The stop tokens (the model's end-of-sequence tokens) are allowed wherever the grammar accepts
  the text so far; where the grammar allows nothing at all (it is finished, or a matcher error),
  only the stop tokens are allowed, so a generation always has a token to pick.

>>> grammar_of({"type": "json_object"})
'{"grammars":[{"json_schema":{"type":"object","x-guidance":{"whitespace_flexible":false}}}]}'
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and llguidance load on first use: the kernel reads `grammar_of` without them
    from torch import Tensor

TOOL_CALL = "tool_call"
"""The kernel's ``response_format`` type of a tool-calling reply (see above)."""

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A tool name (OpenAI's rule), which a lark string literal holds as it is."""

TEXT_FORMATS = ("text",)
"""``response_format`` types that constrain nothing (a format without a type is not one of them)."""


class GrammarError(ValueError):
    """A ``response_format`` that does not give a usable grammar (the message says why)."""


MAX_GRAMMAR_BYTES = 32 * 1024
"""The longest grammar document (UTF-8) either side compiles."""
MAX_PATTERN_PROPERTIES = 32
"""Most ``patternProperties`` of one schema object: llguidance checks each property name against
all of them, and its compile time grows about as n^3.6 with their number (250: ~2 s, 800: ~130 s on
this CPU; 32: ~3 ms)."""
MAX_PATTERNS = 256
"""Most regular expressions (``pattern`` values and ``patternProperties`` keys) in one grammar."""
MAX_SCHEMA_NODES = 4096
"""Most JSON objects in one grammar's schemas."""


def check_budget(grammar: str) -> None:
    """Refuse a grammar over the protocol's cost budget (`MAX_GRAMMAR_BYTES`, `MAX_PATTERNS`,
    `MAX_PATTERN_PROPERTIES`, `MAX_SCHEMA_NODES`), before any compiling. A pure function of the
    grammar both sides run (`grammar_of` on the node and in a validator's replay, `check_grammar`
    and `GrammarConstraint` wherever one is compiled), so an over-budget format fails alike
    everywhere: no honest receipt holds one, and one in a trace costs a validator nothing.

    Raises:
        GrammarError: over budget, or not a grammar document `grammar_of` could have written.
    """
    if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
        raise GrammarError(f"the grammar is {len(grammar.encode())} bytes, over {MAX_GRAMMAR_BYTES}")
    try:
        entries = json.loads(grammar)["grammars"]
        schemas: list[Any] = []
        for entry in entries:
            if "json_schema" in entry:
                schemas.append(entry["json_schema"])
            else:
                schemas += _lark_schemas(str(entry["lark_grammar"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise GrammarError(f"not a grammar document: {exc}") from None
    nodes = patterns = 0
    todo = list(schemas)
    while todo:
        value = todo.pop()
        if isinstance(value, list):
            todo += value
            continue
        if not isinstance(value, dict):
            continue
        nodes += 1
        named = value.get("patternProperties")
        if isinstance(named, dict):
            if len(named) > MAX_PATTERN_PROPERTIES:
                raise GrammarError(
                    f"a schema object has {len(named)} patternProperties, over {MAX_PATTERN_PROPERTIES}"
                )
            patterns += len(named)
        patterns += isinstance(value.get("pattern"), str)
        todo += value.values()
    if patterns > MAX_PATTERNS:
        raise GrammarError(f"the grammar has {patterns} regular expressions, over {MAX_PATTERNS}")
    if nodes > MAX_SCHEMA_NODES:
        raise GrammarError(f"the grammar's schemas have {nodes} objects, over {MAX_SCHEMA_NODES}")


def _lark_schemas(lark: str) -> list[Any]:
    """The JSON schemas a lark grammar embeds (``%json {...}``)."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while (at := lark.find("%json", at)) >= 0:
        start = at + len("%json")
        while start < len(lark) and lark[start].isspace():
            start += 1
        schema, at = decoder.raw_decode(lark, start)
        out.append(schema)
    return out


def _schema_of(response_format: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise GrammarError(f"response_format type {kind!r} is not text, json_object or json_schema")
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        raise GrammarError("response_format.json_schema must be an object with a `schema`")
    schema = spec.get("schema", {})
    if not isinstance(schema, Mapping):
        raise GrammarError("response_format.json_schema.schema must be a JSON schema object")
    return schema


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _json_options(schema: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    options = out.get("x-guidance")
    out["x-guidance"] = {"whitespace_flexible": False, **(options if isinstance(options, Mapping) else {})}
    return out


def tool_call_lark(tools: Sequence[Mapping[str, Any]], text: bool) -> str:
    """The lark grammar of a ``tool_call`` format: one rule per tool, and a ``TEXT`` alternative."""
    if not tools:
        raise GrammarError("a tool_call format needs at least one tool")
    rules, names = [], []
    for i, tool in enumerate(tools):
        name, schema = tool.get("name"), tool.get("parameters", {"type": "object"})
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise GrammarError(f"tool name {name!r} is not 1-64 letters, digits, _ or -")
        if not isinstance(schema, Mapping):
            raise GrammarError(f"the parameters of tool {name!r} are not a JSON schema object")
        head = '"{\\"name\\":\\"' + name + '\\",\\"arguments\\":"'
        rules.append(f'call_{i}: {head} %json {_compact(_json_options(schema))} "}}"')
        names.append(f"call_{i}")
    if text:
        names.append("TEXT")
        rules.append("TEXT: /[^{][\\s\\S]*/")
    return "\n".join([f"start: {' | '.join(names)}", *rules])


def grammar_of(response_format: Mapping[str, Any] | None) -> str | None:
    """The llguidance grammar (JSON text, sorted keys, no spaces) a ``response_format`` asks for;
    ``None`` for plain text.

    Raises:
        GrammarError: another type, or a schema that is not an object.
    """
    if response_format is None or response_format.get("type") in TEXT_FORMATS:
        return None
    if response_format.get("type") == TOOL_CALL:
        tools = response_format.get("tools")
        if not isinstance(tools, Sequence) or not all(isinstance(t, Mapping) for t in tools):
            raise GrammarError("a tool_call format's `tools` is a list of {name, parameters}")
        lark = tool_call_lark(tools, bool(response_format.get("text")))
        grammar = _compact({"grammars": [{"lark_grammar": lark}]})
    else:
        grammar = _compact({"grammars": [{"json_schema": _json_options(_schema_of(response_format))}]})
    check_budget(grammar)
    return grammar


def check_grammar(grammar: str) -> None:
    """Raise `GrammarError` (with llguidance's reason) unless ``grammar`` compiles within the
    protocol's budget (`check_budget`)."""
    import llguidance

    check_budget(grammar)

    try:
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except Exception as exc:  # a grammar document llguidance cannot even read
        raise GrammarError(f"the schema gives no usable grammar: {exc}") from None
    if error:
        raise GrammarError(f"the schema gives no usable grammar: {error}")


_LL_TOKENIZERS: weakref.WeakKeyDictionary[Any, dict[tuple[int, tuple[int, ...]], Any]] = (
    weakref.WeakKeyDictionary()
)
_LL_LOCK = threading.Lock()


def _ll_tokenizer(tokenizer: Any, vocab_size: int, stop_ids: tuple[int, ...]) -> Any:
    """llguidance's view of ``tokenizer`` (a `supernet.node.llm.tokenizer.Tokenizer`), built once
    per (vocabulary size, stop tokens): building one takes about a second."""
    import llguidance

    key = (vocab_size, stop_ids)
    with _LL_LOCK:
        per = _LL_TOKENIZERS.setdefault(tokenizer, {})
        if key not in per:
            per[key] = llguidance.LLTokenizer(
                tokenizer.pipeline_json(), n_vocab=vocab_size, eos_token=list(stop_ids)
            )
        return per[key]


def stop_key(stop_ids: Sequence[int]) -> tuple[int, ...]:
    """The stop tokens as a constraint keys them (sorted, each once)."""
    return tuple(sorted(set(int(t) for t in stop_ids)))


def prepare_tokenizer(tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> bool:
    """Build llguidance's view of ``tokenizer`` now if it is not built yet (about a second, the
    first time): called in a worker thread before a constrained call is submitted, so the
    event loop never waits for it. Returns whether it was built by this call."""
    key = (vocab_size, stop_key(stop_ids))
    with _LL_LOCK:
        if key in _LL_TOKENIZERS.get(tokenizer, {}):
            return False
    _ll_tokenizer(tokenizer, *key)
    return True


class GrammarConstraint:
    """The grammar state of one constrained generation (or of a validator's walk over its tokens).

    Args:
        tokenizer: The model's tokenizer (`supernet.node.llm.tokenizer.Tokenizer`).
        grammar: The call's grammar (`grammar_of`).
        vocab_size: The model's vocabulary (the mask's width).
        stop_ids: The tokens that end the generation.

    Raises:
        GrammarError: the grammar is over the budget (`check_budget`) or does not compile.
    """

    def __init__(self, tokenizer: Any, grammar: str, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import llguidance

        check_budget(grammar)

        self.vocab_size = vocab_size
        self.stop_ids = stop_key(stop_ids)
        ll = _ll_tokenizer(tokenizer, vocab_size, self.stop_ids)
        self._matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
        if self._matcher.is_error():
            raise GrammarError(f"the grammar does not compile: {self._matcher.get_error()}")

    def allowed(self) -> Tensor:
        """The tokens allowed next: a bool tensor of ``vocab_size`` (never all false)."""
        import torch

        raw = self._matcher.compute_logit_bias() if not self._matcher.is_error() else b""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        if raw:
            bias = torch.frombuffer(bytearray(raw), dtype=torch.uint8)[: self.vocab_size]
            mask[: bias.shape[0]] = bias > 0
        if not bool(mask.any()):
            mask[list(self.stop_ids)] = True
        return mask

    def advance(self, token: int) -> bool:
        """Take ``token`` as the next one; False if the grammar did not allow it (or is finished).
        A stop token ends the walk and is always taken."""
        if token in self.stop_ids:
            return True
        return bool(self._matcher.consume_token(int(token)))


def masked(logits: Tensor, allowed: Tensor) -> Tensor:
    """``logits`` (``[V]`` or ``[n, V]``) with every token outside ``allowed`` at ``-inf`` (a copy).
    ``allowed`` is bool of the logits' shape, or its `pack_masks` form (uint8, a bit per token)."""
    import torch

    allowed = allowed.to(logits.device)  # packed: an eighth of the bytes to move
    if allowed.dtype != torch.bool:
        allowed = unpack_masks(allowed, logits.shape[-1])
    return logits.masked_fill(~allowed, float("-inf"))


def pack_masks(rows: Tensor) -> Tensor:
    """Bool masks ``[..., V]`` as uint8 ``[..., ceil(V / 8)]`` (bit ``j`` of byte ``i`` is token
    ``8 i + j``): a validator holds a constrained call's masks at a bit per token, not a byte."""
    import torch

    width = rows.shape[-1]
    pad = (-width) % 8
    if pad:
        rows = torch.cat((rows, rows.new_zeros((*rows.shape[:-1], pad))), dim=-1)
    bits = rows.reshape(*rows.shape[:-1], -1, 8).to(torch.uint8)
    weights = torch.tensor([1 << j for j in range(8)], dtype=torch.uint8)
    return (bits * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_masks(packed: Tensor, width: int) -> Tensor:
    """`pack_masks` undone: bool ``[..., width]``."""
    import torch

    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed[..., None] >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :width].bool()


def allowed_masks(
    constraint: GrammarConstraint, tokens: Sequence[int], packed: bool = False
) -> tuple[Tensor, int | None]:
    """The mask at each position of ``tokens`` (``[len(tokens), V]`` bool, or `pack_masks`'s form
    when ``packed``) as the grammar walks them, and the first position whose token the mask does
    not allow (``None``: every one is). The walk ends there: the positions after it allow every
    token."""
    import torch

    width = constraint.vocab_size if not packed else -(-constraint.vocab_size // 8)
    rows = torch.full((len(tokens), width), 255 if packed else 1, dtype=torch.uint8 if packed else torch.bool)
    bad: int | None = None
    for i, t in enumerate(tokens):
        if bad is not None:
            break
        row = constraint.allowed()
        rows[i] = pack_masks(row) if packed else row
        if not (0 <= t < constraint.vocab_size and bool(row[t])) or not constraint.advance(t):
            bad = i
    return rows, bad
