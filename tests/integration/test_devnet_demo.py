"""`supernet devnet demo` end to end, smaller: every role a real process, a real cheat caught.

Anvil, the contracts, the embedded store, two honest nodes, one node with ``--fault answer:1``
(a rational cheat: made-up answers, receipts and traces consistent) and three validators all
run for real; users pay for six tasks through the SDK's `Client`.
The demo judges the outcome from the chain itself (see `supernet.sdk.devnet.demo`).

Where Debian's Chromium is installed (`make setup` installs it), the same assertions run in
tests/integration/test_explorer_browser.py on the demo network that module starts anyway: one run
of about two and a half minutes instead of two. This module runs the demo only where that one is
skipped.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
from rich.console import Console
from supernet.sdk.devnet.demo import DemoConfig, run_demo

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

if Path("/usr/bin/chromium").exists() and importlib.util.find_spec("playwright") is not None:
    pytest.skip(
        "the same demo run is tested in test_explorer_browser.py (which shares its network)",
        allow_module_level=True,
    )


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
