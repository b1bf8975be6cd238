"""`supernet devnet demo` end to end, smaller: every role a real process, a real cheat caught.

Anvil, the contracts, the embedded store, two honest nodes, one node with ``--fault answer:1``
(a rational cheat: made-up answers, receipts and traces consistent) and three validators all
run for real; users pay for six tasks through the SDK's `Client`.
The demo judges the outcome from the chain itself (see `supernet.sdk.devnet.demo`).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from supernet.sdk.devnet.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]


def test_demo_slashes_the_cheater_and_refunds_its_users(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    ok = run_demo(DemoConfig(tasks=6, fault="answer:1.0", keep_dir=tmp_path), console)
    text = out.getvalue()
    assert ok, text[-4000:]
    assert "✔ the faulty node was slashed" in text
    assert "✔ no honest node was slashed" in text
    assert "challenge #1" in text and "FRAUD" in text
    # The verdict came from independent checks: more than one validator flagged the receipt itself.
    logs = sorted(tmp_path.glob("validator-*.log"))
    assert len(logs) == 3
    assert sum("FAULTY" in log.read_text() for log in logs) >= 2
