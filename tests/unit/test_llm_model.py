"""The decoder against transformers' ``LlamaForCausalLM`` (random tiny weights), and its KV cache."""

from __future__ import annotations

import torch
from llm_fixtures import TINY, make_tiny_llama
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
