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
    doc = {"unicode": PINNED, "upper": upper, "lower": lower, "whitespace": "".join(whitespace)}
    OUT.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{OUT}: {len(upper)} upper, {len(lower)} lower mappings, {len(whitespace)} whitespace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
