"""The Llama-family decoder: one readable module after nanoGPT / gpt-fast.

Layout differences from Hugging Face's ``LlamaForCausalLM`` are for speed only: the q, k and v
projections are fused into one matrix (``wqkv``) and so are the gate and up projections (``w13``),
so a decode step runs two matmuls less per block. ``Llama.from_hf_state_dict`` maps HF names onto
this layout. Rotary embeddings use the HF ("rotate half") convention.

Attention over a KV cache is delegated to a cache object (see ``kvcache.py``) passed to
``forward``; without one, the model attends causally over the tokens it is given.

>>> cfg = LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64)
>>> model = Llama(cfg).eval()
>>> hidden = model(torch.tensor([[1, 2, 3]]))
>>> model.logits(hidden).shape
torch.Size([1, 3, 64])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from supernet.node.llm import fused as fused_kernels
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.int8 import INT8_WEIGHTS, dequantised, quantise_rows
from torch import Tensor, nn

FP16_WEIGHTS = "float16-weights"
"""The compute format of `Llama.use_fp16_weights` (a `supernet.sdk.models.COMPUTE_PRECISIONS` value)."""


class AttentionCache(Protocol):
    """What a KV cache offers the model: store this step's keys/values and attend."""

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store ``k``/``v`` of ``layer`` and return attention output shaped like ``q``."""
        ...


class RMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in fp32 whatever the weights' dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # the weight multiplies the normed tensor in place (it is a fresh one in either dtype): the
        # same products as ``weight * normed``, one temporary less
        return F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype).mul_(self.weight)


def rope_tables(cfg: LlamaConfig, n_positions: int) -> tuple[Tensor, Tensor]:
    """Cos and signed sin tables ``[n_positions, head_dim]`` of the rotary embedding (fp32).

    The sin table carries the sign of HF's ``rotate_half`` (negative first half), so a rotation
    is ``x * cos + roll(x, head_dim / 2) * sin`` with no negation at run time.
    """
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.arange(n_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return torch.cat((freqs, freqs), dim=-1).cos(), torch.cat((-freqs.sin(), freqs.sin()), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[B, T, heads, D]`` by per-token ``cos``/``sin`` ``[B or 1, T, 1, D]``.

    ``x * cos + roll(x, D / 2) * sin``. In float32 without the rolled copy (its strided copy of a
    q/k view is most of the cost there: ~4x faster measured on 480 tokens): the second term is added
    half by half, ``-x2 * |sin|`` as a subtraction (the sin table's first half is the negated second
    half, and ``a + (-b)`` is ``a - b`` exactly), so the result is the same to the bit. A bfloat16
    ``x`` keeps the one expression, where the half-by-half products measured slower (~1.2x).
    """
    if x.dtype != torch.float32:
        return (x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin).to(x.dtype)
    h = x.shape[-1] // 2
    x1, x2, s = x[..., :h], x[..., h:], sin[..., h:]
    out = x * cos
    # in place on the halves' views: ``out[..., :h] -= ...`` would also copy each half onto itself
    out[..., :h].sub_(x2 * s)
    out[..., h:].add_(x1 * s)
    return out


def weight_of(module: nn.Module) -> Tensor:
    """A projection's weight matrix (``nn.Linear`` and `PackedLinear` both keep one as ``.weight``)."""
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


