"""`make test` fails when a Solidity test fails: the forge it runs passes the exit status on.

The npm wrapper ``node_modules/.bin/forge`` exits 0 whatever forge does, so a broken contract test
once went unnoticed. This runs the exact forge command line of ``make test-contracts`` on a scratch
Foundry project holding one failing and one passing test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(300)]

FOUNDRY_TOML = """[profile.default]
src = "src"
test = "test"
out = "out"
solc_version = "0.8.37"
offline = true
"""


def forge_binary() -> Path:
    """The forge executable `make test-contracts` calls (read from make's dry run)."""
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "test-contracts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in plan.splitlines() if "&&" in ln and re.search(r"forge\S* test\b", ln))
    words = shlex.split(line.split("&&", 1)[1])
    return (ROOT / "contracts" / words[0]).resolve()


@pytest.mark.parametrize(("body", "fails"), [("revert();", True), ("", False)])
def test_the_forge_of_make_test_reports_failures(tmp_path: Path, body: str, fails: bool) -> None:
    forge = forge_binary()
    assert forge.name == "forge" and ".bin" not in forge.parts, f"make test calls the npm wrapper {forge}"
    (tmp_path / "foundry.toml").write_text(FOUNDRY_TOML)
    (tmp_path / "src").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "T.t.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.37;\n"
        f"contract T {{ function test_it() public pure {{ {body} }} }}\n"
    )
    run = subprocess.run(
        [str(forge), "test", "--use", str(ROOT / "scripts" / "solc"), "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (run.returncode != 0) == fails, run.stdout[-2000:] + run.stderr[-2000:]
