"""Weights: GGUF (with llama.cpp's q/k permutation and quantisation), safetensors dirs, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.loader import load_model
from supernet.node.llm.manifest import build_manifest, model_id
from supernet.node.llm.weights import read_gguf, read_hf_dir, write_hf_dir


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's conversion of an HF q/k matrix (what GGUF files hold)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_gguf(path: Path, sd: dict[str, torch.Tensor], quantise: bool) -> None:
    import gguf

    cfg = TINY
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_position)
    w.add_embedding_length(cfg.dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_vocab_size(cfg.vocab_size)
    w.add_eos_token_id(0)
    names = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, t in sd.items():
        arr = t.numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            _, _, i, *rest = name.split(".")
            gname = f"blk.{i}.{names['.'.join(rest[:-1])]}.weight"
        if "q_proj" in name:
            arr = _permute(arr, cfg.n_heads)
        if "k_proj" in name:
            arr = _permute(arr, cfg.n_kv_heads)
        if quantise and arr.ndim == 2:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("quantise", [False, True])
def test_gguf_round_trip_undoes_the_qk_permutation(tmp_path: Path, quantise: bool) -> None:
    model = make_tiny_llama(4)
    sd = model.to_hf_state_dict()
    _write_gguf(tmp_path / "tiny.gguf", sd, quantise)
    cfg, tensors = read_gguf(tmp_path / "tiny.gguf")
    assert cfg.n_kv_heads == TINY.n_kv_heads and cfg.tie_embeddings and cfg.eos_token_ids == (0,)
    tol = 0.02 if quantise else 0.0
    for name, t in sd.items():
        torch.testing.assert_close(tensors[name], t, atol=tol, rtol=0)


def test_safetensors_dir_round_trip_and_stable_model_id(tmp_path: Path) -> None:
    model = make_tiny_llama(5)
    write_hf_dir(tmp_path, model.cfg, model.to_hf_state_dict())
    cfg, _ = read_hf_dir(tmp_path)
    assert cfg == model.cfg
    loaded = load_model(tmp_path)
    assert loaded.tokenizer is None
    again = load_model(tmp_path)
    assert loaded.model_id == again.model_id
    assert loaded.model_id == model_id(build_manifest(model.to_hf_state_dict(), model.cfg.to_dict()))
    tokens = torch.arange(10)[None]
    assert torch.equal(loaded.model(tokens), model(tokens))


def test_model_id_changes_with_any_weight() -> None:
    sd = make_tiny_llama(6).to_hf_state_dict()
    base = model_id(build_manifest(sd, TINY.to_dict()))
    sd["model.norm.weight"] = sd["model.norm.weight"].clone()
    sd["model.norm.weight"][0] += 1e-6
    assert model_id(build_manifest(sd, TINY.to_dict())) != base
    manifest = build_manifest(sd, TINY.to_dict())
    assert [e["name"] for e in manifest["tensors"]] == sorted(sd)
    assert json.loads(json.dumps(manifest)) == manifest


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf")
    with pytest.raises(WeightsFormatError):
        read_gguf(tmp_path / "junk.gguf")
    with pytest.raises(WeightsFormatError):
        read_hf_dir(tmp_path)


def test_a_gguf_is_dequantised_one_tensor_at_a_time_with_the_same_values(tmp_path: Path) -> None:
    """`open_gguf` (what the loader reads a GGUF through): each read dequantises afresh, by blocks of
    rows, to exactly `read_gguf`'s values; asking for a name reads nothing; names can be forgotten,
    never set; the manifest over it is the eager one's (the same model id)."""
    from supernet.node.llm import weights

    sd = make_tiny_llama(6).to_hf_state_dict()
    _write_gguf(tmp_path / "tiny.gguf", sd, quantise=True)
    cfg, eager = read_gguf(tmp_path / "tiny.gguf")
    lazy_cfg, lazy = weights.open_gguf(tmp_path / "tiny.gguf")
    assert lazy_cfg == cfg and sorted(lazy) == sorted(eager) and len(lazy) == len(eager)
    for name in eager:
        assert torch.equal(lazy[name], eager[name]) and torch.equal(lazy[name], eager[name]), name
    assert build_manifest(lazy, cfg.to_dict()) == build_manifest(eager, cfg.to_dict())
    first = next(iter(lazy))
    assert first in lazy and "model.layers.9.mlp.up_proj.weight" not in lazy
    del lazy[first]
    assert first not in lazy and len(lazy) == len(eager) - 1
    with pytest.raises(TypeError):
        lazy[first] = eager[first]


def test_a_gguf_matrix_read_in_row_blocks_equals_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supernet.node.llm import weights

    _write_gguf(tmp_path / "tiny.gguf", make_tiny_llama(7).to_hf_state_dict(), quantise=True)
    _, whole = weights.open_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setattr(weights, "ROWS_AT_ONCE", 7)  # blocks that do not divide the rows
    _, blocks = weights.open_gguf(tmp_path / "tiny.gguf")
    for name in whole:
        assert torch.equal(whole[name], blocks[name]), name
