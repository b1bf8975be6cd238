"""The ``float16-weights`` format: float16-rounded weights, float32 activations and sums."""

from __future__ import annotations

import copy

import pytest
import torch
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm import model as model_module
from supernet.node.llm.loader import compute_dtype, default_compute
from supernet.node.llm.model import FP16_WEIGHTS, Fp16WeightLinear, Llama
from supernet.sdk.models import COMPUTE_PRECISIONS, compute_of, served_model_id


def _rounded_twin(model: Llama) -> Llama:
    """A plain float32 model whose weight matrices (and embedding) are rounded to float16 and back."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            if p.dim() == 2:  # projections and the (tied) embedding; not the norms
                p.copy_(p.to(torch.float16).float())
    return twin


def test_fp16_weights_compute_what_float32_computes_on_rounded_weights() -> None:
    model = make_tiny_llama(7)
    reference = _rounded_twin(model)
    model.use_fp16_weights()
    tokens = torch.randint(0, TINY.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    ours, ref = model.logits(model(tokens)), reference.logits(reference(tokens))
    assert ours.dtype == torch.float32 and model.dtype == torch.float32
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)  # the same numbers up to summation order
    # the weights really are float16 now: the embedding, and every projection's kernel
    assert model.tok_embeddings.weight.dtype == torch.float16
    assert all(isinstance(b.feed_forward.w13, Fp16WeightLinear) for b in model.blocks)
    assert isinstance(model.output, Fp16WeightLinear)


def test_fp16_weights_rows_do_not_depend_on_their_batch() -> None:
    """What makes the format checkable with float32's tight tolerance: a row's logits are the same
    alone and beside other rows (decode batches vary; a validator's re-score packs other calls)."""
    model = make_tiny_llama(8).use_fp16_weights()
    gen = torch.Generator().manual_seed(2)
    alone = torch.randint(0, TINY.vocab_size, (1, 25), generator=gen)
    others = torch.randint(0, TINY.vocab_size, (5, 25), generator=gen)
    a = model.logits(model(alone))[0]
    b = model.logits(model(torch.cat([others[:2], alone, others[2:]])))[2]
    assert (a - b).abs().max().item() < 1e-4


def test_the_format_is_named_and_served_under_its_own_id() -> None:
    model = make_tiny_llama(9)
    assert model.compute == "float32"
    model.use_fp16_weights()
    assert model.compute == FP16_WEIGHTS and FP16_WEIGHTS in COMPUTE_PRECISIONS
    weights = "0x" + "ab" * 32
    ids = {served_model_id(weights, c) for c in COMPUTE_PRECISIONS}
    assert len(ids) == len(COMPUTE_PRECISIONS)  # a float16-weights node cannot pass as a float32 one
    assert compute_of(served_model_id(weights, FP16_WEIGHTS), weights) == FP16_WEIGHTS
    with pytest.raises(RuntimeError, match="once"):
        model.use_fp16_weights()  # rounding twice, or from packed weights, is refused


def test_the_cpu_default_is_int8_weights() -> None:
    assert default_compute(torch.device("cpu")) == "int8-weights"
    assert compute_dtype("int8-weights") is torch.float32
    assert default_compute(torch.device("cuda")) == "bfloat16"
    assert compute_dtype(FP16_WEIGHTS) is torch.float32 and compute_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="compute format"):
        compute_dtype("float16")


def test_without_fbgemm_the_weight_is_widened_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The portable path (ARM, GPUs): same numbers as fbgemm's kernel up to summation order."""
    model = make_tiny_llama(10)
    linear = model.blocks[0].feed_forward.w13
    packed = Fp16WeightLinear(linear)
    monkeypatch.setattr(model_module, "fbgemm_fp16", lambda device: False)
    portable = Fp16WeightLinear(linear)
    assert packed.fbgemm and not portable.fbgemm
    x = torch.randn(4, TINY.dim, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(packed(x), portable(x), atol=1e-5, rtol=1e-5)
