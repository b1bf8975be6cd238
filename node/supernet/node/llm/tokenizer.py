"""Tokenizer and chat template, read from the same files as the weights.

A thin wrapper over transformers' fast tokenizer that always speaks ``list[int]``. A GGUF file
carries its tokenizer and chat template in its metadata; ``export_gguf_tokenizer`` writes them out
once as ``tokenizer.json`` / ``tokenizer_config.json`` next to the converted weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast


class Tokenizer:
    """Encode, decode and apply the model's chat template.

    Args:
        path: A directory with ``tokenizer.json`` (and ``tokenizer_config.json``), or the directory
            of a GGUF file when ``gguf_file`` is given.
        gguf_file: Name of a GGUF file in ``path`` to read the tokenizer from.
    """

    def __init__(self, path: Path, gguf_file: str | None = None) -> None:
        from transformers import AutoTokenizer

        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        self._tok = AutoTokenizer.from_pretrained(str(path), **kwargs)

    @property
    def backend(self) -> Any:
        """The wrapped transformers tokenizer (for libraries that read it, e.g. llguidance)."""
        return self._tok

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
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a chat (``[{"role": ..., "content": ...}]``) rendered by the model's template."""
        out = self._tok.apply_chat_template(
            list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = cast(Any, out)["input_ids"]
        return [int(i) for i in cast("list[int]", out)]

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` and the chat template into ``path``."""
        self._tok.save_pretrained(str(path))


def export_gguf_tokenizer(gguf_path: Path, out_dir: Path) -> Tokenizer:
    """Read the tokenizer of a GGUF file and save it as HF tokenizer files in ``out_dir``."""
    tok = Tokenizer(gguf_path.parent, gguf_file=gguf_path.name)
    tok.save(out_dir)
    return tok
