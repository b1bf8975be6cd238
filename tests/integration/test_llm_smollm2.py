"""The engine on the real SmolLM2-135M-Instruct weights, against transformers' own Llama.

Reference: transformers' ``LlamaForCausalLM`` loaded from the same GGUF file
(``from_pretrained(dir, gguf_file=...)``), fp32, eager attention. Stated tolerance for logits:
``atol=2e-3, rtol=1e-4`` (fp32 on CPU; the two differ only in kernel order, typically ~1e-5).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.loader import load_model
from supernet.node.llm.scoring import compare_generation
from supernet.sdk.models import served_model_id

pytestmark = pytest.mark.model

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def reference(smollm2_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    gguf = next(smollm2_dir.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_dir), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(smollm2_dir: Path) -> AsyncIterator[LLMEngine]:
    eng = LLMEngine.load(smollm2_dir, max_batch=8, max_seq_len=512)
    await eng.start()
    yield eng
    await eng.stop()


def _prompts(engine: LLMEngine) -> list[list[int]]:
    assert engine.tokenizer is not None
    return [engine.tokenizer.encode(p) for p in PROMPTS] + [engine.tokenizer.apply_chat_template(CHAT)]


async def test_reports_device_and_dtype(engine: LLMEngine) -> None:
    assert engine.device.type in ("cpu", "cuda")
    assert engine.dtype == (torch.float32 if engine.device.type == "cpu" else torch.bfloat16)
    assert engine.kv_bytes_per_token == 2 * 30 * 3 * 64 * engine.dtype.itemsize


async def test_logits_match_transformers(engine: LLMEngine, reference: Any) -> None:
    if engine.dtype != torch.float32:
        pytest.skip("the stated tolerance is for fp32")
    for ids in _prompts(engine):
        tokens = torch.tensor([ids])
        with torch.no_grad():
            ref = reference(tokens).logits
        ours = engine.model.logits(engine.model(tokens.to(engine.device))).cpu()
        torch.testing.assert_close(ours, ref, atol=2e-3, rtol=1e-4)


async def test_greedy_outputs_match_transformers(engine: LLMEngine, reference: Any) -> None:
    params = SamplingParams(max_new_tokens=24, stop_token_ids=())
    for ids in _prompts(engine)[:3]:
        with torch.no_grad():
            ref = reference.generate(
                torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False
            )
        ours = await engine.submit(ids, params).result()
        assert list(ours.output_ids) == ref[0, len(ids) :].tolist()


async def test_capital_of_france(engine: LLMEngine) -> None:
    tok = engine.tokenizer
    assert tok is not None
    plain = await engine.submit(
        tok.encode("The capital of France is"), SamplingParams(max_new_tokens=8)
    ).result()
    assert "Paris" in tok.decode(plain.output_ids)
    chat = await engine.submit(tok.apply_chat_template(CHAT), SamplingParams(max_new_tokens=24)).result()
    assert "Paris" in tok.decode(chat.output_ids)
    assert chat.finish_reason == "stop" and chat.output_ids[-1] == tok.eos_token_id


async def test_batched_greedy_equals_one_at_a_time(engine: LLMEngine) -> None:
    params = SamplingParams(max_new_tokens=32, stop_token_ids=())
    prompts = _prompts(engine)
    alone = [(await engine.submit(p, params).result()).output_ids for p in prompts]
    handles = [engine.submit(p, params) for p in prompts]
    together = [(await h.result()).output_ids for h in handles]
    assert together == alone


async def test_sampled_generation_scores_clean(engine: LLMEngine) -> None:
    params = SamplingParams(max_new_tokens=40, temperature=0.8, top_p=0.9, seed=42, stop_token_ids=())
    ids = _prompts(engine)[2]
    claimed = await engine.submit(ids, params).result()
    verdict = compare_generation(claimed, engine.score(ids, claimed.output_ids, params))
    assert verdict.ok, verdict.mismatches
    other = await engine.submit(ids, SamplingParams(max_new_tokens=40, temperature=0.8, seed=43)).result()
    assert other.output_ids != claimed.output_ids


def _recorded_model_id(model_dir: Path) -> str:
    return json.loads((model_dir / "manifest.json").read_text())["model_id"]


async def test_model_id_is_stable(engine: LLMEngine, smollm2_dir: Path) -> None:
    recorded = _recorded_model_id(smollm2_dir)
    assert engine.weights_id == recorded
    assert engine.model_id == served_model_id(recorded, "float32")  # what users sign names the dtype
    assert engine.model_id.startswith("0x") and len(engine.model_id) == 66
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert load_model(gguf).model_id == recorded  # the same id straight from the GGUF


def test_float16_weights_load_rounds_the_real_weights_once() -> None:
    """The loader builds the ``float16-weights`` model from the file's tensors rounded straight to
    float16 (no float32 copy, a lower load peak): the same numbers as rounding a loaded float32
    model, and the same greedy token as float32 on a short prompt."""
    fp16w = load_model("smollm2-135m", compute="float16-weights", max_positions=256)
    rounded = load_model("smollm2-135m", max_positions=256).model
    tokens = torch.tensor([[1, 504, 3060, 282, 4649, 314, 28, 253]])
    exact = rounded.logits(rounded(tokens))
    rounded.use_fp16_weights()
    ours = fp16w.model.logits(fp16w.model(tokens))
    assert torch.equal(ours, rounded.logits(rounded(tokens)))
    assert fp16w.model.compute == "float16-weights" and fp16w.model_id == _recorded_model_id(fp16w.path)
    assert torch.equal(ours.argmax(-1), exact.argmax(-1))
    assert (ours - exact).abs().max().item() < 0.1  # the weights' rounding, not another model
