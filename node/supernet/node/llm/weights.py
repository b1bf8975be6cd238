"""Reading weights: GGUF files (dequantised) and Hugging Face safetensors directories.

Both give a ``LlamaConfig`` and a state dict named as in HF ``LlamaForCausalLM`` (fp32 from GGUF,
the stored dtype from safetensors). GGUF stores the q and k projections with the rows of each head
interleaved for llama.cpp's rotary layout; ``_unpermute`` restores the HF ("rotate half") order.

>>> cfg, tensors = read_gguf(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.errors import WeightsFormatError
from torch import Tensor

_GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_GGUF_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GGUF_NAMES:
        return _GGUF_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_GGUF_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    raise WeightsFormatError(f"unexpected GGUF tensor {gguf_name!r}")


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleaving of a q/k projection ``[n_heads*head_dim, dim]``."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def gguf_config(reader: Any) -> LlamaConfig:
    """The model config stored in a GGUF file's metadata (``llama.*`` keys)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise WeightsFormatError(f"GGUF architecture {arch!r} is not llama")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    vocab = _field(reader, "llama.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return LlamaConfig(
        vocab_size=int(vocab),
        dim=int(_field(reader, "llama.embedding_length")),
        n_layers=int(_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        hidden_dim=int(_field(reader, "llama.feed_forward_length")),
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        max_position=int(_field(reader, "llama.context_length", 2048)),
        tie_embeddings=not has_output,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
    )


ROWS_AT_ONCE = 4096
"""Rows of a GGUF matrix dequantised together (`GGUFTensors`)."""


class GGUFTensors(MutableMapping[str, Tensor]):
    """A GGUF file's tensors with HF names and layout, each dequantised to float32 when read (and
    again if read again; nothing is cached). Deleting a name forgets it; nothing can be set.

    The loader reads a GGUF through this: one dequantised tensor exists at a time (to hash it, then
    to put it in the served format), where the whole file's float32 (540 MB for SmolLM2) did.

    Raises:
        WeightsFormatError: (at construction) a tensor name that is not a Llama's, or one named
            twice; (when read) a tensor type the ``gguf`` package cannot dequantise.
    """

    def __init__(self, reader: Any, cfg: LlamaConfig) -> None:
        self._cfg = cfg
        self._entries: dict[str, Any] = {}
        for t in reader.tensors:
            name = _hf_name(t.name)
            if name in self._entries:
                raise WeightsFormatError(f"GGUF tensor {t.name!r} appears twice")
            self._entries[name] = t

    def __getitem__(self, name: str) -> Tensor:
        from gguf.quants import dequantize

        t = self._entries[name]
        shape = [int(d) for d in reversed(t.shape)]
        arr = np.empty(shape, dtype=np.float32)
        data = t.data
        # a matrix's rows a block at a time: dequantising makes temporaries several times the
        # float32 result (~400 MB for SmolLM2's embedding table at once)
        step = max(1, ROWS_AT_ONCE) if len(shape) == 2 and data.shape[0] == shape[0] else len(data)
        try:
            for start in range(0, max(1, len(data)), step):
                part = dequantize(data[start : start + step], t.tensor_type)
                if len(shape) == 2 and step < len(data):
                    arr[start : start + step] = part.reshape(-1, shape[1])
                else:
                    arr[...] = np.asarray(part, dtype=np.float32).reshape(shape)
        except NotImplementedError as exc:
            raise WeightsFormatError(f"{t.name}: cannot dequantise {t.tensor_type.name}") from exc
        if name.endswith("q_proj.weight"):
            arr = _unpermute(arr, self._cfg.n_heads)
        elif name.endswith("k_proj.weight"):
            arr = _unpermute(arr, self._cfg.n_kv_heads)
        return torch.from_numpy(np.ascontiguousarray(arr))

    def __contains__(self, name: object) -> bool:  # Mapping's own would dequantise it
        return name in self._entries

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __setitem__(self, name: str, value: Tensor) -> None:
        raise TypeError("a GGUF file's tensors are read, not set")

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def open_gguf(path: Path) -> tuple[LlamaConfig, GGUFTensors]:
    """A Llama GGUF file's config and its tensors, dequantised as they are read (`GGUFTensors`).

    Raises:
        WeightsFormatError: Not a Llama GGUF.
    """
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise WeightsFormatError(f"{path}: not a GGUF file ({exc})") from exc
    cfg = gguf_config(reader)
    return cfg, GGUFTensors(reader, cfg)


def read_gguf(
    path: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """Dequantise a Llama GGUF file into fp32 tensors with HF names and layout, all at once.

    Args:
        path: The ``.gguf`` file.
        progress: Called with (tensors done, tensors total) after each tensor.

    Raises:
        WeightsFormatError: Not a Llama GGUF, or a tensor type the ``gguf`` package cannot dequantise.
    """
    cfg, lazy = open_gguf(path)
    out: dict[str, Tensor] = {}
    for i, name in enumerate(list(lazy)):
        out[name] = lazy[name]
        if progress:
            progress(i + 1, len(lazy))
    return cfg, out


def read_hf_dir(path: Path) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """Read ``config.json`` and every ``*.safetensors`` file (sharded or not) of an HF model directory.

    Raises:
        WeightsFormatError: No config or no safetensors files, or a tensor name found in two files
            (which one is the model would be a choice of file order; transformers follows an index).
    """
    cfg_file = path / "config.json"
    files = sorted(path.glob("*.safetensors"))
    if not cfg_file.is_file() or not files:
        raise WeightsFormatError(f"{path}: needs config.json and *.safetensors")
    cfg = LlamaConfig.from_hf(json.loads(cfg_file.read_text()))
    tensors: dict[str, Tensor] = {}
    for f in files:
        shard = load_file(f)
        if twice := sorted(shard.keys() & tensors.keys()):
            raise WeightsFormatError(f"{f}: tensor {twice[0]} is also in another shard of {path}")
        tensors.update(shard)
    return cfg, tensors


def write_hf_dir(path: Path, cfg: LlamaConfig, tensors: dict[str, Tensor]) -> None:
    """Write ``config.json`` and ``model.safetensors`` (atomically: temp file then rename)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2) + "\n")
