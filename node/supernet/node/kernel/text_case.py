"""Case mapping and word splitting of the ``text`` tool, as the protocol pins them: Unicode 14.0.

``text`` is a deterministic tool: a validator re-runs it and holds any other result against the
node. Python's ``str.upper``, ``str.lower`` and ``str.split`` follow the running interpreter's
Unicode database, which moves between versions (U+1C8A CYRILLIC SMALL LETTER TJE upper-cases only
from Unicode 16, Python 3.14), so a user could get an honest node on one Python framed by
validators on another (tests/unit/test_review_mcp_tools.py). The tool therefore maps case by a
table fixed in the protocol (``text_case.json``: the full case mappings of Unicode 14.0, and the
Cased and Case_Ignorable code points its final-sigma rule needs, all read off Python 3.11 by
``scripts/gen_text_case.py``), and counts words as runs between the 29 whitespace code points of
Unicode 14.0: exactly what ``str.upper``, ``str.lower`` and ``len(str.split())`` give on Python
3.11, and the same on any interpreter.

>>> upper("straße"), lower("ΟΔΟΣ ΣΑΣ"), words("a\\u3000b  c")
('STRASSE', 'οδος σας', 3)
>>> upper("\\u1c8a") == "\\u1c8a"  # TJE has no mapping in Unicode 14.0
True
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from importlib import resources

_TABLE = json.loads(resources.files(__package__).joinpath("text_case.json").read_text(encoding="utf-8"))
UNICODE_VERSION: str = _TABLE["unicode"]
"""The Unicode version whose mappings the tool uses (whatever the interpreter's)."""
UPPER: dict[str, str] = _TABLE["upper"]
LOWER: dict[str, str] = _TABLE["lower"]
WHITESPACE: frozenset[str] = frozenset(_TABLE["whitespace"])
_WORD = re.compile("[^" + re.escape(_TABLE["whitespace"]) + "]+")
_SIGMA, _SMALL_SIGMA, _FINAL_SIGMA = "\u03a3", "\u03c3", "\u03c2"


def _member(ranges: list[list[int]]) -> Callable[[str], bool]:
    firsts = [first for first, _ in ranges]

    def contains(c: str) -> bool:
        i = bisect.bisect_right(firsts, ord(c)) - 1
        return i >= 0 and ord(c) <= ranges[i][1]

    return contains


_case_ignorable = _member(_TABLE["case_ignorable"])
_cased = _member(_TABLE["cased"])  # of the characters that are not case-ignorable


def upper(text: str) -> str:
    """``text`` upper-cased by the pinned table (full mappings: ß becomes SS)."""
    return "".join(UPPER.get(c, c) for c in text)


def lower(text: str) -> str:
    """``text`` lower-cased by the pinned table; a capital sigma at the end of a word becomes ς
    (Unicode's Final_Sigma: after a cased letter and not before one, case-ignorable ones skipped)."""
    return "".join(_final_sigma(text, i) if c == _SIGMA else LOWER.get(c, c) for i, c in enumerate(text))


def _final_sigma(text: str, i: int) -> str:
    # index scans, as CPython's own: slicing the text around each sigma was quadratic in a text of
    # sigmas; each scan stops at the first character that is not case-ignorable
    j = i - 1
    while j >= 0 and _case_ignorable(text[j]):
        j -= 1
    if j < 0 or not _cased(text[j]):
        return _SMALL_SIGMA
    j = i + 1
    while j < len(text) and _case_ignorable(text[j]):
        j += 1
    return _FINAL_SIGMA if j == len(text) or not _cased(text[j]) else _SMALL_SIGMA


def words(text: str) -> int:
    """How many runs of non-whitespace ``text`` holds (``len(text.split())`` on Unicode 14.0)."""
    return sum(1 for _ in _WORD.finditer(text))
