"""The KV cache: a preallocated pool of per-sequence slots, and the two ways the model attends over it.

The pool holds keys and values as ``[n_layers, slots, n_kv_heads, capacity, head_dim]``. The engine
keeps its active sequences in slots ``0..B-1`` (a retiring sequence's slot is filled by moving the
last one in), so a decode step attends over the view ``[:, :B, :, :L]`` with no gather, ``L`` the
longest sequence in the batch, and a boolean mask hides each row's positions past its own length.
Capacity grows by doubling (up to the engine's maximum sequence length) so short workloads stay small.

On CPU the pool lives in anonymous memory mappings: they read as zeros and a page becomes resident
only once a sequence writes it, so the cache costs what its sequences hold, not slots x capacity
(16 slots of 256 tokens reserve 180 MB for smollm2-135m; a node serving one short chat holds a few
MB of it). Growing copies only the slots in use, and `release` gives everything back when the
engine has been idle a while (a long sequence's doubling is no longer kept for good).
"""

from __future__ import annotations

import itertools
import math
import mmap
from collections import OrderedDict, deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from supernet.node.llm.config import LlamaConfig
from torch import Tensor


def common_length(a: Sequence[int], b: Sequence[int], limit: int | None = None) -> int:
    """How many leading tokens ``a`` and ``b`` share (at most ``limit``)."""
    n = min(len(a), len(b)) if limit is None else min(limit, len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KVPool:
    """Keys and values of up to ``slots`` sequences.

    Args:
        cfg: Model config (layers, kv heads, head width).
        slots: Most sequences held at once.
        max_capacity: Longest sequence (tokens) a slot may hold.
        device: Where the cache lives.
        dtype: Cache dtype (the model's).
        initial_capacity: Starting tokens per slot.
    """

    def __init__(
        self,
        cfg: LlamaConfig,
        slots: int,
        max_capacity: int,
        device: torch.device,
        dtype: torch.dtype,
        initial_capacity: int = 256,
    ) -> None:
        self.cfg, self.slots, self.max_capacity = cfg, slots, max_capacity
        self.device, self.dtype = device, dtype
        self.initial_capacity = min(initial_capacity, max_capacity)
        self.capacity: int
        self.k: Tensor
        self.v: Tensor
        self.release()  # allocates the empty pool at its initial capacity

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes one token of one sequence takes (keys and values, all layers)."""
        c = self.cfg
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * torch.empty((), dtype=self.dtype).element_size()

    def ensure_capacity(self, tokens: int, live_slots: int | None = None) -> None:
        """Grow every slot to hold at least ``tokens`` tokens (doubling), keeping the contents of
        slots ``0..live_slots-1`` (all without it; the engine's sequences sit in the first slots,
        and copying the idle ones would make their zeros resident)."""
        if tokens <= self.capacity:
            return
        if tokens > self.max_capacity:
            raise ValueError(f"{tokens} tokens exceed the cache capacity {self.max_capacity}")
        cap = max(tokens, min(self.max_capacity, 2 ** math.ceil(math.log2(max(tokens, 1)))))
        c = self.cfg
        shape = (c.n_layers, self.slots, c.n_kv_heads, cap, c.head_dim)
        k, v = self._zeros(shape), self._zeros(shape)
        live = self.slots if live_slots is None else min(live_slots, self.slots)
        if self.capacity and live:
            k[:, :live, :, : self.capacity] = self.k[:, :live]
            v[:, :live, :, : self.capacity] = self.v[:, :live]
        self.k, self.v, self.capacity = k, v, cap

    def release(self) -> None:
        """Give the cache's memory back: every slot empty, the capacity back to its initial size.
        Only when no sequence holds a slot (the engine calls it once idle)."""
        self.capacity = 0
        self.k = self.v = torch.empty(0)
        self.ensure_capacity(self.initial_capacity)

    def _zeros(self, shape: tuple[int, ...]) -> Tensor:
        """A zero tensor of ``shape``; on CPU an anonymous mapping, whose pages (zeros until written)
        become resident only when written, and go back to the OS with the tensor."""
        if self.device.type != "cpu":
            return torch.zeros(shape, device=self.device, dtype=self.dtype)
        size = math.prod(shape) * torch.empty((), dtype=self.dtype).element_size()
        return torch.frombuffer(mmap.mmap(-1, size), dtype=self.dtype).view(shape)

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` cached tokens of slot ``src`` into slot ``dst``."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    def export(self, slot: int, length: int) -> tuple[Tensor, Tensor]:
        """Copies (on CPU) of a slot's keys and values ``[n_layers, n_kv_heads, length, head_dim]``."""
        return (
            self.k[:, slot, :, :length].to("cpu", copy=True),
            self.v[:, slot, :, :length].to("cpu", copy=True),
        )

    def load(self, slot: int, keys: Tensor, values: Tensor, live_slots: int | None = None) -> None:
        """Write exported keys and values back into ``slot`` (``live_slots``: `ensure_capacity`)."""
        n = keys.shape[2]
        self.ensure_capacity(n, live_slots)
        self.k[:, slot, :, :n] = keys.to(self.device, self.dtype)
        self.v[:, slot, :, :n] = values.to(self.device, self.dtype)


class PrefillAttention:
    """Causal attention over fresh prompts (right-padded) that also stores their keys/values.

    Rows are stored in slots ``first_slot..first_slot+B-1``. Padding sits right of each prompt, so
    a causal mask alone keeps real tokens from seeing it; the padded cache entries lie past each
    row's length and are masked (then overwritten) during decoding.
    """

    def __init__(self, pool: KVPool, first_slot: int) -> None:
        self.pool, self.first = pool, first_slot

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, t = k.shape[0], k.shape[2]
        self.pool.k[layer, self.first : self.first + b, :, :t] = k
        self.pool.v[layer, self.first : self.first + b, :, :t] = v
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


class DecodeAttention:
    """One new token per sequence in slots ``0..B-1``, at per-row positions ``lengths``.

    In float32 the attention is PyTorch's fused kernel (``scaled_dot_product_attention`` with
    grouped-query heads and the rows' length mask): same products in another summation order
    (|Δlogit| ≤ 5e-5 measured on SmolLM2, the order of packed against plain matmuls), 1.03-1.06x
    a whole decode step at 1-16 rows on a quiet machine against the matmuls and softmax it
    replaced, more under load (1.1x at 1 row, 1.4x at 16 with other work on the 2 cores: fewer
    parallel regions to wait for a descheduled thread in); docs/benchmarks/decode_attention.md.
    Other dtypes keep that explicit form, whose rounding
    the bf16 tolerances were measured on: grouped-query attention without repeating keys, the
    query heads that share a kv head laid out as that head's rows, each group one small matmul
    against the cached keys, scores and softmax in float32.
    """

    def __init__(self, pool: KVPool, lengths: Tensor) -> None:
        self.pool = pool
        kv, cap, ns = pool.cfg.n_kv_heads, pool.capacity, lengths.tolist()
        self.write_rows, self.span = _decode_rows(ns, kv, cap, lengths.device)
        # no row shorter than the span (batch 1, or equal lengths): nothing to hide, and adding a
        # mask of zeros changes no score, so the step skips the mask and an add per layer
        self.bias = None if min(ns) == self.span - 1 else _decode_bias(lengths, self.span)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, _, d = q.shape
        kv = k.shape[1]
        keys, values = self.pool.k[layer], self.pool.v[layer]
        keys.view(-1, d).index_copy_(0, self.write_rows, k.reshape(-1, d))
        values.view(-1, d).index_copy_(0, self.write_rows, v.reshape(-1, d))
        keys, values = keys[:b, :, : self.span], values[:b, :, : self.span]
        if q.dtype == torch.float32:
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=self.bias, enable_gqa=kv != h)
        return grouped_attention(q, keys, values, self.bias)


