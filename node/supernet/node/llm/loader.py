"""Loading a model by catalog name or path, and choosing the device and dtype.

Accepted sources: a catalog name (pulled into the cache), an HF directory with ``config.json``
and ``*.safetensors``, a ``.gguf`` file, or a directory holding exactly one ``.gguf``. The tokenizer
is read from the same place. The model id is computed from the tensors as loaded and the
tokenizer's digest (`supernet.node.llm.manifest`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from supernet.node.llm.catalog import resolve_model_dir
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.manifest import (
    MANIFEST_FORMAT,
    manifest_of,
    model_id,
    tensor_digest,
    tensor_entry,
)
from supernet.node.llm.model import Llama
from supernet.node.llm.tokenizer import Tokenizer
from supernet.node.llm.weights import open_gguf, read_hf_dir
from supernet.sdk.models import COMPUTE_PRECISIONS, CPU_DEFAULT_COMPUTE, WEIGHT_FORMATS
from torch import Tensor


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (no fast bf16 on our CPUs, and bit-stable), bf16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def default_compute(device: torch.device) -> str:
    """The served format a node uses unless told: ``int8-weights`` on CPU, bf16 on CUDA.

    On CPU a decode step at a few sequences is bound by reading every weight: int8 rows with a
    scale a row (`supernet.node.llm.int8`) read half float16's bytes (a fused step 1.5x faster at
    one sequence, 1.1x at sixteen), agree with float32 as closely as llama.cpp's 4-bit files do
    (top-1 0.95, docs/benchmarks/format_agreement.md), and stay as checkable as float32: the
    format is float16-weights arithmetic on its grid, which a validator re-scores exactly, and its
    logits do not depend on the batch. ``float16-weights`` (top-1 0.999) is the choice where
    answers must track float32's closely.
    """
    return "bfloat16" if device.type == "cuda" else CPU_DEFAULT_COMPUTE


def compute_dtype(compute: str) -> torch.dtype:
    """The activations' dtype of a served format (`supernet.sdk.models.COMPUTE_PRECISIONS`).

    Raises:
        ValueError: not a served format.
    """
    if compute not in COMPUTE_PRECISIONS:
        raise ValueError(f"compute format must be one of {', '.join(COMPUTE_PRECISIONS)}, not {compute!r}")
    return torch.float32 if compute in WEIGHT_FORMATS else getattr(torch, compute)


@dataclass
class LoadedModel:
    """A model ready to serve: weights on their device, tokenizer, id and manifest."""

    model: Llama
    tokenizer: Tokenizer | None
    model_id: str
    manifest: dict
    path: Path


def load_model(
    name_or_path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    max_positions: int | None = None,
    compute: str | None = None,
    fused: bool = False,
) -> LoadedModel:
    """Load weights, tokenizer and model id.

    Args:
        dtype: the model's dtype (None: ``compute``'s, else `default_dtype`).
        compute: a served format (`supernet.sdk.models.COMPUTE_PRECISIONS`); ``float16-weights``
            rounds the weights to float16 (`Llama.use_fp16_weights`), ``int8-weights`` then puts
            them on the int8 grid (`supernet.node.llm.int8`). Not with ``dtype``.
        fused: in ``float16-weights`` or ``int8-weights`` on a CPU, serve with the C kernels where they build
            (`supernet.node.llm.fused`: the node's engine); a validator's scorer keeps fbgemm.

    Raises:
        ModelNotFoundError: Unknown name or missing path.
        WeightsFormatError: Nothing loadable at the path.
        ValueError: an unknown ``compute``, or ``compute`` and ``dtype`` both given.
    """
    if compute is not None and dtype is not None:
        raise ValueError("give the compute format or the dtype, not both")
    path = resolve_model_dir(name_or_path)
    dev = torch.device(device) if device is not None else default_device()
    dt = compute_dtype(compute) if compute is not None else dtype or default_dtype(dev)
    cfg: LlamaConfig
    tensors: MutableMapping[str, Tensor]
    if path.is_dir() and (path / "config.json").is_file():
        cfg, tensors = read_hf_dir(path)
        tok_src: tuple[Path, str | None] = (path, None)
    else:
        ggufs = [path] if path.is_file() else sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise WeightsFormatError(f"{path}: expected config.json + safetensors or one .gguf file")
        cfg, tensors = open_gguf(ggufs[0])  # each tensor dequantised when read
        tok_src = (ggufs[0].parent, ggufs[0].name)
    has_tokenizer = tok_src[1] is not None or (path / "tokenizer.json").is_file()
    tokenizer = Tokenizer(*tok_src) if has_tokenizer else None
    digest = None if tokenizer is None else tokenizer.digest()
    # One pass in every format: each tensor is hashed from the very bytes that are converted (a
    # private copy of each chunk), so the id names what is computed even if the file changes
    # meanwhile; the file's mapped pages go once read, so a load holds one block in the file's format
    weight_format = compute in WEIGHT_FORMATS
    matrices, vectors = (torch.float16, torch.float32) if weight_format else (dt, dt)
    source = _ReadOnceSource(tensors, dev, _MappedPages(path), matrices, vectors)
    del tensors  # the source holds the only references: each goes as it is read
    if weight_format:
        model = Llama.from_hf_state_dict(cfg, source, max_positions, weight_format=compute, fused=fused)
    else:
        model = Llama.from_hf_state_dict(cfg, source, max_positions)
        # the rope tables are computed in float32 and kept so, rounded through the model's dtype
        # as they always were (a bfloat16 model's tables are bfloat16 values)
        model.to(dtype=dt)
        model.rope_cos, model.rope_sin = model.rope_cos.float(), model.rope_sin.float()
    manifest = manifest_of(source.hash_the_rest(), cfg.to_dict(), digest)
    _check_cached_manifest(path, model_id(manifest))
    _give_back_freed_memory()
    return LoadedModel(model, tokenizer, model_id(manifest), manifest, path)


def _check_cached_manifest(path: Path, computed_id: str) -> None:
    """A ``manifest.json`` beside the weights (``supernet model pull`` writes one) must name what was
    loaded: a mismatch is a corrupt or edited copy, or one pulled by an older version.

    Raises:
        WeightsFormatError: the recorded manifest is of another format or names another id.
    """
    cached = path / "manifest.json"
    if not cached.is_file():
        return
    doc = json.loads(cached.read_text())
    if doc.get("format") != MANIFEST_FORMAT:
        raise WeightsFormatError(
            f"{path}: manifest.json is of format {doc.get('format')!r}, not {MANIFEST_FORMAT!r}"
            " (pulled by an older version): run `supernet model pull` again"
        )
    if doc.get("model_id") != computed_id:
        raise WeightsFormatError(
            f"{path}: weights or tokenizer do not match manifest.json (corrupt or edited copy, or"
            " pulled under another tokenizers/transformers release): run `supernet model pull` again"
        )


CHUNK_BYTES = 8 << 20
"""How much of a mapped tensor is read (then its pages let go) at once: the embedding table alone
is 113 MB of float32, resident while it was hashed or copied whole."""


class _ReadOnceSource(Mapping[str, Tensor]):
    """The file's tensors as a served format takes them, each made only when it is read: a matrix
    in ``matrix_dtype`` (float16 in the weight formats), a vector (the norms) in ``vector_dtype``,
    on ``device``; always a copy, even where the dtype already matches, since a tensor left in the
    file's mapping keeps it resident. Each tensor is hashed from a private copy of each chunk, the
    bytes then converted (``entries``), so the model id names what the model computes.

    Each name is read once (`Llama.from_hf_state_dict` reads so): its source tensor leaves the
    mapping as its copy is made (a dequantised GGUF's is freed) and ``release`` lets its mapped
    pages go. The model, converted block by block as it is built, thus never holds the whole
    model twice, in the file's format and its own (docs/node.md "Memory").
    """

    def __init__(
        self,
        tensors: MutableMapping[str, Tensor],
        device: torch.device,
        release: _MappedPages | None,
        matrix_dtype: torch.dtype = torch.float16,
        vector_dtype: torch.dtype = torch.float32,
    ) -> None:
        self._tensors, self._device, self._release = tensors, device, release
        self._dtypes = (matrix_dtype, vector_dtype)
        self.entries: list[dict] = []  # `manifest.tensor_entry` of each tensor read, as read

    def hash_the_rest(self) -> list[dict]:
        """`entries`, with those of the tensors nobody read (the id names every tensor of the file)."""
        for name in list(self._tensors):
            t = self._tensors.pop(name)
            self.entries.append(tensor_entry(name, t, tensor_digest(t, self._release)))
        return self.entries

    def __getitem__(self, name: str) -> Tensor:
        """The tensor in its served dtype.

        Raises:
            KeyError: no such tensor, or it was read already.
            WeightsFormatError: not floating point, or a value that is not finite once rounded
                (NaN, inf, or beyond the dtype's range: the model would compute NaN, and other
                kernels other numbers (fbgemm clamps, the C kernels do not), so a node and its
                validators would disagree).
        """
        source = self._tensors.pop(name)
        if not source.is_floating_point():
            raise WeightsFormatError(f"{name}: weights are floating point, not {source.dtype}")
        _give_back_freed_memory()  # the last block's temporaries go before this one's are made
        dtype = self._dtypes[0] if source.dim() == 2 else self._dtypes[1]
        copy = torch.empty(source.shape, dtype=dtype, device=self._device)
        flat, flat_copy = source.detach().cpu().reshape(-1), copy.view(-1)
        step = max(1, CHUNK_BYTES // source.element_size())
        digest = hashlib.sha256()
        for start in range(0, flat.numel(), step):  # a chunk's mapped pages resident at a time
            mapped = flat[start : start + step]
            part = mapped.clone()  # read once: what is hashed is what is converted
            if self._release is not None:
                self._release(mapped)
            digest.update(memoryview(cast(Any, part.view(torch.uint8).numpy())))
            done = flat_copy[start : start + step]
            done.copy_(part)
            if not torch.isfinite(done).all():
                raise WeightsFormatError(
                    f"{name}: a weight that is not finite in {dtype} (NaN, inf, or beyond its range)"
                )
        self.entries.append(tensor_entry(name, source, digest.hexdigest()))
        return copy

    def __contains__(self, name: object) -> bool:  # Mapping's own would read (and so consume) it
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


class _MappedPages:
    """Lets the resident pages of tensors that live in a model file's read-only mapping go.

    The safetensors reader maps the file; each page read stays resident while the mapping lives,
    so hashing then rounding a 540 MB float32 file held all of it beside the float16 copy (a load
    peak of ~1.15 GB for a node that then keeps ~0.75 GB). ``madvise(MADV_DONTNEED)`` on a
    private file mapping drops the pages and a later read refills them from the file; a page
    written since the mapping was made would lose the writes, and nothing writes to the loaded
    tensors (the loader only reads them, to hash and to copy). Only ranges inside a private
    mapping of one of ``folder``'s ``.safetensors`` files (read from ``/proc/self/maps``) are
    touched: the same call on anonymous memory would zero it.
    Linux/glibc only; elsewhere it does nothing.
    """

    _MADV_DONTNEED = 4

    def __init__(self, folder: Path) -> None:
        files = {str(f.resolve()) for f in folder.glob("*.safetensors")} if folder.is_dir() else set()
        self._ranges: list[tuple[int, int]] = []
        self._madvise = None
        try:
            maps = Path("/proc/self/maps").read_text().splitlines() if files else []
            self._madvise = ctypes.CDLL("libc.so.6").madvise if maps else None
        except (OSError, AttributeError):
            return
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() in files and parts[1].endswith("p"):  # private
                start, end = (int(x, 16) for x in parts[0].split("-"))
                self._ranges.append((start, end))

    def __call__(self, t: Tensor) -> None:
        if self._madvise is None or t.device.type != "cpu":
            return
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        if not any(a <= start and end <= b for a, b in self._ranges):
            return
        first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:  # whole pages only: a page shared with a neighbour is dropped with it
            self._madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), self._MADV_DONTNEED)


def _give_back_freed_memory() -> None:
    """Return the loader's freed temporaries to the OS. Tensors of a few MB come from malloc's heap,
    which keeps what is freed in its middle: after a load that was ~300 MB of resident memory
    nobody used (docs/benchmarks/memory.md). glibc only; elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
