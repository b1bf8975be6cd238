"""The node's built-in tools: calculator, JSON and text utilities, content-store read, chain read.

``store_read`` is scoped: on a node (``access`` given) it reads only blocks the access manager
grants the calling task's namespace, the blocks that namespace's own memory and file writes made
(`supernet.node.kernel.access.OwnershipIndex`); anything else is refused before the store is
asked, in the same words as a block nobody serves. A validator re-running a recorded read
builds the tools without ``access``: the node already allowed that read.

>>> registry = ToolRegistry()
>>> for tool in builtin_tools(store=None, rpc_url=None):
...     registry.register(tool)
>>> registry.names()
['calculator', 'chain_read', 'json_query', 'store_read', 'text']
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from supernet.node.kernel import text_case
from supernet.node.kernel.access import NOT_READABLE
from supernet.node.kernel.calculator import evaluate
from supernet.node.kernel.chain_read import chain_read
from supernet.node.kernel.errors import ToolError, ToolUnavailableError
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec
from supernet.sdk.store import InvalidBlockError
from supernet.sdk.store.cids import codec_of
from supernet.sdk.store.errors import BlockNotFoundError, StoreUnavailableError

if TYPE_CHECKING:
    from supernet.node.kernel.access import AccessManager

__all__ = ["ToolRegistry", "builtin_tools"]

log = logging.getLogger(__name__)

MAX_READ_BYTES = 64 * 1024
MAX_JSON_DEPTH = 512
"""Deepest nesting `json_query` parses: deeper documents are refused before parsing (the process's
recursion limit is raised by a dependency, so a ~99,000-deep array crashed the interpreter, a
node's or a validator's re-run alike, instead of raising)."""
MAX_JSON_INT_DIGITS = 640
"""The longest integer `json_query` reads (digits): part of the tool's definition, worded by the tool.
CPython refuses integers past its own limit (``sys.set_int_max_str_digits``, 4300 by default, a
setting any process may change) in its own words, so a validator's re-run could word another
error than the node's and flag an honest node (tests/unit/test_review_aios_kernel.py). 640 is the
least that limit can be set to, so every interpreter reads what this bound lets through
(tests/unit/test_review_session_changes22.py)."""
LOCAL_PURE_TOOLS = frozenset({"calculator", "json_query", "text"})
"""Built-in tools that are pure functions of their arguments, computed in-process (no store, no
network) and bounded to finish far inside their timeout. A validator re-runs every call of one
whatever the node recorded; so a node never records a timeout of one (that would be its load's
word, not the arguments'): it fails the task instead, without a receipt (`Dispatcher._tool`)."""
# ASCII digits only: ``\d`` and ``int()`` take every Unicode digit the running Python knows
_PATH_PART = re.compile(r"\[(-?[0-9]+)\]|\.?([^.\[\]]+)", re.ASCII)


def _calculator(args: Mapping[str, Any]) -> Any:
    return evaluate(str(args["expression"]))


def _nesting(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _json_query(args: Mapping[str, Any]) -> Any:
    """Pick a value out of a JSON document by a path like ``a.b[0].c``."""
    if _nesting(str(args["json"])) > MAX_JSON_DEPTH:
        raise ToolError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        value: Any = json.loads(args["json"], parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise ToolError(f"not JSON (line {exc.lineno}, column {exc.colno})") from None
    for index, key in _PATH_PART.findall(args.get("path", "")):
        try:
            value = value[_json_int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            raise ToolError(f"path {args.get('path')!r} not found") from None
    return value


def _json_int(digits: str) -> int:
    """An integer of the document or the path, at most `MAX_JSON_INT_DIGITS` digits long."""
    if len(digits.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ToolError(f"an integer of more than {MAX_JSON_INT_DIGITS} digits")
    return int(digits)


def _text(args: Mapping[str, Any]) -> Any:
    text, op = str(args["text"]), args["op"]
    if op == "length":
        return len(text)
    if op == "words":  # the protocol's Unicode, not the interpreter's (`text_case`)
        return text_case.words(text)
    if op == "upper":
        return text_case.upper(text)
    if op == "lower":
        return text_case.lower(text)
    if op == "reverse":
        return text[::-1]
    if op == "count":
        return text.count(str(args.get("needle", "")))
    raise ToolError(f"unknown text op {op!r}")


def _store_read(store: Any, access: AccessManager | None) -> Any:
    async def read(args: Mapping[str, Any]) -> Any:
        if store is None:
            raise ToolError("this node has no content store")
        cid = str(args["cid"])
        if access is not None:  # before the store is asked: a refusal must not tell if the block exists
            access.check_store_read(cid)
        try:
            if codec_of(cid) == "raw":
                data = await store.get_block(cid)
            else:
                try:
                    data = await store.cat(cid)
                except InvalidBlockError:  # a dag-cbor object that is not a file: show it as JSON
                    data = json.dumps(await store.get_dag(cid), default=str, sort_keys=True).encode()
        except (BlockNotFoundError, StoreUnavailableError) as exc:
            # the refusal's words (`NOT_READABLE`), never the store's: the text reaches the agent
            # and a validator cannot re-run the moment, so it holds the node to these exact words
            log.info("store_read of %s: %s", cid, exc)
            raise ToolUnavailableError(NOT_READABLE.format(cid=cid)) from exc
        limit = int(args.get("max_bytes", MAX_READ_BYTES))
        return {"cid": cid, "size": len(data), "text": data[:limit].decode("utf-8", errors="replace")}

    return read


def builtin_tools(store: Any, rpc_url: str | None, access: AccessManager | None = None) -> list[Tool]:
    """The built-in tools, bound to the node's content store and chain RPC (either may be absent).

    Args:
        store: The content store ``store_read`` reads.
        rpc_url: The chain RPC of ``chain_read``.
        access: The node's access manager: ``store_read`` reads only what it grants the calling
            task's namespace. ``None`` (a validator re-running a recorded read): any block.
    """
    string = {"type": "string"}
    address = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
    return [
        Tool(
            ToolSpec(
                "calculator",
                'Evaluate an arithmetic expression, e.g. {"expression": "(17 + 3) * 4"}.',
                {"type": "object", "properties": {"expression": string}, "required": ["expression"]},
                timeout_s=2.0,
            ),
            _calculator,
        ),
        Tool(
            ToolSpec(
                "json_query",
                "Pick a value out of a JSON document by a path like a.b[0].",
                {"type": "object", "properties": {"json": string, "path": string}, "required": ["json"]},
                timeout_s=2.0,
            ),
            _json_query,
        ),
        Tool(
            ToolSpec(
                "text",
                "Text utilities: length, words, upper, lower, reverse, count (of needle).",
                {
                    "type": "object",
                    "properties": {
                        "text": string,
                        "op": {"enum": ["length", "words", "upper", "lower", "reverse", "count"]},
                        "needle": string,
                    },
                    "required": ["text", "op"],
                },
                timeout_s=2.0,
            ),
            _text,
        ),
        Tool(
            ToolSpec(
                "store_read",
                "Read a file or block by CID: this agent's own memory entries and files for this user.",
                {
                    "type": "object",
                    "properties": {"cid": string, "max_bytes": {"type": "integer", "minimum": 1}},
                    "required": ["cid"],
                },
                timeout_s=10.0,
            ),
            _store_read(store, access),
        ),
        Tool(
            ToolSpec(
                "chain_read",
                "Read the chain at a final block (default: the latest final one): block_number, balance "
                "of an address, or eth_call of data to an address. The result names the block: "
                '{"block", "block_hash", "value"} (or "reverted" with the revert data).',
                {
                    "type": "object",
                    "properties": {
                        "method": {"enum": ["block_number", "balance", "call"]},
                        "address": address,
                        "data": {"type": "string", "pattern": "^0x([0-9a-fA-F]{2})*$"},
                        "block": {"type": ["string", "integer"]},
                    },
                    "required": ["method"],
                },
                # not re-run as it is (``latest`` moves on): a validator re-reads the block the result
                # names instead (`supernet.validator.chain_check`)
                deterministic=False,
                timeout_s=10.0,
                max_concurrency=8,
            ),
            chain_read(rpc_url),
        ),
    ]
