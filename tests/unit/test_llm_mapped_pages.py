"""The loader lets a model file's mapped pages go once read (`loader._MappedPages`): the values stay
(a dropped page is read again from the file), only the file's private mapping is touched (the same
call on anonymous memory would zero it), and the resident memory really falls."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from supernet.node.llm.loader import _MappedPages


def _rss_kb() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]


def test_mapped_pages_go_and_their_values_stay(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    original = {"big": torch.randn(4096, 2048, generator=gen), "small": torch.randn(7, generator=gen)}
    save_file(original, str(tmp_path / "model.safetensors"))
    mapped = load_file(tmp_path / "model.safetensors")
    release = _MappedPages(tmp_path)
    total = float(mapped["big"].sum())  # every page of the 32 MB tensor read: resident
    before = _rss_kb()
    release(mapped["big"])
    assert before - _rss_kb() > 24_000  # most of its 32 MB went back
    assert torch.equal(mapped["big"], original["big"]) and float(mapped["big"].sum()) == total  # read again
    release(mapped["small"])  # smaller than a page: nothing whole to drop, values intact
    assert torch.equal(mapped["small"], original["small"])


def test_memory_not_in_the_files_mapping_is_never_touched(tmp_path: Path) -> None:
    save_file({"w": torch.ones(8)}, str(tmp_path / "model.safetensors"))
    release = _MappedPages(tmp_path)
    anonymous = torch.full((2048, 1024), 3.0)  # malloc'd: madvise would zero these pages
    release(anonymous)
    assert bool((anonymous == 3.0).all())
    assert _MappedPages(tmp_path / "no-such-folder")._ranges == []
