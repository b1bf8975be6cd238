"""Tokenizer and chat template, read from the same files as the weights.

A thin wrapper over transformers' fast tokenizer that always speaks ``list[int]``. A GGUF file
carries its tokenizer and chat template in its metadata; ``export_gguf_tokenizer`` writes them out
once as ``tokenizer.json`` / ``tokenizer_config.json`` next to the converted weights.
"""

from __future__ import annotations

import hashlib
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
    """The tokenizer's files cannot be served: what they do would not be the same on re-execution."""


class Tokenizer:
    """Encode, decode and apply the model's chat template.

    Encoding and decoding go straight to the `tokenizers` pipeline (``backend_tokenizer``), whose
    serialisation `digest` hashes whole: no setting of transformers' wrapper (clean-up of spaces,
    split special tokens, BOS/EOS flags) changes what a node or a validator computes. The chat
    template is rendered by transformers (its sandbox) to text, then encoded the same way.

    Args:
        path: A directory with ``tokenizer.json`` (and ``tokenizer_config.json``), or the directory
            of a GGUF file when ``gguf_file`` is given.
        gguf_file: Name of a GGUF file in ``path`` to read the tokenizer from.

    Raises:
        TokenizerError: the chat template renders differently each time (`UNREPEATABLE`).
    """

    def __init__(self, path: Path, gguf_file: str | None = None) -> None:
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
        """Token ids of a chat (``[{"role": ..., "content": ...}]``) rendered by the model's template."""
        text = self._tok.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return self.encode(cast(str, text))

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