class PackedLinear(nn.Module):
    """A bias-free linear layer whose weight oneDNN has reordered for small-batch fp32 CPU matmuls.

    On our 2-core CPUs MKL's small-M sgemm leaves much of the machine idle at decode batch sizes;
    oneDNN's prepacked kernel runs the same products 1.2-1.5x faster (measured at M = 8..160).
    Results differ from ``nn.Linear`` only in summation order (~1e-6 relative).
    """

    def __init__(self, linear: nn.Module, batch_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = weight_of(linear).detach().float().contiguous()
        self.register_buffer(
            "packed", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def fbgemm_fp16(device: torch.device) -> bool:
    """Whether fbgemm's float16-weight kernels serve ``device`` (x86 CPUs in PyTorch's builds)."""
    return device.type == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines


class Fp16WeightLinear(nn.Module):
    """A bias-free linear layer with its weight rounded to float16; activations and sums stay float32.

    The weight is what is stored and read per decode step (half of float32's bytes); each product
    is ``x @ fp16_round(W).T`` computed in float32, so results differ from float32 weights only by
    the weights' rounding (|Δlogprob| ≤ 0.01 on SmolLM2, docs/benchmarks/formats.md) and, like the
    float32 path, not with the batch a row is computed in. Three kernels compute it, the same
    numbers up to summation order (``kernel``): ``fused`` keeps the plain float16 weight for the C
    kernels of `supernet.node.llm.fused` (the node's choice where they build: its decode steps
    run fused and read the same copy); ``fbgemm`` (x86 CPUs) holds it packed and widens it inside
    the kernel (``linear_dynamic_fp16``; a validator's long re-scores, ~1.2x the C kernel's rate
    there); elsewhere (``widen``) the float16 weight is widened per call. ``int8``: the weight is first
    put on the int8-weights grid (`supernet.node.llm.int8`); fused, only the int8 rows and their
    scales are kept (``q8``, ``scale``), else the grid's float16 values serve the kernels above.
    """

    def __init__(
        self,
        linear: nn.Module,
        fused: bool = False,
        int8: bool = False,
        rows: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """``rows``: with ``int8``, the weight's grid where it is already made (a tied head's is
        its embedding table's)."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = weight_of(linear).detach().to(torch.float16).contiguous()
        self.int8 = int8  # int8-weights: the weight is on `supernet.node.llm.int8`'s grid
        self.kernel = "fused" if fused else "fbgemm" if fbgemm_fp16(weight.device) else "widen"
        if int8:
            q, scale = rows if rows is not None else quantise_rows(weight)
            if self.kernel == "fused":  # int8 rows and scales only: half float16's bytes
                self.q8: Tensor
                self.scale: Tensor
                self.register_buffer("q8", q, persistent=False)
                self.register_buffer("scale", scale, persistent=False)
                return
            weight = dequantised(q, scale)  # the same weights in float16, exactly
        if self.kernel == "fbgemm":
            packed = torch.ops.quantized.linear_prepack_fp16(weight.float(), None)
            self.packed: object = packed  # an fbgemm handle, not a tensor: kept as a plain attribute
        else:
            self.weight16: Tensor
            self.register_buffer("weight16", weight, persistent=False)

    @property
    def fbgemm(self) -> bool:
        """Whether fbgemm's packed kernel serves this layer."""
        return self.kernel == "fbgemm"

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "fused":
            if self.int8:
                return fused_kernels.matmul_i8(self.q8, self.scale, x)
            return fused_kernels.matmul(self.weight16, x)
        if self.kernel == "widen":
            return F.linear(x, self.weight16.to(x.dtype))
        flat = x.reshape(-1, x.shape[-1])
        return torch.ops.quantized.linear_dynamic_fp16(flat, self.packed).view(*x.shape[:-1], -1)


class Int8RowsEmbedding(nn.Module):
    """An embedding table of int8 rows and row scales (int8-weights with the C kernels): a lookup
    gives ``q[token] * s[token]`` in float32, the float16 grid value exactly. A tied table is the
    vocabulary head's own ``q8`` and ``scale`` (one copy)."""

    def __init__(self, q8: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.q8: Tensor
        self.scale: Tensor
        self.register_buffer("q8", q8, persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.q8[tokens].float() * self.scale[tokens].unsqueeze(-1)


def can_pack(model: nn.Module) -> bool:
    """Whether ``pack_linears`` applies: fp32 weights on CPU and a PyTorch built with oneDNN."""
    p = next(model.parameters())
    return (
        p.device.type == "cpu"
        and p.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class Attention(nn.Module):
    """Grouped-query self-attention with fused q/k/v projection."""

    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        # nn.Module: `pack_linears` swaps these for PackedLinear (both expose `.weight` and `__call__`)
        self.wqkv: nn.Module = nn.Linear(
            cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False
        )
        self.wo: nn.Module = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        b, t, _ = x.shape
        hd, nq, nkv = self.head_dim, self.n_heads * self.head_dim, self.n_kv * self.head_dim
        qkv = self.wqkv(x)
        qk = apply_rope(qkv[..., : nq + nkv].view(b, t, self.n_heads + self.n_kv, hd), cos, sin)
        q, k = qk[:, :, : self.n_heads].transpose(1, 2), qk[:, :, self.n_heads :].transpose(1, 2)
        v = qkv[..., nq + nkv :].view(b, t, self.n_kv, hd).transpose(1, 2)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
        else:
            y = cache.attend(self.layer, q, k, v)
        return self.wo(y.transpose(1, 2).reshape(b, t, nq))


class FeedForward(nn.Module):
    """SwiGLU feed-forward with fused gate and up projections."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden_dim
        self.w13: nn.Module = nn.Linear(cfg.dim, 2 * cfg.hidden_dim, bias=False)
        self.w2: nn.Module = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(F.silu(gate).mul_(up))  # in place on silu's fresh output: one temporary less


class Block(nn.Module):
    """One pre-norm decoder block: attention then feed-forward, each with a residual."""

    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache)
        return x.add_(self.feed_forward(self.ffn_norm(x)))  # x is this block's own sum by now

    def use_fp16_weights(self, fused: bool, int8: bool) -> None:
        """This block's four projections as `Fp16WeightLinear` (`Llama.use_fp16_weights`)."""
        att, ffn = self.attention, self.feed_forward
        att.wqkv, att.wo = Fp16WeightLinear(att.wqkv, fused, int8), Fp16WeightLinear(att.wo, fused, int8)
        ffn.w13, ffn.w2 = Fp16WeightLinear(ffn.w13, fused, int8), Fp16WeightLinear(ffn.w2, fused, int8)


class Llama(nn.Module):
    """The decoder. ``forward`` returns the final (normed) hidden states; ``logits`` projects them."""

    def __init__(self, cfg: LlamaConfig, max_positions: int | None = None, init_weights: bool = True) -> None:
        """``init_weights=False``: a skeleton whose weights are loaded next (`from_hf_state_dict`)."""
        super().__init__()
        self.cfg = cfg
        self.packed = False
        self.fp16_weights = False  # `use_fp16_weights`: the served format ``float16-weights``
        self.int8_weights = False  # `use_fp16_weights(int8=True)`: ``int8-weights``
        self.fused_decoder: fused_kernels.FusedDecoder | None = None  # `use_fp16_weights(fused=True)`
        # nn.Embedding draws its weight with normal_, which on the meta device runs torch's Python
        # reference code and imports torch._dynamo: ~40 MB of a node's memory for nothing
        table = None if init_weights else torch.empty(cfg.vocab_size, cfg.dim)
        self.tok_embeddings: nn.Module = nn.Embedding(cfg.vocab_size, cfg.dim, _weight=table)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output: nn.Module = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # (a skeleton's come with its weights: computed on the meta device, they import torch._dynamo too)
        n_positions = max_positions or cfg.max_position
        cos, sin = rope_tables(cfg, n_positions) if init_weights else (torch.empty(0), torch.empty(0))
        self.rope_cos: Tensor
        self.rope_sin: Tensor
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if init_weights:
            self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @torch.inference_mode()
    def forward(
        self, tokens: Tensor, positions: Tensor | None = None, cache: AttentionCache | None = None
    ) -> Tensor:
        """Run the decoder.

        Args:
            tokens: Token ids ``[B, T]``.
            positions: Absolute positions ``[B, T]``; ``0..T-1`` for every row when omitted.
            cache: KV cache to store into and attend over; causal self-attention when omitted.

        Returns:
            The final hidden states ``[B, T, dim]`` after the last RMSNorm.
        """
        if positions is None:
            t = tokens.shape[1]
            cos, sin = self.rope_cos[None, :t, None], self.rope_sin[None, :t, None]
        else:
            cos, sin = self.rope_cos[positions].unsqueeze(2), self.rope_sin[positions].unsqueeze(2)
        x = self.tok_embeddings(tokens).to(self.dtype)  # float16-stored embeddings widen here
        for block in self.blocks:
            x = block(x, cos, sin, cache)
        return self.norm(x)

    @property
    def blocks(self) -> list[Block]:
        """The decoder blocks, typed (``nn.ModuleList`` yields plain modules)."""
        return cast("list[Block]", list(self.layers))

    @property
    def dtype(self) -> torch.dtype:
        """The activations' (and the KV cache's) dtype; float16-stored weights do not change it."""
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the model computes."""
        return self.norm.weight.device

    @property
    def compute(self) -> str:
        """The served compute format (`supernet.sdk.models.COMPUTE_PRECISIONS`): what a served
        model id names, and what validators re-score in."""
        if self.fp16_weights:
            return INT8_WEIGHTS if self.int8_weights else FP16_WEIGHTS
        return str(self.dtype).removeprefix("torch.")

    @torch.inference_mode()
    def logits(self, hidden: Tensor) -> Tensor:
        """Project hidden states onto the vocabulary; fp32 logits."""
        return self.output(hidden).float()

    def pack_linears(self, batch_hint: int = 16) -> Llama:
        """Swap every projection for a ``PackedLinear`` (CPU fp32 only; a no-op elsewhere).

        Call it once, after the weights are final: ``to_hf_state_dict`` needs the unpacked model.
        """
        if not can_pack(self):
            return self
        for block in self.blocks:
            att, ffn = block.attention, block.feed_forward
            att.wqkv, att.wo = PackedLinear(att.wqkv, batch_hint), PackedLinear(att.wo, batch_hint)
            ffn.w13, ffn.w2 = PackedLinear(ffn.w13, batch_hint), PackedLinear(ffn.w2, batch_hint)
        self.output = PackedLinear(self.output, batch_hint)
        self.packed = True
        return self

    def use_fp16_weights(self, fused: bool = False, int8: bool = False) -> Llama:
        """Round every weight matrix to float16 and keep it so: the ``float16-weights`` format.

        The projections and the vocabulary head become `Fp16WeightLinear`; the embedding table is
        stored in float16 and widened per lookup, so it rounds exactly as the (tied) head does.
        Norm weights, activations and the KV cache stay float32. Call it once, on a model whose
        weights are final (its matrices in float32 or already float16, its norms float32), instead
        of ``pack_linears``.

        ``fused`` (on a CPU where `supernet.node.llm.fused.available`): the projections run the C
        kernels, a tied embedding table is the head's own float16 weight (one copy), and
        ``fused_decoder`` serves decode steps whole (`supernet.node.llm.step`).

        ``int8``: the ``int8-weights`` format, each matrix (and the embedding table) then also put
        on `supernet.node.llm.int8`'s grid; with ``fused``, held as int8 rows and scales.
        """
        if self.packed or self.fp16_weights or self.dtype != torch.float32:
            raise RuntimeError("float16 weights are made once from an unpacked model with float32 norms")
        use_fused = fused and self._fused_kernels_serve(self.device)
        self._fp16_table_and_head(use_fused, int8)
        for block in self.blocks:
            block.use_fp16_weights(use_fused, int8)
        return self._fp16_weights_made(use_fused, int8)

    def _fused_kernels_serve(self, device: torch.device) -> bool:
        """Whether the C kernels can serve this model on ``device``."""
        return (
            device.type == "cpu"
            and fused_kernels.FusedDecoder.supports(self.cfg)
            and fused_kernels.available()
        )

    def _fp16_table_and_head(self, use_fused: bool, int8: bool) -> None:
        """`use_fp16_weights` of the embedding table and the vocabulary head."""
        table = weight_of(self.tok_embeddings).detach().to(torch.float16)
        rows = quantise_rows(table) if int8 else None  # made once: a tied head's grid is the table's
        head = Fp16WeightLinear(self.output, use_fused, int8, rows if self.cfg.tie_embeddings else None)
        self.output = head
        if use_fused and rows is not None:  # a tied head holds these very tensors: one copy
            self.tok_embeddings = Int8RowsEmbedding(*rows)
        elif use_fused and self.cfg.tie_embeddings:
            self.tok_embeddings.weight = nn.Parameter(head.weight16, requires_grad=False)
        else:
            self.tok_embeddings.weight = nn.Parameter(
                table if rows is None else dequantised(*rows), requires_grad=False
            )

    def _fp16_weights_made(self, use_fused: bool, int8: bool) -> Llama:
        """`use_fp16_weights`' last part, once every matrix is converted."""
        self.packed = self.fp16_weights = True
        self.int8_weights = int8
        if use_fused:
            self.fused_decoder = fused_kernels.FusedDecoder(self)
        return self

    @classmethod
    def from_hf_state_dict(
        cls,
        cfg: LlamaConfig,
        sd: Mapping[str, Tensor],
        max_positions: int | None = None,
        weight_format: str | None = None,
        fused: bool = False,
    ) -> Llama:
        """Build the model from tensors named as in HF ``LlamaForCausalLM`` (fusing q/k/v and gate/up).

        ``sd`` is read the embedding table first, then block by block, each name once, so a lazy
        mapping (the loader's) can make each tensor only when it is read. With ``weight_format``
        (``float16-weights`` or ``int8-weights``) the model is what `use_fp16_weights` (``fused``)
        makes of it, each matrix converted as soon as it is loaded (the largest, the table, while
        least else is held): the source tensors are held one block at a time, never the whole
        model's (the load's peak memory).

        Raises:
            WeightsFormatError: A tensor is missing or has the wrong shape.
        """
        if weight_format not in (None, FP16_WEIGHTS, INT8_WEIGHTS):
            raise ValueError(
                f"weight_format must be {FP16_WEIGHTS!r} or {INT8_WEIGHTS!r}, not {weight_format!r}"
            )
        int8 = weight_format == INT8_WEIGHTS
        with torch.device("meta"):
            model = cls(cfg, max_positions, init_weights=False)
        try:
            embed = sd["model.embed_tokens.weight"]
            top = {"tok_embeddings.weight": embed, "norm.weight": sd["model.norm.weight"]}
            top["output.weight"] = _head_of(sd, embed, cfg)
            _assign(model, top, "", strict=False)  # the blocks' own come next
            del embed, top
            if cfg.tie_embeddings:
                model.output.weight = model.tok_embeddings.weight
            use_fused = weight_format is not None and fused and model._fused_kernels_serve(model.device)
            if weight_format is not None:
                model._fp16_table_and_head(use_fused, int8)
            if weight_format is not None and model.dtype != torch.float32:
                raise WeightsFormatError(f"{weight_format} keeps its norms in float32, not {model.dtype}")
            for i, block in enumerate(model.blocks):
                try:
                    tensors = _hf_block_tensors(sd, i, cfg)
                except RuntimeError as exc:  # q/k/v or gate/up that do not stack
                    raise WeightsFormatError(f"layers.{i}.: {exc}") from exc
                _assign(block, tensors, f"layers.{i}.")
                del tensors
                if weight_format is not None:
                    block.use_fp16_weights(use_fused, int8)
        except KeyError as exc:
            raise WeightsFormatError(f"weights lack tensor {exc}") from exc
        cos, sin = rope_tables(cfg, max_positions or cfg.max_position)
        model.rope_cos, model.rope_sin = cos.to(model.device), sin.to(model.device)
        model.eval()
        return model if weight_format is None else model._fp16_weights_made(use_fused, int8)

    def to_hf_state_dict(self) -> dict[str, Tensor]:
        """Tensors named as in HF ``LlamaForCausalLM`` (inverse of ``from_hf_state_dict``)."""
        if self.packed:
            raise RuntimeError("the projections are packed for oneDNN; take the state dict before packing")
        cfg, hd = self.cfg, self.cfg.head_dim
        embed = weight_of(self.tok_embeddings)
        sd = {"model.embed_tokens.weight": embed, "model.norm.weight": self.norm.weight}
        if not cfg.tie_embeddings:
            sd["lm_head.weight"] = weight_of(self.output)
        for i, blk in enumerate(self.blocks):
            p, a = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
            kv = cfg.n_kv_heads * hd
            q, k, v = weight_of(blk.attention.wqkv).split((cfg.n_heads * hd, kv, kv))
            gate, up = weight_of(blk.feed_forward.w13).split(cfg.hidden_dim)
            sd |= {
                p + "input_layernorm.weight": blk.attention_norm.weight,
                p + "post_attention_layernorm.weight": blk.ffn_norm.weight,
                a + "q_proj.weight": q,
                a + "k_proj.weight": k,
                a + "v_proj.weight": v,
                a + "o_proj.weight": weight_of(blk.attention.wo),
                p + "mlp.gate_proj.weight": gate,
                p + "mlp.up_proj.weight": up,
                p + "mlp.down_proj.weight": weight_of(blk.feed_forward.w2),
            }
        return {name: t.detach().contiguous() for name, t in sd.items()}


def _head_of(sd: Mapping[str, Tensor], embed: Tensor, cfg: LlamaConfig) -> Tensor:
    """The vocabulary head: the file's ``lm_head.weight``, or the table where the config ties them.

    A file whose head disagrees with its tie flag is refused rather than read one way: a tied
    config with another ``lm_head`` (hashed into the id, never used), an untied one without any
    (transformers would draw a random head where this module would use the table).

    Raises:
        WeightsFormatError: as above.
    """
    if "lm_head.weight" not in sd:
        if not cfg.tie_embeddings:
            raise WeightsFormatError("lm_head.weight is missing, and the config does not tie the head")
        return embed
    head = sd["lm_head.weight"]
    if cfg.tie_embeddings and not torch.equal(head, embed):
        raise WeightsFormatError("lm_head.weight differs from the table the config ties it to")
    return head


def _hf_block_tensors(sd: Mapping[str, Tensor], i: int, cfg: LlamaConfig) -> dict[str, Tensor]:
    """Block ``i``'s tensors from HF names, in this module's layout (q/k/v and gate/up fused).

    Raises:
        KeyError: a tensor is missing.
        WeightsFormatError: a tensor of another shape than the config's (before stacking: rows moved
            from q to k would stack to the right shape).
    """
    p = f"model.layers.{i}."
    a = p + "self_attn."
    hd = cfg.head_dim
    shapes = {
        p + "input_layernorm.weight": (cfg.dim,),
        p + "post_attention_layernorm.weight": (cfg.dim,),
        a + "q_proj.weight": (cfg.n_heads * hd, cfg.dim),
        a + "k_proj.weight": (cfg.n_kv_heads * hd, cfg.dim),
        a + "v_proj.weight": (cfg.n_kv_heads * hd, cfg.dim),
        a + "o_proj.weight": (cfg.dim, cfg.n_heads * hd),
        p + "mlp.gate_proj.weight": (cfg.hidden_dim, cfg.dim),
        p + "mlp.up_proj.weight": (cfg.hidden_dim, cfg.dim),
        p + "mlp.down_proj.weight": (cfg.dim, cfg.hidden_dim),
    }
    sd = {name: sd[name] for name in shapes}  # each read once, in this order
    for name, shape in shapes.items():
        if tuple(sd[name].shape) != shape:
            raise WeightsFormatError(f"{name}: shape {tuple(sd[name].shape)}, the config says {shape}")
    return {
        "attention_norm.weight": sd[p + "input_layernorm.weight"],
        "ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
        "attention.wqkv.weight": torch.cat(
            [sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]]
        ),
        "attention.wo.weight": sd[a + "o_proj.weight"],
        "feed_forward.w13.weight": torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]),
        "feed_forward.w2.weight": sd[p + "mlp.down_proj.weight"],
    }


def _assign(module: nn.Module, tensors: dict[str, Tensor], prefix: str, strict: bool = True) -> None:
    """``module.load_state_dict(tensors, assign=True)``; a wrong shape (or, ``strict``, a missing or
    unknown name) is a `WeightsFormatError` naming the tensor's place in the model (``prefix``)."""
    try:
        module.load_state_dict(tensors, strict=strict, assign=True)
    except RuntimeError as exc:
        raise WeightsFormatError(f"{prefix or 'model'}: {exc}") from exc
