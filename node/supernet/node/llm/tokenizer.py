"""Tokenizer and chat template, read from the same files as the weights.

A thin wrapper over transformers' fast tokenizer that always speaks ``list[int]``. A GGUF file
carries its tokenizer and chat template in its metadata; ``export_gguf_tokenizer`` writes them out
once as ``tokenizer.json`` / ``tokenizer_config.json`` next to the converted weights.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

_BEHAVIOUR_SETTINGS = (
    "add_bos_token",
    "add_eos_token",
    "add_prefix_space",
    "clean_up_tokenization_spaces",
    "split_special_tokens",
)
"""transformers' tokenizer settings that change encoding or decoding beyond the serialised pipeline
(decoding with ``clean_up_tokenization_spaces`` changes the text an agent reads)."""


class Tokenizer:
    """Encode, decode and apply the model's chat template.

    Args:
        path: A directory with ``tokenizer.json`` (and ``tokenizer_config.json``), or the directory
            of a GGUF file when ``gguf_file`` is given.
        gguf_file: Name of a GGUF file in ``path`` to read the tokenizer from.
    """

    def __init__(self, path: Path, gguf_file: str | None = None) -> None:
        from transformers import AutoTokenizer

        if gguf_file is None:
            self._tok = AutoTokenizer.from_pretrained(str(path))
            return
        # A GGUF's tokenizer is its own metadata alone: loaded from its folder, transformers merges
        # in a sibling tokenizer_config.json (a pulled model's folder holds one), which dropped
        # the chat template and the special tokens of the GGUF in the catalog's folder.
        with tempfile.TemporaryDirectory(prefix="supernet-gguf-") as alone:
            (Path(alone) / gguf_file).symlink_to((path / gguf_file).resolve())
            self._tok = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_file)

    @property
    def backend(self) -> Any:
        """The wrapped transformers tokenizer (for libraries that read it, e.g. llguidance)."""
        return self._tok

    def digest(self) -> str:
        """sha256 hex of what decides how messages become token ids and ids become text: the
        tokenizer's pipeline as the `tokenizers` library serialises it (vocabulary, merges,
        normalizer, pre-tokenizer, post-processor, decoder, added tokens), the special tokens, the
        chat template and the settings that act outside the pipeline (`_BEHAVIOUR_SETTINGS`), as
        canonical JSON. The same tokenizer read from HF files or from a
        GGUF's metadata gives the same digest; one changed merge, token or template byte does not.
        The weights manifest holds it (`supernet.node.llm.manifest`), so the model id names it."""
        pipeline = json.loads(self._tok.backend_tokenizer.to_str())
        merges = pipeline.get("model", {}).get("merges")
        if merges and isinstance(merges[0], str):  # tokenizers < 0.20 writes "a b", later ["a", "b"]
            pipeline["model"]["merges"] = [m.split(" ", 1) for m in merges]
        identity = {
            "pipeline": pipeline,
            "special_tokens": dict(self._tok.special_tokens_map),
            "chat_template": self._tok.chat_template,
            # settings of tokenizer_config.json that change ids or text outside the pipeline
            "settings": {name: getattr(self._tok, name, None) for name in _BEHAVIOUR_SETTINGS},
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