def grouped_attention(q: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None) -> Tensor:
    """One decode token's attention ``[B, H, 1, d]`` over ``keys``/``values`` ``[B, KV, span, d]``
    in explicit matmuls: the query heads that share a kv head as that head's rows (no repeated
    keys), scores and softmax in float32, ``bias`` (``[B, 1, 1, span]``, -inf past a row's
    length) added. `DecodeAttention`'s form for dtypes other than float32."""
    b, h, _, d = q.shape
    kv = keys.shape[1]
    # in place on the matmul's fresh output: the same products and sums, two temporaries less
    scores = (q.reshape(b, kv, h // kv, d) @ keys.transpose(-1, -2)).float().mul_(1.0 / math.sqrt(d))
    if bias is not None:
        scores.add_(bias)
    probs = torch.softmax(scores, dim=-1).to(values.dtype)
    return (probs @ values).reshape(b, h, 1, d)


def _decode_rows(lengths: list[int], kv: int, cap: int, device: torch.device) -> tuple[Tensor, int]:
    """The flat row of (slot, head, position) of each decode token's keys/values in a layer's
    ``[slots * kv * cap, head_dim]`` view, and the attended span (the longest row's length + 1);
    from Python ints, one small tensor per step instead of a chain of index ops."""
    rows = [(slot * kv + head) * cap + n for slot, n in enumerate(lengths) for head in range(kv)]
    return torch.tensor(rows, dtype=torch.long, device=device), max(lengths) + 1


def _decode_bias(lengths: Tensor, span: int) -> Tensor:
    """The additive mask ``[B, 1, 1, span]`` hiding each row's positions past its own length."""
    keep = torch.arange(span, device=lengths.device)[None, :] <= lengths[:, None]
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=lengths.device)
    return bias.masked_fill_(~keep, float("-inf"))[:, None, None, :]


PREFIX_CACHE_BYTES = 128 * 2**20
"""Most bytes of keys/values the engine's `PrefixCache` holds beyond the KV pool (~2,900 tokens of
SmolLM2 in float32: a chat template's system turn many times over, one prompt near the context
limit once). Least recently used entries go first; the idle KV release empties it."""


class PrefixCache:
    """Keys and values of prompt prefixes that many requests share (a chat template's system turn).

    Many calls of an agent workload begin with the same tokens; prefilling them again for every
    call is most of a short prompt's cost. The engine remembers its recent prompts: when a new
    prompt shares at least ``min_tokens`` leading tokens with one of them, that common prefix is
    *proposed*, and once a sequence holding it has been prefilled its keys/values are copied here.
    Later prompts that start with a cached prefix load it into their slot and prefill only the
    rest. Entries are kept least-recently-used first, at most ``max_entries`` and ``max_bytes`` in
    all (a prefix larger than that is not kept); `clear` empties it (the engine's idle release).

    Keys/values at a position depend only on the tokens up to it (causal attention), so a cached
    prefix is the prefill's own result; only the summation order of the remaining tokens' attention
    differs (~1e-6), as between any two batch shapes.
    """

    def __init__(
        self,
        min_tokens: int = 16,
        max_entries: int = 8,
        history: int = 32,
        max_bytes: int = PREFIX_CACHE_BYTES,
    ) -> None:
        self.min_tokens, self.max_entries, self.max_bytes = min_tokens, max_entries, max_bytes
        self.entries: OrderedDict[tuple[int, ...], tuple[Tensor, Tensor]] = OrderedDict()
        self.recent: deque[tuple[int, ...]] = deque(maxlen=history)
        self.hits = 0
        self.bytes = 0  # what the entries hold

    def match(self, prompt: tuple[int, ...]) -> tuple[int, ...] | None:
        """The longest cached prefix of ``prompt`` that leaves at least one token to prefill."""
        best: tuple[int, ...] | None = None
        for prefix in self.entries:
            n = len(prefix)
            if n < len(prompt) and (best is None or n > len(best)) and prompt[:n] == prefix:
                best = prefix
        if best is not None:
            self.entries.move_to_end(best)
            self.hits += 1
        return best

    def propose(self, prompt: tuple[int, ...], have: int) -> int:
        """Length of a new prefix worth caching from ``prompt`` (0: none); remembers the prompt.

        ``have`` is the length of the cached prefix ``prompt`` already matched.
        """
        best = 0
        limit = len(prompt) - 1  # a prefix must leave a token to prefill
        for other in self.recent:
            best = max(best, common_length(prompt, other, limit))
        self.recent.append(prompt)
        if best < self.min_tokens or best <= have or prompt[:best] in self.entries:
            return 0
        return best

    def get(self, prefix: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The keys and values ``[n_layers, n_kv_heads, len(prefix), head_dim]`` of a cached prefix."""
        return self.entries[prefix]

    def fits(self, nbytes: int) -> bool:
        """Whether an entry of ``nbytes`` may be kept at all (within ``max_bytes``)."""
        return nbytes <= self.max_bytes

    def add(self, prefix: tuple[int, ...], keys: Tensor, values: Tensor) -> None:
        """Cache ``prefix``'s keys and values, evicting the least recently used entries while more
        than ``max_entries`` or ``max_bytes`` are held; an entry larger than ``max_bytes`` is not kept."""
        size = _nbytes(keys) + _nbytes(values)
        if not self.fits(size):
            return
        old = self.entries.pop(prefix, None)
        if old is not None:
            self.bytes -= _nbytes(old[0]) + _nbytes(old[1])
        self.entries[prefix] = (keys, values)
        self.bytes += size
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (k, v) = self.entries.popitem(last=False)
            self.bytes -= _nbytes(k) + _nbytes(v)

    def clear(self) -> None:
        """Drop every entry (the prompts remembered for proposals stay: token ids only)."""
        self.entries.clear()
        self.bytes = 0


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class PrefixPrefillAttention:
    """Like ``PrefillAttention``, for prompts whose first ``starts[r]`` tokens are already in the slot
    (a cached prefix, or the chunks of a long prompt prefilled in earlier steps).

    Row ``r`` holds prompt tokens ``starts[r]..starts[r] + lengths[r] - 1`` (right-padded to the
    batch's width ``T``); their keys and values are stored at those positions of slot
    ``first_slot + r``, and its queries attend over the slot's cached tokens and, causally, over
    themselves. A padding cell repeats its row's last token (`PackedStepAttention`), so it is
    stored where that token is, the same values again: nothing is written past a row's real
    tokens, and the attended span is the longest row's end, whatever the padding.
    """

    def __init__(
        self, pool: KVPool, first_slot: int, starts: Tensor, width: int, lengths: Sequence[int] | None = None
    ) -> None:
        self.pool, self.first = pool, first_slot
        b, kv, cap = starts.shape[0], pool.cfg.n_kv_heads, pool.capacity
        device = starts.device
        heads = torch.arange(kv, device=device)
        slots = torch.arange(first_slot, first_slot + b, device=device)
        t = torch.arange(width, device=device)
        real = torch.tensor([width] * b if lengths is None else list(lengths), device=device)
        pos = starts[:, None, None] + torch.minimum(t[None, None, :], real[:, None, None] - 1)
        self.write_rows = ((slots[:, None, None] * kv + heads[None, :, None]) * cap + pos).reshape(-1)
        self.span = int((starts + real).max())
        # query i of row r sees keys 0..starts[r] + i; as an additive float mask, built once per step
        # (SDPA would turn a boolean one into this in every layer: the same values, one op more each)
        seen = (torch.arange(self.span, device=device)[None, None, :] <= pos[:, 0, :, None])[:, None]
        self.mask = torch.zeros(seen.shape, dtype=pool.dtype, device=device).masked_fill_(
            ~seen, float("-inf")
        )

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        d = q.shape[-1]
        b = q.shape[0]
        keys, values = self.pool.k[layer], self.pool.v[layer]
        keys.view(-1, d).index_copy_(0, self.write_rows, k.reshape(-1, d))
        values.view(-1, d).index_copy_(0, self.write_rows, v.reshape(-1, d))
        keys = keys[self.first : self.first + b, :, : self.span]
        values = values[self.first : self.first + b, :, : self.span]
        return F.scaled_dot_product_attention(
            q, keys, values, attn_mask=self.mask, enable_gqa=q.shape[1] != keys.shape[1]
        )


class PackedStepAttention:
    """Decoding and prefilling in one forward pass: the step's tokens packed into one row ``[1, N]``.

    A step that admits new prompts used to run two forward passes, one to decode the running
    sequences and one to prefill the new ones; each pass reads every weight once and pays the
    model's per-layer overhead (on a 2-core CPU a batch-1 pass costs about half of a batch-16 one).
    Packing both into one pass pays that once. The projections and elementwise work are per
    token, so only attention needs the rows apart: the first ``D`` tokens are one decode token per
    slot ``0..D-1`` (``DecodeAttention``); the rest are the fresh prompts laid end to end, gathered
    into the right-padded ``[F, T]`` layout of ``PrefillAttention`` / ``PrefixPrefillAttention``
    and scattered back. Results equal the two-pass step's up to the rounding of another matmul
    shape (~1e-6), as between any two batch compositions.

    Args:
        decode: Attention of the ``n_decode`` decode tokens (``None``: no sequence decodes this step).
        n_decode: How many decode tokens lead the row.
        prefill: Attention of the fresh prompts in the padded layout (slots ``n_decode..``).
        lengths: Tokens each fresh prompt computes this step (its ``T``-padded row's real part).
        device: Where the index tensors live.
    """

    def __init__(
        self,
        decode: DecodeAttention | None,
        n_decode: int,
        prefill: PrefillAttention | PrefixPrefillAttention,
        lengths: list[int],
        device: torch.device,
    ) -> None:
        self.decode, self.n_decode, self.prefill = decode, n_decode, prefill
        self.rows, self.width = len(lengths), max(lengths)
        offsets = [0, *itertools.accumulate(lengths)]
        self.prompt_ends = [n_decode + end for end in offsets[1:]]  # one past each prompt's last token
        # packed index of each padded cell (padding repeats its row's last token: its keys/values
        # land past the prompt's end, masked and then overwritten, as the zero padding's did)
        pad = [offsets[r] + min(t, n - 1) for r, n in enumerate(lengths) for t in range(self.width)]
        self.pad_index = torch.tensor(pad, device=device)
        self.unpad_index = torch.tensor(
            [r * self.width + t for r, n in enumerate(lengths) for t in range(n)], device=device
        )
        self.single = self.rows == 1  # one prompt: the packed and padded layouts coincide

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        d, nd = q.shape[-1], self.n_decode
        out: list[Tensor] = []
        if self.decode is not None:
            dq, dk, dv = (x[0, :, :nd].transpose(0, 1)[:, :, None] for x in (q, k, v))
            out.append(self.decode.attend(layer, dq, dk, dv)[:, :, 0].transpose(0, 1))  # [H, D, d]
        fq, fk, fv = (self._padded(x[0, :, nd:]) for x in (q, k, v))
        y = self.prefill.attend(layer, fq, fk, fv)  # [F, H, T, d]
        y = y.transpose(0, 1).reshape(y.shape[1], -1, d)
        out.append(y if self.single else y.index_select(1, self.unpad_index))
        return torch.cat(out, dim=1)[None] if len(out) > 1 else out[0][None]

    def _padded(self, x: Tensor) -> Tensor:
        """Packed ``[heads, P, d]`` to padded ``[F, heads, T, d]``."""
        if not self.single:
            x = x.index_select(1, self.pad_index)
        return x.view(x.shape[0], self.rows, self.width, x.shape[-1]).transpose(0, 1)
