"""The canonical weights manifest and the model id derived from it.

The manifest lists every tensor (sorted by name) with its dtype, shape and the sha256 of its raw
little-endian bytes, the architecture config, and the digest of the tokenizer and chat template
(`supernet.node.llm.tokenizer.Tokenizer.digest`). Its canonical JSON (sorted keys, no spaces,
UTF-8) hashes to the model id registered on chain: ``modelId = "0x" + sha256(canonical JSON)``.
Any change to a weight, a shape, a hyper-parameter, the vocabulary or the chat template changes
the id: what turns a user's messages into token ids is part of what a validator must re-run the
same way (format 1 hashed the weights alone, so two copies with one id could render a chat
differently, and a validator with the other copy accused an honest node).

>>> import torch
>>> m = build_manifest({"w": torch.zeros(2)}, {"dim": 2})
>>> model_id(m)[:2]
'0x'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import torch
from supernet.sdk.models import WEIGHTS_MANIFEST_FORMAT, canonical_json
from torch import Tensor

MANIFEST_FORMAT = WEIGHTS_MANIFEST_FORMAT
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def tensor_digest(t: Tensor, read: Callable[[Tensor], None] | None = None) -> str:
    """sha256 hex of a tensor's contiguous bytes (CPU, native little-endian). ``read`` is called
    with each chunk of those bytes (a uint8 tensor) once hashed."""
    data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    digest = hashlib.sha256()
    for start in range(0, data.numel(), HASH_CHUNK_BYTES):
        part = data[start : start + HASH_CHUNK_BYTES]
        digest.update(memoryview(cast(Any, part.numpy())))  # numpy arrays are buffers (no copy)
        if read is not None:
            read(part)
    return digest.hexdigest()


HASH_CHUNK_BYTES = 8 << 20
"""Bytes hashed at a time: a loader's ``read`` lets a mapped file's pages go chunk by chunk."""


def build_manifest(
    tensors: Mapping[str, Tensor],
    config: dict[str, Any],
    tokenizer: str | None = None,
    hashed: Callable[[Tensor], None] | None = None,
) -> dict[str, Any]:
    """The manifest of a state dict (HF names), its config (``LlamaConfig.to_dict()``) and the
    sha256 hex of its tokenizer (`Tokenizer.digest`; None for a model served without one).
    ``hashed`` is called with each chunk of a tensor's bytes once read (`tensor_digest`: the
    loader lets the pages of a mapped file go there)."""
    entries = []
    for name in sorted(tensors):  # one tensor at a time: a lazy mapping makes each as it is read
        t = tensors[name]
        entries.append(tensor_entry(name, t, tensor_digest(t, hashed)))
    return manifest_of(entries, config, tokenizer)


def tensor_entry(name: str, t: Tensor, sha256: str) -> dict[str, Any]:
    """One tensor's manifest entry; ``sha256`` is `tensor_digest`'s of ``t``."""
    return {
        "name": name,
        "dtype": _DTYPES.get(t.dtype, str(t.dtype)),
        "shape": list(t.shape),
        "sha256": sha256,
    }


def manifest_of(
    entries: Iterable[dict[str, Any]], config: dict[str, Any], tokenizer: str | None
) -> dict[str, Any]:
    """The manifest of `tensor_entry` entries (any order: they are sorted by name)."""
    tensors = sorted(entries, key=lambda e: e["name"])
    return {"format": MANIFEST_FORMAT, "config": config, "tensors": tensors, "tokenizer": tokenizer}


def model_id(manifest: dict[str, Any]) -> str:
    """``"0x"`` + sha256 hex of the manifest's canonical JSON."""
    return "0x" + hashlib.sha256(canonical_json(manifest)).hexdigest()
