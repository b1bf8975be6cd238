"""Shared pytest set-up: every ``tests/*_fixtures.py`` module is loaded as a plugin.

Each component keeps its fixtures in its own module (``chain_fixtures.py``,
``store_fixtures.py``, ``llm_fixtures.py`` ...), so tests of any layer can use them.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).parent
sys.path.insert(0, str(_HERE))

pytest_plugins = sorted(p.stem for p in _HERE.glob("*_fixtures.py"))

# Below this much free space under the temporary folder the suite fails in confusing places (a
# store's write, a test's tmp_path, Anvil's states of older blocks); say so once, up front.
MIN_FREE_GIB = 4


def pytest_sessionstart(session: object) -> None:
    import shutil
    import tempfile

    import pytest

    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    if free < MIN_FREE_GIB:
        stale = Path.home() / ".foundry" / "anvil" / "tmp"  # where Anvils without --cache-path leave them
        hint = f"; old Anvil states in {stale} can go" if stale.is_dir() and any(stale.iterdir()) else ""
        hint += f"; Anvil states left by killed runs: {tmp}/anvil-states-*"
        pytest.exit(f"only {free:.1f} GiB free under {tmp}: the suite needs {MIN_FREE_GIB} GiB{hint}", 1)
