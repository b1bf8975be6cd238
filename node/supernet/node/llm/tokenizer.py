"""Tokenizer and chat template, read from the same files as the weights.

A thin wrapper over transformers' fast tokenizer that always speaks ``list[int]``. A GGUF file
carries its tokenizer and chat template in its metadata; ``export_gguf_tokenizer`` writes them out
once as ``tokenizer.json`` / ``tokenizer_config.json`` next to the converted weights.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

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
        TokenizerError: the chat template renders differently each time (`UNREPEATABLE`).
    """

    def __init__(self, path: Path, gguf_file: str | None = None) -> None:
        from tokenizers import Tokenizer as Pipeline
        from transformers import AutoTokenizer

        if gguf_file is None:
            self._tok = AutoTokenizer.from_pretrained(str(path))
        else:
            # A GGUF's tokenizer is its own metadata alone: loaded from its folder, transformers
            # merges in a sibling tokenizer_config.json (a pulled model's folder holds one), which
            # dropped the chat template and the special tokens of the GGUF in the catalog's folder.
            with tempfile.TemporaryDirectory(prefix="supernet-gguf-") as alone:
                (Path(alone) / gguf_file).symlink_to((path / gguf_file).resolve())
                self._tok = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_file)
        self._pipeline = self._tok.backend_tokenizer
        _check_template(self._tok.chat_template)
        self._digest = self._fresh_digest()  # before any use: transformers edits the pipeline on use
        # The same pipeline reading special tokens as plain text (a message's text), and what the
        # pipeline's special tokens are: the only ids a chat's text may not make.
        self._plain = Pipeline.from_str(self._pipeline.to_str())
        self._plain.encode_special_tokens = True
        added = self._pipeline.get_added_tokens_decoder()
        self._special_ids = frozenset(i for i, t in added.items() if t.special)
        self._special_texts = tuple(t.content for t in added.values() if t.special)

    @property
    def backend(self) -> Any:
        """The wrapped transformers tokenizer (for libraries that read it, e.g. llguidance)."""
        return self._tok

    def digest(self) -> str:
        """sha256 hex of what decides how messages become token ids and ids become text: the
        tokenizer's pipeline as the `tokenizers` library serialises it (vocabulary, merges,
        normalizer, pre-tokenizer, post-processor, decoder, added tokens), the special tokens (the
        template's variables) and the chat template, as canonical JSON, taken when the files were
        loaded. The same tokenizer read from HF files or from a GGUF's metadata gives the same
        digest; one changed merge, token or template byte does not. The weights manifest holds it
        (`supernet.node.llm.manifest`), so the model id names it."""
        return self._digest

    def _fresh_digest(self) -> str:
        pipeline = json.loads(self._pipeline.to_str())
        # state transformers sets and clears at its first call, not a property of the files
        pipeline["truncation"] = pipeline["padding"] = None
        merges = pipeline.get("model", {}).get("merges")
        if merges and isinstance(merges[0], str):  # tokenizers < 0.20 writes "a b", later ["a", "b"]
            pipeline["model"]["merges"] = [m.split(" ", 1) for m in merges]
        identity = {
            "pipeline": pipeline,
            "special_tokens": dict(self._tok.special_tokens_map),
            "chat_template": self._tok.chat_template,
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-sequence token (the chat template's end-of-turn for instruct models)."""
        return self._tok.eos_token_id

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included."""
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self._pipeline.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``."""
        return str(self._pipeline.decode(list(ids), skip_special_tokens=skip_special_tokens))

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
            forged = next((t for t in self._special_texts if isinstance(role, str) and t in role), None)
            if forged is not None:
                raise ValueError(f"a message's role holds the special token {forged!r}: a role is a name")
        # what the rendered text holds besides the placeholders (a message's text is not rescanned)
        known = [str(self._tok.chat_template), *self._special_texts, *(str(m.get("role")) for m in chat)]
        nonce = next(n for n in itertools.count() if not any(f"{SLOT_OPEN}{n}:" in k for k in known))
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
        encoding = self._pipeline.encode(skeleton, add_special_tokens=False)
        for token, (begin, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token not in self._special_ids:
                continue
            if any(begin < slot_end and slot_begin < end for slot_begin, slot_end in slots):
                raise TokenizerError("a special token of the chat template overlaps a message's text")
            ids += self._plain.encode(fill(skeleton[start:begin]), add_special_tokens=False).ids
            ids.append(token)
            start = end
        ids += self._plain.encode(fill(skeleton[start:]), add_special_tokens=False).ids
        return ids

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        text = self._tok.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return cast(str, text)

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and the chat template into ``path``."""
        self._tok.save_pretrained(str(path))


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


def export_gguf_tokenizer(gguf_path: Path, out_dir: Path) -> Tokenizer:
    """Read the tokenizer of a GGUF file and save it as HF tokenizer files in ``out_dir``."""
    tok = Tokenizer(gguf_path.parent, gguf_file=gguf_path.name)
    tok.save(out_dir)
    return tok
