"""`--log-format json`: one JSON object per log record, for every `supernet` process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from supernet.sdk.cli import _group_of
from supernet.sdk.logs import JsonFormatter, configure


def test_a_record_is_one_json_object_with_its_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("supernet.test").makeRecord(
            "supernet.test", logging.WARNING, __file__, 1, "batch %d failed", (7,), sys.exc_info()
        )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "supernet.test"
    assert doc["message"] == "batch 7 failed" and "RuntimeError: boom" in doc["exc"]
    assert doc["ts"].endswith("+00:00")


def test_the_cli_writes_json_logs_when_asked() -> None:
    code = (
        "import logging, sys; from supernet.sdk.logs import configure; configure(logging.INFO, 'json');"
        "logging.getLogger('supernet.node').info('hello %s', 'world')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip())["message"] == "hello world"
    with pytest.raises(ValueError, match="text or json"):
        configure(logging.INFO, "yaml")


def test_root_options_and_their_values_do_not_hide_the_group() -> None:
    assert _group_of(["--log-format", "json", "node", "run"]) == "node"
    assert _group_of(["-v", "--log-format=json", "validator", "run"]) == "validator"
    assert _group_of(["--version"]) is None
    help_ = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", "--log-format", "json", "store", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_.returncode == 0 and "serve" in help_.stdout
