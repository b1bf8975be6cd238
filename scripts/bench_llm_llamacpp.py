#!/usr/bin/env python3
"""llama.cpp as the reference of ``scripts/bench_llm.py``: the same GGUF, batched greedy decoding.

llama.cpp runs through llama-cpp-python's low-level API: one ``llama_batch`` holding every
sequence (one sequence id each), ``llama_decode``, then a greedy pick over each sequence's logits;
a Python loop over the steps. It decodes the Q4_1 weights as they are (no dequantisation to fp32).

llama-cpp-python is a bench-only tool, not a project dependency: it has no binary wheel for this
machine, so on first use it is built from source into ``$SUPERNET_HOME/wheels`` (about 12 minutes,
once) and installed from there into the running virtualenv (`ensure_llama_cpp`).

This module imports neither torch nor the engine, so the child that measures llama.cpp's peak
memory (``--peak-rss``, started by bench_llm.py with a JSON job on stdin) holds llama.cpp alone.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import importlib
import json
import logging
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LLAMA_CPP_VERSION = "0.3.36"
N_SEQ_MAX = 16
N_CTX = 4096  # split between the sequences (llama.cpp's default non-unified cache): 256 tokens each
N_BATCH = 2048  # the most prompt tokens one prefill takes

Entry = tuple[int, int, int, bool]
"""One batch slot: (token, position, sequence id, wants logits)."""


# ---------------------------------------------------------------------------- pure helpers (tested)


def prefill_entries(prompts: Sequence[Sequence[int]]) -> list[Entry]:
    """Every prompt token in one batch, sequence ``i`` for prompt ``i``; logits at each prompt's end."""
    return [
        (tok, pos, seq, pos == len(prompt) - 1)
        for seq, prompt in enumerate(prompts)
        for pos, tok in enumerate(prompt)
    ]


def decode_entries(prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]]) -> list[Entry]:
    """One decode step: each sequence's last generated token, at the position after its last one."""
    return [
        (out[-1], len(prompt) + len(out) - 1, seq, True)
        for seq, (prompt, out) in enumerate(zip(prompts, outputs, strict=True))
    ]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two generations share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve`` from the
    process that forked, so a child of the (large) bench process would report the bench's peak.
    """
    hwm = _proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now, in MB (0 where ``/proc`` is missing)."""
    return _proc_status_mb("VmRSS") or 0.0


# ---------------------------------------------------------------------------- installing


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _wheel(wheels: Path, dist: str, version: str = "") -> Path | None:
    return next(iter(sorted(wheels.glob(f"{dist}-{version}*.whl"))), None)


def ensure_llama_cpp(wheels: Path) -> Any:
    """Import llama_cpp, building and installing llama-cpp-python first if it is missing.

    The wheel is kept in ``wheels``, so the ~12-minute source build happens once per machine;
    diskcache (imported by llama_cpp, not otherwise installed here) waits beside it, so a later
    install needs no index.
    """
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        pass
    wheels.mkdir(parents=True, exist_ok=True)
    with (wheels / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second bench started meanwhile waits for this build
        if _wheel(wheels, "llama_cpp_python", LLAMA_CPP_VERSION) is None:
            msg = f"building llama-cpp-python {LLAMA_CPP_VERSION} from source, about 12 minutes, once"
            print(msg, flush=True)
            _pip("wheel", "--no-deps", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-w", str(wheels))
        if _wheel(wheels, "diskcache") is None:
            _pip("download", "--no-deps", "--only-binary", ":all:", "diskcache", "-d", str(wheels))
    print(f"installing llama-cpp-python {LLAMA_CPP_VERSION} from {wheels}", flush=True)
    _pip("install", "-q", "--no-index", "--find-links", str(wheels), f"llama-cpp-python=={LLAMA_CPP_VERSION}")
    importlib.invalidate_caches()
    return importlib.import_module("llama_cpp")


# ---------------------------------------------------------------------------- the runner


class LlamaCpp:
    """A llama.cpp context for up to ``N_SEQ_MAX`` sequences decoded together, greedy."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp
        import numpy as np

        self._lib, self._np = llama_cpp, np
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its load log is long
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(gguf).encode(), llama_cpp.llama_model_default_params()
        )
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max = N_CTX, N_BATCH, N_SEQ_MAX
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization (no BOS: SmolLM2 adds none), to check the prompts match."""
        raw = text.encode()
        buf = (self._lib.llama_token * (len(raw) + 8))()
        n = self._lib.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), False, True)
        return list(buf[:n])

    def _decode(self, entries: list[Entry]) -> list[int]:
        """Run one batch; the greedy token of every entry that wants logits, in batch order."""
        if len(entries) > N_BATCH:
            raise ValueError(f"{len(entries)} tokens in one batch, at most {N_BATCH}")
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(entries)
        if (rc := self._lib.llama_decode(self.ctx, b)) != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        rows = sum(e[3] for e in entries)
        ptr = ctypes.cast(self._lib.llama_get_logits(self.ctx), ctypes.POINTER(ctypes.c_float))
        return self._np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab)).argmax(axis=1).tolist()

    def generate(self, prompts: Sequence[Sequence[int]], new_tokens: int) -> tuple[float, list[list[int]]]:
        """Greedy ``new_tokens`` tokens per prompt (no stop token), all prompts together.

        Returns:
            Seconds from submitting the prompts to the last token (prefill included), and the outputs.
        """
        if len(prompts) > N_SEQ_MAX:
            raise ValueError(f"{len(prompts)} sequences, at most {N_SEQ_MAX}")
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        outputs = [[tok] for tok in self._decode(prefill_entries(prompts))]
        for _ in range(new_tokens - 1):
            for out, tok in zip(outputs, self._decode(decode_entries(prompts, outputs)), strict=True):
                out.append(tok)
        return time.perf_counter() - t0, outputs

    def close(self) -> None:
        self._lib.llama_batch_free(self.batch)
        self._lib.llama_free(self.ctx)
        self._lib.llama_model_free(self.model)


def _peak_rss_child() -> None:
    """Load, generate once with every prompt together, print the peak memory (a JSON line)."""
    job = json.loads(sys.stdin.read())
    runner = LlamaCpp(Path(job["gguf"]), job["threads"])
    seconds, _ = runner.generate(job["prompts"], job["new_tokens"])
    print(
        json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), "rss_mb": round(rss_mb(), 1), "seconds": seconds})
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-rss", action="store_true", help="Measure peak memory (JSON job on stdin).")
    if parser.parse_args().peak_rss:
        _peak_rss_child()
