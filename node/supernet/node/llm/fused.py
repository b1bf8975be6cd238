"""The float16-weights and int8-weights formats' CPU kernels in C: a fused decode step, and the
projections.

At decode batch sizes a step through torch issues ~1,800 small ops (30 blocks of norms, rope,
cache writes, attention, residuals, SwiGLU and their views); on a 2-core CPU their dispatch and
passes over tiny tensors cost as much as reading the 270 MB of float16 weights. `FusedDecoder`
runs a whole decode step of the running sequences in one call into ``csrc/decode_step.c``: the
same formulas as `supernet.node.llm.model.Llama` with `DecodeAttention` (float16 weights widened
in registers, float32 activations, sums, softmax and KV cache), in another summation order, as
any two batch shapes of the torch path differ (|Δlogit| ~1e-4; a validator's float16-weights
re-score does not depend on which kernel the node ran: docs/benchmarks/fused_decode.md).
`matmul` is the same file's projection for any number of rows, so the node keeps one plain
float16 copy of the weights (the embedding table is the tied head's) instead of fbgemm's packed
copy beside an embedding copy. In int8-weights (`supernet.node.llm.int8`) the same code reads int8
rows and a scale a row: the same float16-grid weights in half the bytes.

The library is compiled on first use with the system C compiler (``cc``; ~1 s) into
``~/.cache/supernet/kernels`` (``SUPERNET_KERNEL_DIR``), named by the hash of its source and
flags, and needs an x86-64 CPU with AVX2, FMA and F16C; a cached build needs no compiler. Where
any of that is missing, or ``SUPERNET_FUSED=0``, `available` is false and the model keeps the torch
path (fbgemm).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from supernet.node.llm import kernel_build
from supernet.node.llm.kernel_build import SOURCE
from torch import Tensor

if TYPE_CHECKING:
    from supernet.node.llm.config import LlamaConfig
    from supernet.node.llm.kvcache import KVPool
    from supernet.node.llm.model import Llama

log = logging.getLogger(__name__)

CPU_FLAGS = ("avx2", "fma", "f16c")
ENV_SWITCH = "SUPERNET_FUSED"
"""``SUPERNET_FUSED=0`` keeps every model on the torch path (comparisons, a suspected kernel bug)."""


class FusedKernelError(RuntimeError):
    """The C kernel refused its input (a position past the cache, a token past the vocabulary)."""


def _cpu_supported() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    lines = (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags"))
    flags = next(lines, [])
    return all(f in flags for f in CPU_FLAGS)


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get(ENV_SWITCH, "1") == "0" or not _cpu_supported():
        return None
    try:
        lib = ctypes.CDLL(str(kernel_build.build(source=SOURCE)))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        log.warning("fused kernels unavailable (the torch path serves instead): %s", detail)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.supernet_decode_step.restype = ctypes.c_int
    lib.supernet_decode_step.argtypes = [ptr, ptr, ptr, ctypes.c_float, i64, ptr, ptr, ptr, ptr, ptr]
    lib.supernet_decode_step.argtypes += [i64, i64, ptr, ptr, ptr, i64]
    lib.supernet_decode_scratch.restype = i64
    lib.supernet_decode_scratch.argtypes = [ptr, i64, i64]
    lib.supernet_matmul_f16.restype = None
    lib.supernet_matmul_f16.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64]
    lib.supernet_matmul_i8.restype = None
    lib.supernet_matmul_i8.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64]
    return lib


def available() -> bool:
    """Whether the fused kernels serve on this machine (builds them on first call)."""
    return _library() is not None


def matmul(weight16: Tensor, x: Tensor) -> Tensor:
    """``x @ weight16.float().T`` in float32 sums, ``weight16`` float16 ``[out, in]`` contiguous,
    ``x`` float32 ``[..., in]``; the same products as widening the weight, in another order."""
    lib = _library()
    assert lib is not None, "matmul needs the fused library (fused.available())"
    if weight16.dtype != torch.float16 or weight16.dim() != 2 or not weight16.is_contiguous():
        raise ValueError("matmul takes contiguous float16 weights [out, in]")
    return _project(lib.supernet_matmul_f16, x, weight16, weight16.data_ptr())


def matmul_i8(q8: Tensor, scale: Tensor, x: Tensor) -> Tensor:
    """``x @ (q8 * scale[:, None]).T`` in float32 sums: `matmul` over int8 rows ``[out, in]`` and
    their float32 scales ``[out]`` (int8-weights), each row's sum times its scale."""
    lib = _library()
    assert lib is not None, "matmul_i8 needs the fused library (fused.available())"
    if q8.dtype != torch.int8 or q8.dim() != 2 or scale.dtype != torch.float32 or scale.shape != q8.shape[:1]:
        raise ValueError("matmul_i8 takes int8 rows [out, in] and float32 scales [out]")
    if not (q8.is_contiguous() and scale.is_contiguous()) or scale.device.type != "cpu":
        raise ValueError("matmul_i8 takes contiguous int8 rows and float32 scales on the CPU")
    return _project(lib.supernet_matmul_i8, x, q8, q8.data_ptr(), scale.data_ptr())


