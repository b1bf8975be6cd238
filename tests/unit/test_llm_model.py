"""The decoder against transformers' ``LlamaForCausalLM`` (random tiny weights), and its KV cache."""

from __future__ import annotations

import os

import torch
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention
from supernet.node.llm.model import Llama


def _hf_twin(model: Llama) -> torch.nn.Module:
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(HFConfig(**model.cfg.to_hf(), attn_implementation="eager")).eval()
    missing, unexpected = hf.load_state_dict(model.to_hf_state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    return hf


def test_logits_match_transformers() -> None:
    model = make_tiny_llama(1)
    hf = _hf_twin(model)
    tokens = torch.randint(0, TINY.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(tokens).logits
    ours = model.logits(model(tokens))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_hf_state_dict_round_trip() -> None:
    model = make_tiny_llama(2)
    again = Llama.from_hf_state_dict(model.cfg, model.to_hf_state_dict())
    tokens = torch.arange(20)[None]
    assert torch.equal(model(tokens), again(tokens))


def test_cached_decode_equals_full_forward() -> None:
    model = make_tiny_llama(3)
    gen = torch.Generator().manual_seed(1)
    lens = [7, 12, 3]
    seqs = [torch.randint(1, TINY.vocab_size, (n + 6,), generator=gen) for n in lens]
    pool = KVPool(
        TINY, slots=4, max_capacity=64, device=torch.device("cpu"), dtype=torch.float32, initial_capacity=8
    )
    width = max(lens)
    prompt = torch.zeros(3, width, dtype=torch.long)
    for r, n in enumerate(lens):
        prompt[r, :n] = seqs[r][:n]
    with torch.inference_mode():
        pool.ensure_capacity(width)
        model(prompt, None, PrefillAttention(pool, 0))
        pos = torch.tensor(lens)
        for _ in range(6):
            pool.ensure_capacity(int(pos.max()) + 1)
            tok = torch.stack([seqs[r][pos[r]] for r in range(3)])[:, None]
            h = model(tok, pos[:, None], DecodeAttention(pool, pos))[:, 0]
            for r in range(3):
                full = model(seqs[r][None, : int(pos[r]) + 1])[0, -1]
                torch.testing.assert_close(h[r], full, atol=1e-5, rtol=1e-5)
            pos = pos + 1
    assert pool.capacity >= 18


def test_pool_move_export_load() -> None:
    pool = KVPool(
        TINY, slots=3, max_capacity=32, device=torch.device("cpu"), dtype=torch.float32, initial_capacity=4
    )
    with torch.inference_mode():
        pool.k.normal_()
        pool.v.normal_()
        k, v = pool.export(2, 4)
        pool.move(2, 0, 4)
        pool.ensure_capacity(20)
        assert torch.equal(pool.k[:, 0, :, :4], k) and torch.equal(pool.v[:, 0, :, :4], v)
        pool.load(1, k, v)
        assert torch.equal(pool.k[:, 1, :, :4], k)
    assert pool.bytes_per_token == 2 * TINY.n_layers * TINY.n_kv_heads * TINY.head_dim * 4


# -- the pool's memory: pages resident only once written, idle slots never copied, given back ------

# smollm2-135m's cache shape: 30 layers x 3 kv heads x 64 wide, 46 KB per token of one sequence
SMOLLM_KV = LlamaConfig(
    vocab_size=101, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, hidden_dim=96, max_position=2048
)
MB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _big_pool(initial: int = 2048) -> KVPool:
    # 16 slots x 2048 tokens reserves 1.4 GB
    return KVPool(
        SMOLLM_KV,
        slots=16,
        max_capacity=2048,
        device=torch.device("cpu"),
        dtype=torch.float32,
        initial_capacity=initial,
    )


def test_a_pool_costs_what_its_sequences_wrote_not_what_it_reserves() -> None:
    before = _rss()
    pool = _big_pool()
    reserved = pool.capacity * pool.slots * pool.bytes_per_token
    assert reserved > 1400 * MB
    assert _rss() - before < 32 * MB  # reserving is free
    with torch.inference_mode():
        pool.k[:, 0, :, :100] = 1.0  # one sequence of 100 tokens
        pool.v[:, 0, :, :100] = 1.0
        assert _rss() - before < 32 * MB  # 100 tokens x 46 KB, rounded up to pages
        assert pool.k[:, 1].abs().max() == 0 and pool.k[:, 0, :, 100].abs().max() == 0  # zeros


def test_growing_copies_the_live_slots_only() -> None:
    pool = _big_pool(initial=512)
    with torch.inference_mode():
        pool.k[:, :2, :, :300] = 2.0
        pool.v[:, :2, :, :300] = 3.0
        before = _rss()
        pool.ensure_capacity(1000, live_slots=2)
        grown = _rss() - before
        assert pool.capacity == 1024
        assert torch.equal(pool.k[:, :2, :, :300], torch.full_like(pool.k[:, :2, :, :300], 2.0))
        assert torch.equal(pool.v[:, :2, :, :300], torch.full_like(pool.v[:, :2, :, :300], 3.0))
        assert pool.k[:, 2:].abs().max() == 0 and pool.k[:, :2, :, 300:].abs().max() == 0
    # the two live slots' 512 positions (copied), not all 16 slots' (350 MB)
    assert grown < 100 * MB, grown / MB


def test_release_gives_the_memory_back_and_empties_every_slot() -> None:
    pool = _big_pool(initial=256)
    with torch.inference_mode():
        pool.ensure_capacity(2048, live_slots=0)
        before = _rss()
        pool.k[:, :8, :, :1500] = 1.0  # 8 long sequences: ~1 GB of keys and values
        pool.v[:, :8, :, :1500] = 1.0
        written = _rss() - before
        assert written > 500 * MB
        pool.release()
        assert before - _rss() > -0.1 * written  # all of it back
        assert pool.capacity == 256
        assert pool.k.abs().max() == 0 and pool.v.abs().max() == 0
