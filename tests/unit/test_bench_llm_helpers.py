"""The pure helpers of scripts/bench_llm.py and its llama.cpp reference (no llama_cpp needed)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def scripts() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(SCRIPTS))  # bench_llm imports its sibling by name, as when run as a script
    try:
        yield importlib.import_module("bench_llm_llamacpp"), importlib.import_module("bench_llm")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_importing_the_bench_does_not_need_llama_cpp(scripts: tuple[ModuleType, ModuleType]) -> None:
    assert "llama_cpp" not in sys.modules


def test_prefill_puts_every_prompt_in_one_batch_with_logits_at_its_end(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    ref, _ = scripts
    assert ref.prefill_entries([[5, 6, 7], [8]]) == [
        (5, 0, 0, False),
        (6, 1, 0, False),
        (7, 2, 0, True),
        (8, 0, 1, True),
    ]


def test_decode_step_feeds_each_sequence_its_last_token_at_the_next_position(
    scripts: tuple[ModuleType, ModuleType],
) -> None:
    ref, _ = scripts
    # prompt of 3 tokens + 2 generated: the 2nd generated token sits at position 4
    assert ref.decode_entries([[1, 2, 3], [4]], [[9, 10], [11]]) == [(10, 4, 0, True), (11, 1, 1, True)]


def test_common_prefix(scripts: tuple[ModuleType, ModuleType]) -> None:
    ref, _ = scripts
    assert ref.common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert ref.common_prefix([1, 2], [1, 2]) == 2
    assert ref.common_prefix([], [1]) == 0


def test_peak_rss_is_at_least_the_current_rss(scripts: tuple[ModuleType, ModuleType]) -> None:
    ref, _ = scripts
    assert ref.peak_rss_mb() >= ref.rss_mb() > 0


def test_markdown_rewrite_keeps_the_text_below_the_marker(
    scripts: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, bench = scripts
    md = tmp_path / "llm.md"
    bench._write_markdown(md, "# old tables\n")
    md.write_text(md.read_text() + "\n## Decode step profile\n\nhand-written\n")
    bench._write_markdown(md, "# new tables\n")
    text = md.read_text()
    assert text.startswith("# new tables\n") and "old tables" not in text
    assert text.endswith(bench.MD_MARKER + "\n\n## Decode step profile\n\nhand-written\n")


def test_formats_put_the_default_first_and_skip_emulated_bf16(
    scripts: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bench = scripts
    monkeypatch.setattr(bench, "_default_format", lambda: "float16-weights")
    monkeypatch.setattr(bench, "COMPUTE_PRECISIONS", ("float32", "bfloat16", "float16-weights"))
    assert bench._formats(None) == ["float16-weights", "float32"]
    assert bench._formats("float32,float16-weights,float32") == ["float16-weights", "float32"]
