"""The canonical weights manifest and the model id derived from it.

The manifest lists every tensor (sorted by name) with its dtype, shape and the sha256 of its raw
little-endian bytes, plus the architecture config. Its canonical JSON (sorted keys, no spaces,
UTF-8) hashes to the model id registered on chain: ``modelId = "0x" + sha256(canonical JSON)``.
Any change to a weight, a shape or a hyper-parameter changes the id.

>>> import torch
>>> m = build_manifest({"w": torch.zeros(2)}, {"dim": 2})
>>> model_id(m)[:2]
'0x'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import torch
from torch import Tensor

MANIFEST_FORMAT = "supernet-weights-manifest/1"
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def tensor_digest(t: Tensor) -> str:
    """sha256 hex of a tensor's contiguous bytes (CPU, native little-endian)."""
    data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(cast(Any, data))).hexdigest()  # numpy arrays are buffers (no copy)


def build_manifest(tensors: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a state dict (HF names) and its config (``LlamaConfig.to_dict()``)."""
    entries = [
        {
            "name": name,
            "dtype": _DTYPES.get(t.dtype, str(t.dtype)),
            "shape": list(t.shape),
            "sha256": tensor_digest(t),
        }
        for name, t in sorted(tensors.items())
    ]
    return {"format": MANIFEST_FORMAT, "config": config, "tensors": entries}


def canonical_json(manifest: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, compact separators, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def model_id(manifest: dict[str, Any]) -> str:
    """``"0x"`` + sha256 hex of the manifest's canonical JSON."""
    return "0x" + hashlib.sha256(canonical_json(manifest)).hexdigest()
