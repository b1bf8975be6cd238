"""Write the ``text`` tool's pinned case table (node/supernet/node/kernel/text_case.json).

``.venv/bin/python scripts/gen_text_case.py`` under Python 3.11, whose Unicode database is 14.0.0:
the version the protocol pins (`supernet.node.kernel.text_case`). It refuses to run on another
one, since the table must not move with the interpreter that regenerates it.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

PINNED = "14.0.0"
OUT = Path(__file__).resolve().parents[1] / "node" / "supernet" / "node" / "kernel" / "text_case.json"


def ranges(code_points: list[int]) -> list[list[int]]:
    """Sorted code points as ``[first, last]`` runs."""
    out: list[list[int]] = []
    for cp in code_points:
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def main() -> int:
    if unicodedata.unidata_version != PINNED:
        print(
            f"this Python's Unicode is {unicodedata.unidata_version}, the protocol pins {PINNED}",
            file=sys.stderr,
        )
        return 1
    upper: dict[str, str] = {}
    lower: dict[str, str] = {}
    whitespace: list[str] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates: no text holds them
            continue
        c = chr(cp)
        if c.upper() != c:
            upper[c] = c.upper()
        if c.lower() != c:
            lower[c] = c.lower()
        if c.isspace():
            whitespace.append(c)
    # the Final_Sigma context of str.lower, read off the interpreter itself (Python exposes no
    # Cased or Case_Ignorable property): a capital sigma after "A" then x stays final when x is
    # cased or case-ignorable; after "1" then x (the digit neither) only when x is cased and not
    # case-ignorable. Whether a case-ignorable letter is also cased never matters (the rule
    # skips case-ignorable characters before it looks for a cased one).
    ignorable, cased = [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        after_letter = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
        after_digit = ("1" + c + "\u03a3").lower()[-1] == "\u03c2"
        if after_letter and not after_digit:
            ignorable.append(cp)
        elif after_digit:
            cased.append(cp)
    doc = {
        "unicode": PINNED,
        "upper": upper,
        "lower": lower,
        "whitespace": "".join(whitespace),
        "case_ignorable": ranges(ignorable),
        "cased": ranges(cased),
    }
    OUT.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    print(
        f"{OUT}: {len(upper)} upper, {len(lower)} lower mappings, {len(whitespace)} whitespace,"
        f" {len(ignorable)} case-ignorable, {len(cased)} cased"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
