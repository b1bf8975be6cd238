"""How a chat becomes prompt text: the model's Jinja chat template, rendered in a sandbox.

Rendering is part of the protocol: a node records the prompt ids a chat became and validators
render the chat again, so both must turn it into the same text. What a template sees and may call
is therefore defined here, once, rather than left to a library release (transformers has changed
what its renderer passes a template more than once). It is the environment Hugging Face chat
templates are written for: Jinja's immutable sandbox with ``trim_blocks``/``lstrip_blocks``, the
``loopcontrols`` extension, a ``{% generation %}`` block that renders its body, ``tojson`` without
HTML escaping, ``raise_exception``, and ``dict``/``namespace`` that cannot reach Python's
internals. A template must render the same text in every process, so it reaches nothing that draws
or depends on the process: no clock (``strftime_now``), no ``random`` filter, ``lipsum``,
``cycler`` or ``joiner``; every callable it reaches (a global, a method of its data) shows a fixed
text instead of its address; ``-`` takes numbers only (on dict views it makes a set, ordered by the
process's hash seed); and a render whose own text (the message texts aside) holds an object's
address is refused (`supernet.node.llm.tokenizer`). The context is the
special tokens (``bos_token``, ...), ``messages`` (keys whose value is None dropped; a reasoning
text under any of `REASONING_FIELDS` offered under the two names templates read),
``add_generation_prompt``, and ``tools``/``documents`` (None).

A test renders chats with this module and with transformers and requires the same text
(tests/unit/test_llm_chat_template.py).

>>> template = ChatTemplate("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
>>> template.render([{"role": "user", "content": "hi"}], add_generation_prompt=False)
'<user>hi'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
"""Names a message's reasoning text goes by; templates read ``reasoning_content`` or ``thinking``."""


class ChatTemplateError(ValueError):
    """A chat template that does not compile, or a chat it refuses (``raise_exception``)."""


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: marks the assistant's text for training masks;
    renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012 - jinja2 declares it so on Extension

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


class _SafeNamespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` that stores no underscore-prefixed attribute (no way to CPython's)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Namespace's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _SafeNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _SafeNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template cannot set {name!r} on a namespace")


class _DictMaker:
    """``dict(...)`` for templates: builds plain dicts, exposes nothing else of the type."""

    def __str__(self) -> str:
        return "<callable dict>"

    __repr__ = __str__

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Shown:
    """A callable as a template sees it: called through, shown as a fixed text (a function's or a
    bound method's own text holds its address, which differs from process to process)."""

    def __init__(self, fn: Any, name: str) -> None:
        self.fn, self._name = fn, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __str__(self) -> str:
        return f"<callable {self._name}>"

    __repr__ = __str__


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
"""How CPython shows an object without a text of its own (a generator a filter made, say): the
template's own text must not hold it (`supernet.node.llm.tokenizer` checks a render whose message
texts are placeholders; a message's text may hold anything)."""


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with callables shown by name and ``-`` on numbers only."""

    intercepted_binops = frozenset({"-"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self._shown(super().getattr(obj, attribute), attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self._shown(super().getitem(obj, argument), str(argument))

    @staticmethod
    def _shown(value: Any, name: str) -> Any:
        if callable(value) and not isinstance(value, type | _Shown | jinja2.runtime.Undefined):
            return _Shown(value, name)
        return value

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        return super().call(__context, __obj.fn if isinstance(__obj, _Shown) else __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "-" and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right)
        ):
            raise jinja2.exceptions.SecurityError("a chat template subtracts numbers only")
        return super().call_binop(context, operator, left, right)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    del env.filters["random"]  # draws
    for name in ("lipsum", "cycler", "joiner"):  # draws; objects shown by address
        del env.globals[name]
    env.globals.update(
        raise_exception=_Shown(_raise_exception, "raise_exception"),
        dict=_DictMaker(),
        namespace=_SafeNamespace,
    )
    return env


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if v is not None}
    reasoning = next((out[k] for k in REASONING_FIELDS if k in out), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


class ChatTemplate:
    """One compiled chat template.

    Raises:
        ChatTemplateError: the template does not compile.
    """

    def __init__(self, source: str) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        special_tokens: Mapping[str, Any] | None = None,
    ) -> str:
        """The template's text for ``messages``.

        Raises:
            ChatTemplateError: an empty chat, or the template refuses it or fails on it.
        """
        if not messages:
            raise ChatTemplateError("a chat needs at least one message")
        context = {
            **(special_tokens or {}),
            "messages": [_message(m) for m in messages],
            "tools": None,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return self._template.render(**context)
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the chat template refused the chat: {exc}") from exc
