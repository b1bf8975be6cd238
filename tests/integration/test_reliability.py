"""A short crash campaign inside `make test` (the full one is `make bench-reliability`).

Every role of a real devnet (nodes, validators, the store; real Anvil, contracts and model) is
killed once with SIGKILL at a point of its work while users keep paying for tasks, and restarted
on the same data (scripts/bench_reliability.py). Nothing acknowledged may be lost, nobody
charged twice, no batch committed twice or skipped by a validator, no honest node slashed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]


def _campaign_module() -> Any:
    path = ROOT / "scripts" / "bench_reliability.py"
    spec = importlib.util.spec_from_file_location("bench_reliability", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_killing_every_role_mid_work_loses_and_double_counts_nothing(tmp_path: Path) -> None:
    mod = _campaign_module()
    figures = mod.run(mod.Campaign(kills=len(mod.KILL_POINTS), trigger_timeout_s=45.0), tmp_path)
    assert figures["kills"] == len(mod.KILL_POINTS)
    reached = {k["point"] for k in figures["kill_log"] if k["triggered"]}
    # a challenge needs a sampled faulty receipt in time: the other points are always reached
    assert {"generation", "commit", "redeem", "verify", "write"} <= reached, figures["kill_log"]
    assert figures["tasks_acknowledged"] > 0 and figures["tasks_done"] > 0
    for must_be_zero in (
        "tasks_lost",
        "double_charges",
        "duplicate_commits",
        "batches_skipped_by_validators",
        "honest_nodes_slashed",
    ):
        summary = {k: v for k, v in figures.items() if k != "kill_log"}
        assert figures[must_be_zero] == 0, (must_be_zero, summary)
