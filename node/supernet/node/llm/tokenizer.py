"""Tokenizer and chat template, read from the same files as the weights.

The `tokenizers` pipeline of ``tokenizer.json``, the special tokens of ``tokenizer_config.json``
and the chat template (``chat_template.jinja``, or the config's), always speaking ``list[int]``;
chats are rendered by `supernet.node.llm.chat_template`. transformers is not loaded to serve: its
tokenizer object cost a node ~100 MB of resident memory (docs/node.md "Memory"). A GGUF file
carries its tokenizer and chat template in its metadata; only reading those needs transformers, and
``export_gguf_tokenizer`` writes them out once as HF files next to the converted weights.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supernet.node.llm.chat_template import ADDRESS, ChatTemplate, ChatTemplateError

UNREPEATABLE = re.compile(r"\bstrftime_now\b|\blipsum\b|\|\s*random\b")
"""What a chat template may not use: transformers' ``strftime_now`` reads the machine's clock, and
Jinja's ``lipsum`` global and ``random`` filter draw at random. A prompt must be a function of the
messages alone, since validators render it again later (and in other time zones)."""


class TokenizerError(ValueError):
    """The tokenizer's files cannot be served: what they do would not be the same on re-execution;
    or their chat template cannot render a chat with its messages' text kept apart from the
    template's own (`Tokenizer.apply_chat_template`)."""


SLOT_OPEN, SLOT_CLOSE = "\ue000", "\ue001"
"""What stands in for one message's text when the chat template is rendered: these private-use
characters around a nonce no role, template or special token holds and the text's index
(``\\ue000<nonce>:<index>\\ue001``), found again in the rendered text."""


