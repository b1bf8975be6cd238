"""Shared pytest set-up: every ``tests/*_fixtures.py`` module is loaded as a plugin.

Each component keeps its fixtures in its own module (``chain_fixtures.py``,
``store_fixtures.py``, ``llm_fixtures.py`` ...), so tests of any layer can use them.
"""

import sys
from pathlib import Path

_HERE = Path(__file__).parent
sys.path.insert(0, str(_HERE))

pytest_plugins = sorted(p.stem for p in _HERE.glob("*_fixtures.py"))
