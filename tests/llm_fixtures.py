"""Fixtures of the LLM engine tests.

``tiny_llama`` builds a small random Llama in the test itself (no files), with weights scaled up
so that greedy outputs vary from token to token. ``smollm2_dir`` makes sure the real default model
is pulled into the cache (``supernet model pull smollm2-135m``) once per session.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.model import Fp16WeightLinear, Llama

TINY = LlamaConfig(
    vocab_size=101,
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=96,
    max_position=512,
    eos_token_ids=(0,),
)


def generate_all(engine: Any, calls: Sequence[tuple[list[int], Any]]) -> list[Any]:
    """The results of ``calls`` (prompt ids, sampling params) submitted together to ``engine``,
    started for them and stopped after."""

    async def run() -> list[Any]:
        await engine.start()
        try:
            return list(await asyncio.gather(*(engine.submit(p, sp).result() for p, sp in calls)))
        finally:
            await engine.stop()

    return asyncio.run(run())


def assert_forked_child_passes(check: Callable[[], bool], timeout_s: float = 20) -> None:
    """Fork; the child exits 0 if ``check()`` holds; fail if it does not, or hangs past ``timeout_s``
    (then it is killed)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if check() else 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the forked child's check failed"
            return
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


def make_tiny_llama(seed: int = 0, cfg: LlamaConfig = TINY) -> Llama:
    """A random tiny Llama (deterministic for a seed)."""
    gen = torch.Generator().manual_seed(seed)
    model = Llama(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    return model


def converted_state(model: Llama) -> dict[str, torch.Tensor]:
    """Every tensor a converted model keeps: its state dict, and each `Fp16WeightLinear`'s int8
    rows, scales and float16 weight (buffers it does not persist), fbgemm handles unpacked. Two
    models with equal states compute the same."""
    out = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, Fp16WeightLinear):
            for attr in ("q8", "scale", "weight16"):
                if hasattr(module, attr):
                    out[f"{name}.{attr}"] = getattr(module, attr)
            if module.fbgemm:
                out[f"{name}.packed"] = torch.ops.quantized.linear_unpack_fp16(module.packed)[0]
    return out


@pytest.fixture
def tiny_llama() -> Llama:
    """A fresh random tiny Llama."""
    return make_tiny_llama()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The pulled SmolLM2-135M-Instruct model directory (pulls it on first use)."""
    from supernet.node.llm import catalog

    return catalog.pull("smollm2-135m")
