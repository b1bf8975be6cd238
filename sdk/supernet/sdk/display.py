r"""What a terminal is shown of text another party wrote: a node's answer, its check details, its
error messages.

A node (or a model a web page prompt-injected) can put terminal control sequences in any string
it sends: OSC 52 writes the user's clipboard, OSC 8 hides a link under other text, a carriage
return or cursor move rewrites a line already printed, and the bidi overrides reorder what is
read. `shown` makes every such character visible as an escape (``\x1b``, ``\u202e``) so the
terminal prints it instead of obeying it; newlines and tabs stay (a ``one_line`` text escapes
its newlines too, so one check or error is one line). ``supernet task submit --raw`` is how a
user asks for an answer's exact bytes.

>>> shown("Paris.\x1b]52;c;ZWNobw==\x07")
'Paris.\\x1b]52;c;ZWNobw==\\x07'
>>> shown("a\nb", one_line=True)
'a\\nb'
"""

from __future__ import annotations


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_HIDDEN = [
    *range(0x00, 0x20),  # C0: ESC, BEL, CR, backspace... (newline and tab are taken out below)
    *range(0x7F, 0xA0),  # DEL and C1 (0x9B is a one-byte CSI to some terminals)
    *range(0x202A, 0x202F),  # bidi embeddings and overrides: LRE RLE PDF LRO RLO
    *range(0x2066, 0x206A),  # bidi isolates: LRI RLI FSI PDI
    *range(0xD800, 0xE000),  # lone surrogates (JSON can carry them; no terminal can print them)
]
_TABLE = {code: _escape(code) for code in _HIDDEN if code not in (0x09, 0x0A)}
_ONE_LINE_TABLE = {**_TABLE, 0x0A: "\\n"}


def shown(text: str, *, one_line: bool = False) -> str:
    """``text`` with every control character but newline and tab shown as an escape (with
    ``one_line``, newlines too): safe to print to a terminal whoever wrote it."""
    return text.translate(_ONE_LINE_TABLE if one_line else _TABLE)
