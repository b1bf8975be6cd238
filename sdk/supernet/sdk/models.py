"""Served model ids: which weights, computed in which precision.

A receipt's ``modelId`` is what the user signs, so it must name everything a validator holds the
node to. The weights alone do not: the same weights computed in bfloat16 give other logits than in
float32, and the validator's tolerance depends on the precision. If the precision were only the
node's word (a field in the trace), a node computing in float32 could *claim* bfloat16 and be
judged with the looser bf16 bounds. So the id a node serves, registers and has users sign is

    servedId = sha256(canonical JSON of {"compute": <precision>, "format": SERVED_FORMAT,
                                         "weights": <weights id>})

with ``weightsId = sha256(canonical weights manifest)`` (`supernet.node.llm.manifest`). The served
manifest is registrable on chain like a weights manifest (`ModelRegistry.registerModel` hashes the
bytes it is given), and a validator that holds the weights finds the precision from the signed id
alone (`compute_of`). Weight formats are ``compute`` values too (``float16-weights``).

>>> w = "0x" + "ab" * 32
>>> compute_of(served_model_id(w, "bfloat16"), w)
'bfloat16'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted-key compact JSON, UTF-8: the encoding of model weight manifests (``modelId``) and of
    served manifests. Here, not beside the receipts, so that loading a model (the engine) does not
    import the chain's libraries (~40 MB of a process that only computes).

    Task inputs and tool actions use `supernet.sdk.chain.receipts.canonical_input` (RFC 8785).
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


SERVED_FORMAT = "supernet-served-model/1"
WEIGHTS_MANIFEST_FORMAT = "supernet-weights-manifest/2"
"""The weights manifest's ``format`` (`supernet.node.llm.manifest`): version 2 adds the tokenizer's
digest, so a copy pulled under version 1 names another id and is converted again. Any change to
what the manifest or `Tokenizer.digest` hashes must bump it (and the Makefile's model stamp):
pulled copies are recognised as stale by this string alone."""
COMPUTE_PRECISIONS = ("float32", "bfloat16", "float16-weights", "int8-weights")
"""The compute formats a served id can name: torch dtype names (weights, activations and sums in
that dtype), ``float16-weights``: weights rounded to float16, activations, sums and the KV cache in
float32, and ``int8-weights``: those float16 weights put on an int8 grid, a scale a row
(`supernet.node.llm.int8`), computed as float16-weights (docs/benchmarks/formats.md)."""
WEIGHT_FORMATS = ("float16-weights", "int8-weights")
"""The compute formats that are float32 arithmetic over rounded weights: loaded from a float16
copy of the weights, and re-scored in their own format under float32's tight bounds."""
CPU_DEFAULT_COMPUTE = "int8-weights"
"""The format a node on a CPU serves unless its operator sets another (`[engine] dtype`)."""


def served_manifest(weights_id: str, compute: str) -> bytes:
    """The canonical bytes whose sha256 is the served id (what ``registerModel`` is given).

    Raises:
        ValueError: ``compute`` is not a known precision, or ``weights_id`` is not a 0x id.
    """
    if compute not in COMPUTE_PRECISIONS:
        raise ValueError(f"compute precision must be one of {', '.join(COMPUTE_PRECISIONS)}, not {compute!r}")
    digest = weights_id.lower().removeprefix("0x")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"weights id must be 0x + 64 hex digits, not {weights_id!r}")
    return canonical_json({"compute": compute, "format": SERVED_FORMAT, "weights": "0x" + digest})


def served_model_id(weights_id: str, compute: str) -> str:
    """``0x`` + sha256 hex of `served_manifest`: the id receipts carry."""
    return "0x" + hashlib.sha256(served_manifest(weights_id, compute)).hexdigest()


def compute_of(model_id: str, weights_id: str) -> str | None:
    """The precision ``model_id`` serves ``weights_id`` in, or None if it does not serve them."""
    wanted = model_id.lower()
    for compute in COMPUTE_PRECISIONS:
        if served_model_id(weights_id, compute) == wanted:
            return compute
    return None
