"""Case mapping and word splitting of the ``text`` tool, as the protocol pins them: Unicode 14.0.

``text`` is a deterministic tool: a validator re-runs it and holds any other result against the
node. Python's ``str.upper``, ``str.lower`` and ``str.split`` follow the running interpreter's
Unicode database, which moves between versions (U+1C8A CYRILLIC SMALL LETTER TJE upper-cases only
from Unicode 16, Python 3.14), so a user could get an honest node on one Python framed by
validators on another (tests/unit/test_review_mcp_tools.py). The tool therefore maps case by a
table fixed in the protocol (``text_case.json``: the full case mappings of Unicode 14.0, Python
3.11's, written by ``scripts/gen_text_case.py``), one code point at a time with no
context-dependent rule (a final capital sigma lowercases to σ, as it does alone), and counts words
as runs between the 29 whitespace code points of Unicode 14.0; whatever the interpreter, node and
validators compute the same.

>>> upper("straße"), lower("ΟΔΟΣ"), words("a\\u3000b  c")
('STRASSE', 'οδοσ', 3)
>>> upper("\\u1c8a") == "\\u1c8a"  # TJE has no mapping in Unicode 14.0
True
"""

from __future__ import annotations

import json
import re
from importlib import resources

_TABLE = json.loads(resources.files(__package__).joinpath("text_case.json").read_text(encoding="utf-8"))
UNICODE_VERSION: str = _TABLE["unicode"]
"""The Unicode version whose mappings the tool uses (whatever the interpreter's)."""
UPPER: dict[str, str] = _TABLE["upper"]
LOWER: dict[str, str] = _TABLE["lower"]
WHITESPACE: frozenset[str] = frozenset(_TABLE["whitespace"])
_WORD = re.compile("[^" + re.escape(_TABLE["whitespace"]) + "]+")


def upper(text: str) -> str:
    """``text`` upper-cased by the pinned table (full mappings: ß becomes SS)."""
    return "".join(UPPER.get(c, c) for c in text)


def lower(text: str) -> str:
    """``text`` lower-cased by the pinned table, each code point on its own."""
    return "".join(LOWER.get(c, c) for c in text)


def words(text: str) -> int:
    """How many runs of non-whitespace ``text`` holds (``len(text.split())`` on Unicode 14.0)."""
    return sum(1 for _ in _WORD.finditer(text))
