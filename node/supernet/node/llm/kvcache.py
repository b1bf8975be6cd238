"""The KV cache: a preallocated pool of per-sequence slots, and the two ways the model attends over it.

The pool holds keys and values as ``[n_layers, slots, n_kv_heads, capacity, head_dim]``. The engine
keeps its active sequences in slots ``0..B-1`` (a retiring sequence's slot is filled by moving the
last one in), so a decode step attends over the view ``[:, :B, :, :L]`` with no gather, ``L`` the
longest sequence in the batch, and a boolean mask hides each row's positions past its own length.
Capacity grows by doubling (up to the engine's maximum sequence length) so short workloads stay small.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from supernet.node.llm.config import LlamaConfig
from torch import Tensor


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
        self.capacity = 0
        self.k = self.v = torch.empty(0)
        self.ensure_capacity(min(initial_capacity, max_capacity))

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes one token of one sequence takes (keys and values, all layers)."""
        c = self.cfg
        return 2 * c.n_layers * c.n_kv_heads * c.head_dim * torch.empty((), dtype=self.dtype).element_size()

    def ensure_capacity(self, tokens: int) -> None:
        """Grow every slot to hold at least ``tokens`` tokens (doubling), keeping the contents."""
        if tokens <= self.capacity:
            return
        if tokens > self.max_capacity:
            raise ValueError(f"{tokens} tokens exceed the cache capacity {self.max_capacity}")
        cap = max(tokens, min(self.max_capacity, 2 ** math.ceil(math.log2(max(tokens, 1)))))
        c = self.cfg
        shape = (c.n_layers, self.slots, c.n_kv_heads, cap, c.head_dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        if self.capacity:
            k[:, :, :, : self.capacity] = self.k
            v[:, :, :, : self.capacity] = self.v
        self.k, self.v, self.capacity = k, v, cap

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

    def load(self, slot: int, keys: Tensor, values: Tensor) -> None:
        """Write exported keys and values back into ``slot``."""
        n = keys.shape[2]
        self.ensure_capacity(n)
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

    Grouped-query attention without repeating keys: the query heads that share a kv head are laid
    out as that head's rows, so each group is one small matmul against the cached keys.
    """

    def __init__(self, pool: KVPool, lengths: Tensor) -> None:
        self.pool = pool
        b, kv, cap = lengths.shape[0], pool.cfg.n_kv_heads, pool.capacity
        # flat row of (slot, head, position) in a layer's [slots * kv * cap, head_dim] view
        heads = torch.arange(kv, device=lengths.device)
        slots = torch.arange(b, device=lengths.device)
        self.write_rows = ((slots[:, None] * kv + heads[None, :]) * cap + lengths[:, None]).reshape(-1)
        self.span = int(lengths.max()) + 1
        keep = torch.arange(self.span, device=lengths.device)[None, :] <= lengths[:, None]
        self.bias = torch.zeros(keep.shape, dtype=torch.float32, device=lengths.device)
        self.bias.masked_fill_(~keep, float("-inf"))
        self.bias = self.bias[:, None, None, :]

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, _, d = q.shape
        kv = k.shape[1]
        keys, values = self.pool.k[layer], self.pool.v[layer]
        keys.view(-1, d).index_copy_(0, self.write_rows, k.reshape(-1, d))
        values.view(-1, d).index_copy_(0, self.write_rows, v.reshape(-1, d))
        keys, values = keys[:b, :, : self.span], values[:b, :, : self.span]
        qg = q.reshape(b, kv, h // kv, d)
        scores = (qg @ keys.transpose(-1, -2)).float() * (1.0 / math.sqrt(d)) + self.bias
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        return (probs @ values).reshape(b, h, 1, d)