def _project(kernel: Callable[..., None], x: Tensor, weight: Tensor, *weight_ptrs: int) -> Tensor:
    """``kernel(*weight_ptrs, x, out, rows, n_out, cols, threads)`` over ``x``'s rows: the C
    projections' one calling convention. The kernels read ``x`` as float32 rows of the weight's
    width on the CPU: anything else would be read as garbage, or past its end, so it is refused."""
    if weight.device.type != "cpu" or x.device.type != "cpu" or x.dtype != torch.float32:
        raise ValueError("the fused projections take float32 inputs and weights on the CPU")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input width {tuple(x.shape)[-1:]} is not the weight's {weight.shape[1]}")
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.float32)
    rows, (n_out, cols) = flat.shape[0], weight.shape
    kernel(*weight_ptrs, flat.data_ptr(), out.data_ptr(), rows, n_out, cols, torch.get_num_threads())
    return out.view(*x.shape[:-1], -1)


class FusedDecoder:
    """Decode steps of a float16-weights or int8-weights `Llama` through the C kernel.

    Holds a table of the model's weight addresses: the model must keep those tensors (it does:
    they are its parameters and buffers) and not be changed after this is made.
    """

    MAX_HEAD_DIM = 256
    """The widest attention head the kernel holds on its stack (``MAX_HEAD_DIM`` in the C file)."""

    @classmethod
    def supports(cls, cfg: LlamaConfig) -> bool:
        """Whether the kernel covers this architecture (else the torch path serves it)."""
        hd, kv = cfg.head_dim, cfg.n_kv_heads
        return 0 < hd <= cls.MAX_HEAD_DIM and hd % 2 == 0 and kv > 0 and cfg.n_heads % kv == 0

    def __init__(self, model: Llama) -> None:
        lib = _library()
        if lib is None:
            raise RuntimeError("the fused kernels are not available here (fused.available())")
        if not self.supports(model.cfg):
            raise ValueError("the fused kernel does not cover this architecture (FusedDecoder.supports)")
        self._lib = lib
        cfg = model.cfg
        self.dim, self.vocab, self.eps = cfg.dim, cfg.vocab_size, cfg.norm_eps
        self._keep: list[Tensor] = []
        self.int8 = model.int8_weights
        matrices = [self._matrix(model.tok_embeddings), self._matrix(model.output)]
        ptrs = [p for p, _ in matrices] + [
            self._f32(t) for t in (model.norm.weight, model.rope_cos, model.rope_sin)
        ]
        scales = [s for _, s in matrices] + [0, 0, 0]
        for block in model.blocks:
            att, ffn = block.attention, block.feed_forward
            matrices = [self._matrix(m) for m in (att.wqkv, att.wo, ffn.w13, ffn.w2)]
            ptrs += [p for p, _ in matrices]
            ptrs += [self._f32(block.attention_norm.weight), self._f32(block.ffn_norm.weight)]
            scales += [s for _, s in matrices] + [0, 0]
        self._ptrs = (ctypes.c_uint64 * len(ptrs))(*ptrs)
        self._scales = (ctypes.c_uint64 * len(scales))(*scales) if self.int8 else None
        dims = (cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim, cfg.vocab_size)
        self._cfg = (ctypes.c_int64 * 8)(*dims, cfg.n_layers, model.rope_cos.shape[0])
        self._local = threading.local()  # a scratch buffer per calling thread: engines may share a model

    def _matrix(self, module: torch.nn.Module) -> tuple[int, int]:
        """(weight address, scale address): int8 rows and their scales in int8-weights (0 for no
        scale in float16-weights)."""
        if not self.int8:
            weight = module.weight if isinstance(module, torch.nn.Embedding) else _weight16(module)
            return self._f16(weight), 0
        q8, scale = getattr(module, "q8", None), getattr(module, "scale", None)
        if (
            not (isinstance(q8, Tensor) and isinstance(scale, Tensor))
            or q8.dtype != torch.int8
            or not q8.is_contiguous()
        ):
            raise ValueError(
                f"{type(module).__name__} keeps no int8 rows (use_fp16_weights(fused=True, int8=True))"
            )
        self._keep.append(q8)
        return int(q8.data_ptr()), self._f32(scale)

    def _f16(self, t: Tensor) -> int:
        if t.dtype != torch.float16 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the fused decoder reads contiguous float16 weights on the CPU")
        self._keep.append(t)
        return int(t.data_ptr())

    def _f32(self, t: Tensor) -> int:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the fused decoder reads contiguous float32 norms and rope tables on the CPU")
        self._keep.append(t)
        return int(t.data_ptr())

    def step(self, pool: KVPool, tokens: list[int], positions: list[int]) -> tuple[Tensor, Tensor]:
        """Sequence ``r`` (in pool slot ``r``) feeds ``tokens[r]`` at ``positions[r]``; its keys
        and values go into the pool. Returns the final hidden states ``[R, dim]`` and the logits
        ``[R, vocab]``, as ``model(...)`` with `DecodeAttention` and ``model.logits`` would.

        Raises:
            FusedKernelError: an input the kernel refuses (nothing was written then).
        """
        if pool.dtype != torch.float32 or not (pool.k.is_contiguous() and pool.v.is_contiguous()):
            raise FusedKernelError("the fused decoder needs a contiguous float32 KV pool")
        rows = len(tokens)
        tok = torch.tensor(tokens, dtype=torch.int64)
        pos = torch.tensor(positions, dtype=torch.int64)
        slots = torch.arange(rows, dtype=torch.int64)
        need = self._lib.supernet_decode_scratch(self._cfg, rows, max(positions, default=0) + 1)
        scratch: Tensor = getattr(self._local, "scratch", torch.empty(0))
        if scratch.numel() < need:
            scratch = self._local.scratch = torch.empty(need, dtype=torch.float32)
        hidden = torch.empty(rows, self.dim, dtype=torch.float32)
        logits = torch.empty(rows, self.vocab, dtype=torch.float32)
        status = self._lib.supernet_decode_step(
            self._cfg,
            self._ptrs,
            self._scales,
            self.eps,
            rows,
            tok.data_ptr(),
            pos.data_ptr(),
            slots.data_ptr(),
            pool.k.data_ptr(),
            pool.v.data_ptr(),
            pool.slots,
            pool.capacity,
            hidden.data_ptr(),
            logits.data_ptr(),
            scratch.data_ptr(),
            torch.get_num_threads(),
        )
        if status != 0:
            raise FusedKernelError(
                f"fused decode step refused {rows} rows at positions {positions} (cache capacity"
                f" {pool.capacity}, {pool.slots} slots, vocabulary {self.vocab})"
            )
        return hidden, logits


def _weight16(module: torch.nn.Module) -> Tensor:
    weight = getattr(module, "weight16", None)
    if not isinstance(weight, Tensor):
        name = type(module).__name__
        raise ValueError(f"{name} keeps no plain float16 weight (use_fp16_weights(fused=True))")
    return weight
