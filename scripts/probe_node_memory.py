"""What a node's memory is made of: the idle RSS of a real `supernet node run`, and each part's share.

Two measurements, written to docs/benchmarks/memory.md and memory.json:

1. A real node (no chain, embedded store, the default model and agents) started as its own
   process; once ``/healthz`` answers, its resident set is read from ``/proc`` (anonymous memory:
   tensors and the Python heap; file-backed: shared libraries and mapped files).
2. The same parts loaded one at a time in this process, each stage's RSS growth attributed to it;
   the engine then serves 16 long sequences together (its KV cache written) and idles until it
   gives that memory back.

Usage: ``.venv/bin/python scripts/probe_node_memory.py`` (about a minute; the model must be pulled).
"""

from __future__ import annotations

import asyncio
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT_MD = ROOT / "docs" / "benchmarks" / "memory.md"
OUT_JSON = ROOT / "docs" / "benchmarks" / "memory.json"
MB = 1024 * 1024
SERVED_TOKENS = 300  # new tokens per sequence: past the pool's first 256 per slot, so it grows


def proc_memory(pid: int | str = "self") -> dict[str, float]:
    """Resident memory of ``pid`` in MB: total, anonymous, file-backed, and the peak (VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {
        "rss_mb": fields["VmRSS"],
        "anon_mb": fields["RssAnon"],
        "file_mb": fields["RssFile"],
        "peak_mb": fields["VmHWM"],
    }


def free_port() -> int:
    from supernet.sdk.devnet.processes import free_port as pick

    return pick()


def real_node() -> dict[str, Any]:
    """Start `supernet node run`, wait until it serves, and read its memory idle and after use."""
    with tempfile.TemporaryDirectory(prefix="supernet-mem-") as tmp:
        port = free_port()
        config = Path(tmp) / "node.toml"
        config.write_text(f'data_dir = "{tmp}/data"\n\n[api]\nport = {port}\n')
        log = (Path(tmp) / "node.log").open("w")
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "supernet"), "node", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"the node exited ({proc.returncode}): see {log.name}")
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - started > 300:
                    raise SystemExit("the node did not start within 300 s")
                time.sleep(0.5)
            time.sleep(3.0)  # let start-up work settle
            idle = proc_memory(proc.pid)
            return {"idle": idle, "startup_s": round(time.monotonic() - started, 1)}
        finally:
            proc.terminate()
            proc.wait(30)


def stages() -> list[tuple[str, float]]:
    """RSS after each part of a node is loaded, in this process (MB)."""
    rows = [("Python interpreter", proc_memory()["rss_mb"])]
    import torch

    torch.set_num_threads(2)
    rows.append(("torch imported (its shared libraries)", proc_memory()["rss_mb"]))
    import supernet.node.service.kernel_executor  # noqa: F401  (fastapi, web3, the kernel)

    rows.append(("node service modules (FastAPI, web3, kernel)", proc_memory()["rss_mb"]))
    from supernet.node.llm.loader import default_compute, load_model
    from supernet.node.llm.model import Fp16WeightLinear, PackedLinear

    compute = default_compute(torch.device("cpu"))  # what `supernet node run` loads here
    # as the node's engine loads it (`LLMEngine.load`): the fused kernels where they build
    loaded = load_model("smollm2-135m", device="cpu", compute=compute, max_positions=2048, fused=True)
    gc.collect()
    rows.append((f"model weights loaded ({compute})", proc_memory()["rss_mb"]))
    from supernet.node.llm.engine import LLMEngine

    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=16)
    gc.collect()
    kv_mb = engine.pool.capacity * engine.pool.slots * engine.pool.bytes_per_token / MB
    rows.append((f"engine: KV pool reserved ({kv_mb:.0f} MB of address space)", proc_memory()["rss_mb"]))
    rows += asyncio.run(_serve_then_idle(engine))
    linears = [m for m in engine.model.modules() if isinstance(m, Fp16WeightLinear | PackedLinear)]
    per_weight = {"float16-weights": 2, "int8-weights": 1}.get(compute, 4)  # int8: + a scale a row
    packed_mb = sum(m.in_features * m.out_features * per_weight for m in linears) / MB
    # a fused model's embedding table is its head's float16 weight: counted once, with the head
    held = {t.data_ptr() for m in linears for t in m.buffers()}
    weights_mb = (
        sum(
            t.numel() * t.element_size()
            for t in loaded.model.state_dict().values()
            if t.data_ptr() not in held
        )
        / MB
    )
    from supernet.node.kernel.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    embedder.embed_sync(["load it"])  # the model loads on first use
    gc.collect()
    rows.append(("embedding model all-MiniLM-L6-v2 (memory search)", proc_memory()["rss_mb"]))
    import llguidance  # noqa: F401  (constrained decoding)

    rows.append(("llguidance (structured output)", proc_memory()["rss_mb"]))
    kernel = "fused" if loaded.model.fused_decoder is not None else "packed"
    sizes = f"embedding + norms {weights_mb:.0f} MB, {kernel} {compute} projections and head {packed_mb:.0f}"
    rows.append((f"(tensor sizes: {sizes}; KV pool reserved {kv_mb:.0f}, resident as written)", 0.0))
    return rows


async def _serve_then_idle(engine: Any) -> list[tuple[str, float]]:
    """RSS once the engine has served 16 sequences past the pool's first capacity together, and
    once it has been idle long enough to give the KV cache back (`LLMEngine.kv_release_after_s`)."""
    from supernet.node.llm import SamplingParams

    engine.kv_release_after_s = 1.0
    await engine.start()
    try:
        prompts = [engine.tokenizer.encode(f"Tell a long story about the number {i}.") for i in range(16)]
        params = SamplingParams(max_new_tokens=SERVED_TOKENS, stop_token_ids=())
        releases = engine.kv_releases
        await asyncio.gather(*(engine.submit(p, params).result() for p in prompts))
        busy = proc_memory()["rss_mb"]
        capacity = engine.pool.capacity
        await asyncio.sleep(engine.kv_release_after_s + 1.0)
        if engine.kv_releases == releases:
            raise SystemExit("the idle engine did not give its KV cache back")
        gc.collect()
        idle = proc_memory()["rss_mb"]
    finally:
        await engine.stop()
    return [
        (
            f"engine: served 16 sequences of ~{SERVED_TOKENS + 12} tokens together (pool {capacity}/slot)",
            busy,
        ),
        (f"engine: idle {engine.kv_release_after_s:.0f} s, its KV cache given back", idle),
    ]


def main() -> None:
    node = real_node()
    rows = stages()
    figures = {
        "node_idle_rss_mb": round(node["idle"]["rss_mb"], 1),
        "node_idle_anon_mb": round(node["idle"]["anon_mb"], 1),
        "node_idle_file_mb": round(node["idle"]["file_mb"], 1),
        "node_peak_rss_mb": round(node["idle"]["peak_mb"], 1),
        "node_startup_s": node["startup_s"],
        "stages_mb": [[name, round(mb, 1)] for name, mb in rows if mb],
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    OUT_JSON.write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        "# Node memory",
        "",
        "`.venv/bin/python scripts/probe_node_memory.py`: a real `supernet node run` (no chain, embedded",
        "store, the default model `smollm2-135m` in the CPU default format, default agents), read from",
        "`/proc` once `/healthz` answers; then the same parts loaded one at a time in one process.",
        "",
        "| node process, idle | MB |",
        "|---|---:|",
        f"| resident (RSS) | **{figures['node_idle_rss_mb']:.0f}** |",
        f"| of which anonymous (tensors, Python heap) | {figures['node_idle_anon_mb']:.0f} |",
        f"| of which file-backed (shared libraries, mapped files) | {figures['node_idle_file_mb']:.0f} |",
        f"| peak so far (VmHWM, start-up included) | {figures['node_peak_rss_mb']:.0f} |",
        "",
        "| part, loaded in this order | RSS after (MB) | growth (MB) |",
        "|---|---:|---:|",
    ]
    previous = 0.0
    for name, mb in rows:
        if not mb:
            lines.append(f"| {name} | | |")
            continue
        lines.append(f"| {name} | {mb:.0f} | {mb - previous:+.0f} |")
        previous = mb
    lines += ["", f"Machine: {figures['machine']}.", ""]
    OUT_MD.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
