"""Loading a model holds little beside the model (issue 15's memory goal, docs/node.md "Memory").

Every format is made block by block from a read-once source (`loader._ReadOnceSource`): the
result must be exactly the whole-model conversion's (`Llama.use_fp16_weights` in the weight
formats, ``.to(dtype)`` in float32 and bfloat16), each tensor read once, mapped pages read and let
go in chunks (copy and hash) with the same values and digests.
Serving must not import what it does not use: transformers (the tokenizer runs on `tokenizers`),
torch._dynamo (a skeleton built on the meta device used to import it) or the chain's libraries
(canonical JSON of manifests lives with the models now). Missing or misshapen tensors stay clear
errors in every format.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from llm_fixtures import converted_state, make_tiny_llama
from supernet.node.llm import loader, manifest
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.loader import _ReadOnceSource, load_model
from supernet.node.llm.model import Llama
from supernet.node.llm.weights import read_hf_dir, write_hf_dir

pytest_plugins = ["llm_fixtures"]


def _tiny_dir(tmp_path: Path, seed: int = 5) -> tuple[Path, Llama]:
    model = make_tiny_llama(seed)
    write_hf_dir(tmp_path / "m", model.cfg, model.to_hf_state_dict())
    return tmp_path / "m", model


@pytest.mark.parametrize("compute", ["float16-weights", "int8-weights"])
@pytest.mark.parametrize("fused", [False, True])
def test_streamed_conversion_is_the_whole_model_conversion(tmp_path: Path, compute: str, fused: bool) -> None:
    folder, _ = _tiny_dir(tmp_path)
    streamed = load_model(folder, device="cpu", compute=compute, fused=fused).model
    cfg, tensors = read_hf_dir(folder)
    whole = Llama.from_hf_state_dict(cfg, {k: v.clone() for k, v in tensors.items()})
    whole.use_fp16_weights(fused=fused, int8=compute == "int8-weights")
    assert streamed.compute == whole.compute == compute
    assert (streamed.fused_decoder is None) == (whole.fused_decoder is None)
    a, b = converted_state(streamed), converted_state(whole)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    tokens = torch.tensor([[3, 14, 15, 92, 65]])
    assert torch.equal(streamed.logits(streamed(tokens)), whole.logits(whole(tokens)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_float_load_is_the_whole_model_cast(tmp_path: Path, dtype: torch.dtype) -> None:
    """The float32 path (and bfloat16) reads once too: the same tensors, buffers and logits as
    the whole model read then cast, the rope tables rounded through the dtype as they were."""
    folder, _ = _tiny_dir(tmp_path)
    streamed = load_model(folder, device="cpu", dtype=dtype).model
    cfg, tensors = read_hf_dir(folder)
    whole = Llama.from_hf_state_dict(cfg, {k: v.clone() for k, v in tensors.items()}).to(dtype=dtype)
    whole.rope_cos, whole.rope_sin = whole.rope_cos.float(), whole.rope_sin.float()
    a, b = dict(streamed.state_dict(keep_vars=False)), dict(whole.state_dict(keep_vars=False))
    a |= {"rope_cos": streamed.rope_cos, "rope_sin": streamed.rope_sin}
    b |= {"rope_cos": whole.rope_cos, "rope_sin": whole.rope_sin}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert streamed.output.weight is streamed.tok_embeddings.weight  # still tied: one table
    tokens = torch.tensor([[3, 14, 15, 92, 65]])
    assert torch.equal(streamed.logits(streamed(tokens)), whole.logits(whole(tokens)))


def test_the_source_gives_each_tensor_once_in_the_served_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "CHUNK_BYTES", 100)  # many chunks, one that ends mid-row
    matrix, vector = torch.randn(37, 11), torch.randn(11)
    source = _ReadOnceSource({"m": matrix.clone(), "v": vector.clone()}, torch.device("cpu"), None)
    assert "m" in source and "m" in source  # asking does not consume
    assert sorted(source) == ["m", "v"] and len(source) == 2
    got = source["m"]
    assert got.dtype == torch.float16 and torch.equal(got, matrix.half())
    assert torch.equal(source["v"], vector)
    assert "m" not in source and len(source) == 0
    with pytest.raises(KeyError):
        source["m"]  # read once: the model never holds a tensor twice


def test_chunked_digest_is_the_one_pass_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.randn(1000, 7)
    whole = hashlib.sha256(t.numpy().tobytes()).hexdigest()
    seen: list[int] = []
    monkeypatch.setattr(manifest, "HASH_CHUNK_BYTES", 4096)
    assert manifest.tensor_digest(t, lambda part: seen.append(part.numel())) == whole
    assert sum(seen) == t.numel() * 4 and len(seen) == -(-t.numel() * 4 // 4096)
    assert manifest.tensor_digest(t) == whole


@pytest.mark.parametrize("compute", [None, "float16-weights", "int8-weights"])
def test_missing_and_misshapen_tensors_are_clear_errors(tmp_path: Path, compute: str | None) -> None:
    model = make_tiny_llama(2)
    sd = model.to_hf_state_dict()
    missing = {k: v for k, v in sd.items() if k != "model.layers.1.mlp.up_proj.weight"}
    write_hf_dir(tmp_path / "a", model.cfg, missing)
    with pytest.raises(WeightsFormatError, match="up_proj"):
        load_model(tmp_path / "a", device="cpu", compute=compute)
    wrong = dict(sd) | {"model.layers.1.self_attn.o_proj.weight": torch.zeros(3, 3)}
    write_hf_dir(tmp_path / "b", model.cfg, wrong)
    with pytest.raises(WeightsFormatError, match=r"layers\.1\."):
        load_model(tmp_path / "b", device="cpu", compute=compute)
    unstackable = dict(sd) | {"model.layers.0.self_attn.k_proj.weight": torch.zeros(32, 5)}
    write_hf_dir(tmp_path / "d", model.cfg, unstackable)
    with pytest.raises(WeightsFormatError, match=r"layers\.0\."):
        load_model(tmp_path / "d", device="cpu", compute=compute)
    no_table = {k: v for k, v in sd.items() if k != "model.embed_tokens.weight"}
    write_hf_dir(tmp_path / "c", model.cfg, no_table)
    with pytest.raises(WeightsFormatError, match="embed_tokens"):
        load_model(tmp_path / "c", device="cpu", compute=compute)


SERVE = """
import json, sys
from supernet.node.llm import LLMEngine, SamplingParams
engine = LLMEngine.load(sys.argv[1], compute="int8-weights", max_batch=2)
ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}])
heavy = ("transformers", "torch._dynamo", "web3", "eth_account")
print(json.dumps({"ids": len(ids), "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_serving_loads_neither_transformers_nor_dynamo_nor_the_chain(smollm2_dir: Path) -> None:
    """In a fresh process, as a node's engine loads the catalog model and renders a chat."""
    out = subprocess.run(
        [sys.executable, "-c", SERVE, str(smollm2_dir)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ids"] > 5
    assert report["loaded"] == []


@pytest.mark.parametrize("compute", ["float16-weights", "int8-weights", "bfloat16"])
def test_one_pass_ids_are_the_two_pass_ids_unread_tensors_included(tmp_path: Path, compute: str) -> None:
    """Every format hashes each tensor as it converts it (one read): the id is the file's
    (`build_manifest` over it, the two-pass definition), whatever the format, and a tensor the
    model does not use is named too."""
    model = make_tiny_llama(8)
    sd = model.to_hf_state_dict()
    write_hf_dir(tmp_path / "plain", model.cfg, sd)
    write_hf_dir(tmp_path / "extra", model.cfg, sd | {"model.unused.weight": torch.ones(3, 2)})
    plain = load_model(tmp_path / "plain", device="cpu", compute=compute)
    assert plain.model_id == load_model(tmp_path / "plain", device="cpu").model_id
    cfg, tensors = read_hf_dir(tmp_path / "plain")
    assert plain.manifest == manifest.build_manifest(tensors, cfg.to_dict(), None)
    extra = load_model(tmp_path / "extra", device="cpu", compute=compute)
    assert extra.model_id == load_model(tmp_path / "extra", device="cpu").model_id != plain.model_id
    assert "model.unused.weight" in {e["name"] for e in extra.manifest["tensors"]}


@pytest.mark.parametrize("matrices", [torch.float16, torch.float32, torch.bfloat16])
def test_what_is_hashed_is_what_is_converted(tmp_path: Path, matrices: torch.dtype) -> None:
    """A file rewritten in place (same inode: the mapping sees it) before a tensor is read: the
    entry the id is made of hashes the bytes the model got, never the earlier ones, in every
    format's dtype (the float32 path used to hash the file first, then read it again)."""
    import struct

    import numpy as np

    model = make_tiny_llama(9)
    write_hf_dir(tmp_path / "m", model.cfg, model.to_hf_state_dict())
    name = "model.layers.0.self_attn.o_proj.weight"
    _, tensors = read_hf_dir(tmp_path / "m")
    shape = tuple(tensors[name].shape)
    source = _ReadOnceSource(tensors, torch.device("cpu"), loader._MappedPages(tmp_path / "m"), matrices)
    path = tmp_path / "m" / "model.safetensors"
    with path.open("r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        start = 8 + n + json.loads(f.read(n))[name]["data_offsets"][0]
        f.seek(start)
        f.write(np.full(shape, 0.5, dtype=np.float32).tobytes())
    got = source[name]
    assert bool((got == 0.5).all())
    (entry,) = source.entries
    assert entry["sha256"] == hashlib.sha256(np.full(shape, 0.5, dtype=np.float32).tobytes()).hexdigest()