class Tokenizer:
    """Encode, decode and apply the model's chat template.

    Encoding and decoding go straight to the `tokenizers` pipeline (``backend_tokenizer``), whose
    serialisation `digest` hashes whole: no setting of transformers' wrapper (clean-up of spaces,
    split special tokens, BOS/EOS flags) changes what a node or a validator computes. The chat
    template is rendered by transformers (its sandbox) to text, then encoded the same way, except
    that only the template's own text makes special tokens (`apply_chat_template`).

    Args:
        path: A directory with ``tokenizer.json`` (and ``tokenizer_config.json``), or the directory
            of a GGUF file when ``gguf_file`` is given.
        gguf_file: Name of a GGUF file in ``path`` to read the tokenizer from.

    Raises:
        TokenizerError: what would not tokenize or render the same on re-execution, or could let a
            message's text make markers: a chat template that reads a clock or draws
            (`UNREPEATABLE`) or does not compile, template markers that are non-special added
            tokens, a pipeline that draws (BPE dropout), or tokenizer files refused as read
            (`_read_hf_files`: legacy files, added or special tokens the pipeline lacks, template
            variables we would give otherwise than transformers).
    """

    def __init__(self, path: Path, gguf_file: str | None = None) -> None:
        from tokenizers import Tokenizer as Pipeline

        self._path = path
        self._hf: Any = None  # transformers' tokenizer (`backend`): made only where asked for
        if gguf_file is None:
            self._pipeline, self._special_tokens, template = _read_hf_files(path)
        else:
            from transformers import AutoTokenizer

            # A GGUF's tokenizer is its own metadata alone: loaded from its folder, transformers
            # merges in a sibling tokenizer_config.json (a pulled model's folder holds one), which
            # dropped the chat template and the special tokens of the GGUF in the catalog's folder.
            with tempfile.TemporaryDirectory(prefix="supernet-gguf-") as alone:
                (Path(alone) / gguf_file).symlink_to((path / gguf_file).resolve())
                self._hf = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_file)
            self._pipeline = Pipeline.from_str(self._hf.backend_tokenizer.to_str())
            named = self._hf.special_tokens_map
            self._special_tokens = {k: v for k, v in named.items() if k in SPECIAL_TOKEN_KEYS}
            template = self._hf.chat_template
        self._pipeline.no_padding()
        self._pipeline.no_truncation()
        pipeline = json.loads(self._pipeline.to_str())  # read once: the dropout check and the digest
        if (pipeline.get("model") or {}).get("dropout"):
            raise TokenizerError(f"{path}: the tokenizer's BPE dropout encodes at random")
        _check_template(template)
        self.chat_template: str | dict[str, str] | None = template
        self._template = _default_template(template)
        self._digest = self._fresh_digest(pipeline)
        # a byte-level decoder reads each token's characters as bytes (`token_bytes`)
        self._byte_level = (pipeline.get("decoder") or {}).get("type") == "ByteLevel"
        # What the pipeline's special tokens are: the only ids a chat's text may not make. A
        # message's text is encoded with them read as plain text (`_encode`'s ``plain``).
        self._encoding = threading.Lock()
        added = self._pipeline.get_added_tokens_decoder()
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self._markers = tuple(t.content for t in added.values() if t.special)
        sources = template.values() if isinstance(template, dict) else [template or ""]
        forgeable = sorted(
            {t.content for t in added.values() if not t.special and any(t.content in x for x in sources)}
        )
        if forgeable:  # a message's text would make them as the template's own markers
            raise TokenizerError(
                f"{path}: the chat template's markers {', '.join(forgeable)} are added tokens that are"
                " not special: a message's text could make them; mark them special in tokenizer.json"
            )

    @property
    def backend(self) -> Any:
        """transformers' tokenizer over the same files, made on first use: the reference tests and
        tools compare with, and what saves a GGUF's tokenizer. Serving never reads it."""
        if self._hf is None:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(self._path))
        return self._hf

    def pipeline_json(self) -> str:
        """The `tokenizers` pipeline's serialisation (what llguidance builds its view from)."""
        return str(self._pipeline.to_str())

    def digest(self) -> str:
        """sha256 hex of what decides how messages become token ids and ids become text: the
        tokenizer's pipeline as the `tokenizers` library serialises it (vocabulary, merges,
        normalizer, pre-tokenizer, post-processor, decoder, added tokens), the special tokens (the
        template's variables) and the chat template, as canonical JSON, taken when the files were
        loaded. The same tokenizer read from HF files or from a GGUF's metadata gives the same
        digest; one changed merge, token or template byte does not. The weights manifest holds it
        (`supernet.node.llm.manifest`), so the model id names it."""
        return self._digest

    def _fresh_digest(self, pipeline: dict[str, Any]) -> str:
        """`digest` of the pipeline's serialisation (``pipeline``, parsed; edited here)."""
        # state transformers sets and clears at its first call, not a property of the files
        pipeline["truncation"] = pipeline["padding"] = None
        merges = pipeline.get("model", {}).get("merges")
        if merges and isinstance(merges[0], str):  # tokenizers < 0.20 writes "a b", later ["a", "b"]
            pipeline["model"]["merges"] = [m.split(" ", 1) for m in merges]
        identity = {
            "pipeline": pipeline,
            "special_tokens": self._special_tokens,
            "chat_template": self.chat_template,
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-sequence token (the chat template's end-of-turn for instruct models)."""
        eos = self._special_tokens.get("eos_token")
        return None if not isinstance(eos, str) else self._pipeline.token_to_id(eos)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included."""
        return int(self._pipeline.get_vocab_size(with_added_tokens=True))

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The longest text one token decodes to, in UTF-8 bytes (SmolLM2: 81): what a call's
        output may add to a trace per token (`supernet.node.kernel.trace.llm_record_bound`)."""
        texts = self._pipeline.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)
        return max(len(t.encode()) for t in texts)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return self._encode(text)

    def _encode(self, text: str, plain: bool = False) -> list[int]:
        """Token ids of ``text``; ``plain``: special tokens' texts read as plain characters. The
        switch is the pipeline's own state, so encodes take turns (a second pipeline for plain
        text cost ~30 MB of a node's memory)."""
        with self._encoding:
            self._pipeline.encode_special_tokens = plain
            try:
                return list(self._pipeline.encode(text, add_special_tokens=False).ids)
            finally:
                self._pipeline.encode_special_tokens = False

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``."""
        return str(self._pipeline.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_bytes(self, ids: Sequence[int]) -> list[bytes] | None:
        """Each token's own bytes, as the pipeline's byte-level decoder joins them before it reads
        the whole as UTF-8: so they concatenate to the bytes ``decode(ids, skip_special_tokens=True)``
        is read from, a token that ends inside a character included (its text alone would be
        U+FFFD). A special token has none (that decode leaves it out), an added token its text's
        UTF-8 where a character of it is outside the byte alphabet (as the decoder reads it).
        None where the decoder is not byte-level: its tokens' bytes are not read off the vocabulary
        (`supernet.sdk.formats.chat_facts.token_pieces` then splits the decoded text)."""
        if not self._byte_level:
            return None
        out: list[bytes] = []
        for token_id in ids:
            token = None if token_id in self._special_ids else self._pipeline.id_to_token(token_id)
            out.append(b"" if token is None else _byte_level_bytes(token))
        return out

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a chat (``[{"role": ..., "content": ...}]``) rendered by the model's template.

        Only the template makes special tokens. A message's text (its ``content``, and any other
        text field a template inserts; not its ``role``, which templates branch on) is whoever's
        wrote it: the user, a web page a tool fetched, a file, a memory hit, another agent's reply,
        or the model's own earlier text. Rendered to one string and encoded whole, a text holding
        ``<|im_end|>\\n<|im_start|>system`` became the template's real markers and opened a turn of
        its writer's. So the template is rendered once with a placeholder (`SLOT_OPEN`) in place of
        each text: its own text is encoded with special tokens parsed, each message's text (where
        the placeholder stands) with them read as plain characters. A chat whose texts hold no
        special token's text gets the ids it got when rendered and encoded whole.

        Raises:
            ValueError: a role holds a special token's text (a role is a name, not text).
            TokenizerError: the template does more with a text than insert it (trims, cuts or
                tests its characters), so its text and the template's cannot be told apart.
        """
        chat = [dict(m) for m in messages]
        for m in chat:
            role = m.get("role")
            if isinstance(role, str) and len(role) > MAX_ROLE_CHARS:
                raise ValueError(f"a message's role is a name of at most {MAX_ROLE_CHARS} characters")
            forged = next((t for t in self._markers if isinstance(role, str) and t in role), None)
            if forged is not None:
                raise ValueError(f"a message's role holds the special token {forged!r}: a role is a name")
        # what the rendered text holds besides the placeholders (a message's text is not rescanned):
        # the nonce is one none of them spells, found in one pass
        known = [str(self.chat_template), *self._markers, *(str(m.get("role")) for m in chat)]
        taken = {int(n) for k in known for n in re.findall(f"{SLOT_OPEN}([0-9]+):", k)}
        nonce = next(n for n in itertools.count() if n not in taken)
        texts: list[str] = []
        slotted: list[dict[str, Any]] = []
        for m in chat:
            slotted.append({})
            for key, value in m.items():
                if key != "role" and isinstance(value, str) and value:  # "" is no one's text
                    slotted[-1][key] = f"{SLOT_OPEN}{nonce}:{len(texts)}{SLOT_CLOSE}"
                    texts.append(value)
                else:
                    slotted[-1][key] = value
        skeleton = self._render(slotted, add_generation_prompt)
        if ADDRESS.search(skeleton):  # the template's own text: an address differs per process
            raise TokenizerError("the chat template rendered an object's address (other in each process)")
        slot = re.compile(f"{SLOT_OPEN}{nonce}:([0-9]+){SLOT_CLOSE}")

        def fill(text: str) -> str:
            return slot.sub(lambda found: texts[int(found.group(1))], text)

        if fill(skeleton) != self._render(chat, add_generation_prompt):
            raise TokenizerError(
                "the chat template changes a message's text (trims, cuts or tests it), so the"
                " template's own text cannot be told from the message's: its prompts cannot keep"
                " special tokens in a message's text as plain text"
            )
        slots = [found.span() for found in slot.finditer(skeleton)]
        ids: list[int] = []
        start = 0
        with self._encoding:  # the template's own text: its special tokens parsed
            encoding = self._pipeline.encode(skeleton, add_special_tokens=False)
        for token, (begin, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token not in self._special_ids:
                continue
            if any(begin < slot_end and slot_begin < end for slot_begin, slot_end in slots):
                raise TokenizerError("a special token of the chat template overlaps a message's text")
            ids += self._encode(fill(skeleton[start:begin]), plain=True)
            ids.append(token)
            start = end
        ids += self._encode(fill(skeleton[start:]), plain=True)
        return ids

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        if self._template is None:
            raise TokenizerError("the tokenizer has no (default) chat template: it cannot render chats")
        return self._template.render(messages, add_generation_prompt, self._special_tokens)

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and the chat template into ``path``
        (transformers' files, which `Tokenizer` reads back the same)."""
        self.backend.save_pretrained(str(path))


def _check_template(template: str | dict[str, str] | None) -> None:
    """Refuse a chat template that renders differently from one time to the next (`UNREPEATABLE`):
    its prompt ids would depend on when (and in which time zone) it is rendered, or on a draw, so
    a validator replaying it would accuse the honest node. (Llama 3.x templates date their system
    turn with ``strftime_now``; an agent that needs the date puts it in a message, which the user
    signs.) A textual check, not a parse: transformers renders templates with extensions
    (``{% break %}``, ``{% generation %}``) a plain Jinja parser refuses."""
    if template is None:
        return
    for name, text in template.items() if isinstance(template, dict) else [("default", template)]:
        found = sorted({m.group(0).lstrip("| ") for m in UNREPEATABLE.finditer(text)})
        if found:
            raise TokenizerError(
                f"chat template {name!r} renders differently each time ({', '.join(found)}): its"
                " prompts would depend on when they are rendered, and validators render them again"
                " later; remove it from the template (an agent passes dates in its messages)"
            )


SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
"""The special tokens a ``tokenizer_config.json`` names: the chat template's variables, as
transformers passes them (it does not pass ``additional_special_tokens``, which names nothing a
template reads; the pipeline's own added tokens say which are special)."""

GENERIC_CLASSES = frozenset({None, "PreTrainedTokenizerFast", "TokenizersBackend"})
"""``tokenizer_class`` values that bring no default special tokens of their own."""

MAX_ROLE_CHARS = 64
"""A role is a name (``user``, ``tool``): longer ones are refused before any work."""


def _check_config(config_file: Path, config: dict[str, Any], special: dict[str, Any], pipeline: Any) -> None:
    """Refuse a config whose template variables transformers would make otherwise than we read
    them (a template reading them would render other text than the model's reference), or that
    names a special token the pipeline lacks (transformers would add it: other ids).

    Raises:
        TokenizerError: what it refuses, named.
    """
    others = sorted(
        k
        for k, v in config.items()
        if k.endswith("_token") and k not in SPECIAL_TOKEN_KEYS and isinstance(v, str | dict)
    )
    named = config.get("extra_special_tokens")  # a list: more special tokens; a dict: variables
    if (isinstance(named, dict) and named) or others:
        raise TokenizerError(
            f"{config_file}: model-specific special tokens ({', '.join(others) or 'extra_special_tokens'})"
            " are not served: they would be template variables this reader does not give"
        )
    if config.get("tokenizer_class") not in GENERIC_CLASSES and not all(
        k in special for k in ("bos_token", "eos_token", "unk_token", "pad_token")
    ):
        raise TokenizerError(
            f"{config_file}: tokenizer_class {config.get('tokenizer_class')!r} fills unnamed special"
            " tokens with its own defaults: name bos, eos, unk and pad tokens in the config"
        )
    vocab = pipeline.get_vocab(with_added_tokens=True)
    for key, text in special.items():
        if not isinstance(text, str) or text not in vocab:
            raise TokenizerError(f"{config_file}: {key} {text!r} is not a token of tokenizer.json")


LEGACY_FILES = ("added_tokens.json", "special_tokens_map.json")
"""Files older tokenizer saves wrote beside ``tokenizer.json``: refused rather than half-read."""


@functools.cache
def _byte_of() -> dict[str, int]:
    """The byte-level alphabet (GPT-2's ``bytes_to_unicode``, as transformers defines it) read
    back: character -> byte (imported on first use: the module is a large one)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _byte_level_bytes(token: str) -> bytes:
    """A token's bytes as a ``ByteLevel`` decoder reads them: each character's byte, or the
    token's UTF-8 where a character is outside the alphabet (an added token's text)."""
    try:
        byte_of = _byte_of()
        return bytes(byte_of[c] for c in token)
    except KeyError:
        return token.encode()


def _token_text(value: Any) -> Any:
    """A special token as the config writes it: its text, or ``{"content": text, ...}``."""
    if isinstance(value, dict):
        return value.get("content")
    if isinstance(value, list):
        return [_token_text(v) for v in value]
    return value


def _read_hf_files(path: Path) -> tuple[Any, dict[str, Any], str | dict[str, str] | None]:
    """The pipeline, special tokens and chat template of an HF tokenizer folder.

    Raises:
        TokenizerError: no ``tokenizer.json``, a `LEGACY_FILES` file, or a config that names added
            tokens the pipeline lacks (transformers would add them, changing the ids: save the
            tokenizer again).
    """
    from tokenizers import Tokenizer as Pipeline

    if not (path / "tokenizer.json").is_file():
        raise TokenizerError(f"{path}: no tokenizer.json")
    for legacy in LEGACY_FILES:
        if (path / legacy).is_file():
            raise TokenizerError(
                f"{path / legacy}: a legacy tokenizer file, not read here (transformers would merge"
                " it, other tokens or ids than tokenizer.json's): pull the model again, or fold it"
                " into tokenizer.json and tokenizer_config.json"
            )
    pipeline = Pipeline.from_file(str(path / "tokenizer.json"))
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    special = {k: _token_text(config[k]) for k in SPECIAL_TOKEN_KEYS if config.get(k) is not None}
    _check_config(config_file, config, special, pipeline)
    added = {i: t.content for i, t in pipeline.get_added_tokens_decoder().items()}
    for index, token in (config.get("added_tokens_decoder") or {}).items():
        if added.get(int(index)) != _token_text(token):
            raise TokenizerError(
                f"{config_file}: added token {index} ({_token_text(token)!r}) is not in tokenizer.json:"
                " save the tokenizer again"
            )
    template: str | dict[str, str] | None = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = {t["name"]: t["template"] for t in template}
    if (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    return pipeline, special, template


def _default_template(template: str | dict[str, str] | None) -> ChatTemplate | None:
    """The template chats are rendered with (a set of named ones: its ``default``)."""
    source = template.get("default") if isinstance(template, dict) else template
    if source is None:
        return None
    try:
        return ChatTemplate(source)
    except ChatTemplateError as exc:
        raise TokenizerError(str(exc)) from exc


def export_gguf_tokenizer(gguf_path: Path, out_dir: Path) -> Tokenizer:
    """Read the tokenizer of a GGUF file and save it as HF tokenizer files in ``out_dir``."""
    tok = Tokenizer(gguf_path.parent, gguf_file=gguf_path.name)
    tok.save(out_dir)
    return tok
