"""Model configuration: one frozen dataclass shared by the loaders, the model and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from supernet.node.llm.errors import WeightsFormatError


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama-family decoder (HF ``LlamaConfig`` field names in ``from_hf``).

    Attributes:
        vocab_size: Number of token embeddings.
        dim: Hidden size.
        n_layers: Number of decoder blocks.
        n_heads: Query heads.
        n_kv_heads: Key/value heads (grouped-query attention when fewer than ``n_heads``).
        hidden_dim: Width of the SwiGLU feed-forward layer.
        norm_eps: RMSNorm epsilon.
        rope_theta: Base of the rotary position embedding.
        max_position: Longest context the model was trained for.
        tie_embeddings: Whether the output head reuses the token embedding matrix.
        bos_token_id: Beginning-of-sequence token.
        eos_token_ids: Tokens that end a generation by default.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position: int = 2048
    tie_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise WeightsFormatError(
                f"dim {self.dim}, heads {self.n_heads}, kv heads {self.n_kv_heads} are not divisible"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (used by the weights manifest)."""
        d = asdict(self)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> LlamaConfig:
        """Read a Hugging Face ``config.json`` of a Llama-family model.

        Raises:
            WeightsFormatError: The config is not a Llama-style causal LM, or uses RoPE scaling.
        """
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling") or rope
        if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
            raise WeightsFormatError(f"RoPE scaling {scaling!r} is not supported")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise WeightsFormatError("attention/MLP biases are not supported")
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        try:
            n_heads = int(hf["num_attention_heads"])
            return cls(
                vocab_size=int(hf["vocab_size"]),
                dim=int(hf["hidden_size"]),
                n_layers=int(hf["num_hidden_layers"]),
                n_heads=n_heads,
                n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
                hidden_dim=int(hf["intermediate_size"]),
                norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
                rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                max_position=int(hf.get("max_position_embeddings", 2048)),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids,
            )
        except KeyError as exc:
            raise WeightsFormatError(f"config.json lacks {exc}") from exc

    def to_hf(self) -> dict[str, Any]:
        """A Hugging Face ``config.json`` that transformers' ``LlamaForCausalLM`` reads."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.hidden_dim,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids[0]
            if len(self.eos_token_ids) == 1
            else list(self.eos_token_ids),
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
        }
