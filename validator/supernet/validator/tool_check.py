"""Re-running the deterministic tool calls of a trace and comparing their results.

The validator builds the same built-in tool registry as a node (`supernet.node.kernel.builtin_tools`).
A call the trace marks deterministic is re-run with the recorded arguments; a different result
(or an error where the node recorded none, and vice versa) is a `Check.TOOL` finding. A tool the
validator knows as deterministic but the trace marks non-deterministic is a finding too (a node
must not dodge the re-run). Tools the validator does not have are skipped, not accused.

MCP tools (``<server>.<tool>``; built-in names have no dot) are deterministic only by their
operator's word: the validator re-runs one when its own ``mcp_servers`` reach that server and
declare the tool deterministic *and* the trace recorded the call as deterministic *and* the trace
describes the tool exactly as the validator's server does (a server name is each operator's local
label: another server, or another version of it, is skipped, never accused); a call the node
recorded as non-deterministic is never held against it (another operator may declare otherwise).
An MCP call's recorded failure must be in the node's one wording for it (`mcp_unavailable`, or the
tool's timeout, whose limit is the operator's number): no re-run can reproduce the moment, and the
text reaches the agent, so a node that wrote its own there (or hid a deterministic answer behind a failure
worded to steer the task) would choose what the agent reads.

The MCP re-runs of one receipt share a time budget (`MCP_RERUN_BUDGET_S`): a node's trace chooses
how many MCP calls there are and each may run up to its server's timeout, so without one a trace of
slow calls held the validator on one receipt for as long as the node liked. They run in an order
the validator draws in secret (a node that put its lie after slow honest calls in trace order had
it skipped every time); calls past the budget are skipped like those of a server the validator
lacks: an MCP result is the operator's word, and the re-run is a check where the validator can
make it, not the ground of the verdict.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol

from supernet.node.kernel.access import NOT_READABLE
from supernet.node.kernel.agent_run import spec_record
from supernet.node.kernel.builtin_tools import LOCAL_PURE_TOOLS
from supernet.node.kernel.mcp_tools import mcp_unavailable
from supernet.node.kernel.tools import ToolSpec, timed_out
from supernet.sdk.formats.trace import STORE_READ, VerifiedWitness
from supernet.sdk.store import InvalidBlockError
from supernet.sdk.store.cids import canonical_cid, codec_of
from supernet.validator.chain_check import CHAIN_READ, ChainView, check_chain_read
from supernet.validator.evidence import Check, Finding, OwnSide
from supernet.validator.trace_view import ToolCall

MCP_RERUN_BUDGET_S = 60.0
"""Seconds one receipt's MCP re-runs may take together (a call started within it may finish)."""


class ToolRunner(Protocol):
    """What the validator needs of a tool registry."""

    def deterministic(self, name: str) -> bool | None:
        """Whether tool ``name`` is deterministic (None: unknown tool)."""
        ...

    async def run(self, name: str, args: Mapping[str, Any]) -> Any:
        """Run the tool; raises on failure."""
        ...


class RegistryRunner:
    """A `ToolRunner` over the node's built-in tools (store-backed tools read the same store)."""

    def __init__(self, store: Any, chain_rpc_url: str | None = None) -> None:
        from supernet.node.kernel.builtin_tools import builtin_tools
        from supernet.node.kernel.tools import ToolRegistry

        self._registry = ToolRegistry()
        for tool in builtin_tools(store, None):
            self._registry.register(tool)
        # where a recorded chain_read is re-read at the block it names (None: such receipts are
        # unverifiable here)
        self.chain = ChainView(chain_rpc_url) if chain_rpc_url else None

    def validate(self, name: str, args: Mapping[str, Any]) -> None:
        """Check ``args`` against the protocol's schema of tool ``name`` (`ToolRegistry.validate`)."""
        self._registry.validate(name, args)

    def add_mcp(self, tools: Any) -> list[str]:
        """Register the tools of started MCP servers (`supernet.node.kernel.mcp_tools.MCPTools`)."""
        return list(tools.register(self._registry))

    def deterministic(self, name: str) -> bool | None:
        """See `ToolRunner`."""
        return self._registry.spec(name).deterministic if name in self._registry.names() else None

    def spec(self, name: str) -> ToolSpec | None:
        """The protocol's spec of tool ``name`` (None: a tool this validator does not know)."""
        return self._registry.spec(name) if name in self._registry.names() else None

    async def run(self, name: str, args: Mapping[str, Any]) -> Any:
        """See `ToolRunner`."""
        return await self._registry.call(name, args)


def is_mcp(name: str) -> bool:
    """Whether ``name`` is an MCP tool's (``<server>.<tool>``): built-in tool names have no dot."""
    return "." in name


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


ENVIRONMENTAL_ERRORS = ("ToolTimeoutError", "ToolUnavailableError")
"""Tool failures that depend on the moment (load, what a store serves), not on the arguments: a
node recording one is not re-checked (unless the tool is one of `LOCAL_PURE_TOOLS`), a re-run
failing with one makes the receipt unverifiable on this side (`OwnSide`: never an accusation, or
a node could withhold a block, let validators accuse, then publish it; and never final either, or
a node could place its lie where a busy validator's re-run times out, and have it recorded as
checked: tests/unit/test_review_hostile_parties2.py)."""


# `LOCAL_PURE_TOOLS` (the node's definition): a node's recorded timeout of one is no reason to skip
# the re-run (it would let a node drop any call it dislikes), and an honest node never records one
# (it fails the task instead). The re-run decides: a result where the node recorded a timeout is a
# finding; a re-run timing out too is unverifiable here, and checked again (`OwnSide`).


def _environmental(error: str | None) -> bool:
    return error is not None and error.split(":", 1)[0] in ENVIRONMENTAL_ERRORS


def _exempt(call: ToolCall) -> bool:
    """Whether the node's recorded failure exempts a built-in call from the re-run (store/network
    tools; an MCP call's failure is judged by its wording alone, `_mcp_words`)."""
    return _environmental(call.error) and call.name not in LOCAL_PURE_TOOLS


def _own_words(call: ToolCall, runner: ToolRunner) -> bool:
    """Whether an exempt failure of a built-in tool is in the words the tool itself uses.

    The text reaches the agent (and through it the model), and no re-run can reproduce the moment,
    so a node could otherwise write a prompt of its choice there: a built-in tool words its
    environmental failures itself, the same whatever happened (a store's refusal and its outage
    read alike, `supernet.node.kernel.access.NOT_READABLE`; a timeout names the tool and the
    protocol's limit for it, `supernet.node.kernel.tools.timed_out`).
    """
    error = call.error or ""
    if _is_timeout(call, runner):
        return True
    cid = call.args.get("cid") if isinstance(call.args, Mapping) else None
    return call.name == STORE_READ and error == f"ToolUnavailableError: {NOT_READABLE.format(cid=cid)}"


def _mcp_words(call: ToolCall) -> bool:
    """Whether an MCP call's environmental failure is in the node's one wording for it: the server
    unavailable, or the tool's timeout (its limit is the operator's, not in the recorded spec: a
    number is all the node chooses there)."""
    server = call.name.split(".", 1)[0]
    if call.error == f"ToolUnavailableError: {mcp_unavailable(server)}":
        return True
    limit = (call.error or "").removeprefix(f"ToolTimeoutError: tool {call.name} timed out after ")
    return limit != (call.error or "") and re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})? s", limit) is not None


def _same_server(name: str, runner: ToolRunner, recorded: Mapping[str, ToolSpec]) -> bool:
    """Whether the trace describes MCP tool ``name`` exactly as this validator's server does."""
    mine = runner.spec(name) if hasattr(runner, "spec") else None
    theirs = recorded.get(name)
    return mine is not None and theirs is not None and spec_record(mine) == spec_record(theirs)


def _is_timeout(call: ToolCall, runner: ToolRunner) -> bool:
    """Whether the call's error is exactly its tool's timeout, at the protocol's limit."""
    spec = runner.spec(call.name) if hasattr(runner, "spec") else None
    return spec is not None and call.error == f"ToolTimeoutError: {timed_out(call.name, spec.timeout_s)}"


class WitnessLacksError(LookupError):
    """A re-run ``store_read`` read a block or file the trace's witness does not carry."""


class WitnessStore:
    """The content store a re-run ``store_read`` reads: the trace's own witness, nothing else.

    What a successful call read is in the witness (`supernet.sdk.formats.trace.STORE_READ`), so the
    re-run needs no store: a block the node withholds cannot turn its made-up result into an
    unverifiable receipt, and a block missing from the witness is the trace's fault."""

    def __init__(self, witness: VerifiedWitness) -> None:
        self._w = witness

    async def get_block(self, cid: str) -> bytes:
        key = canonical_cid(cid)
        found = self._w.raw.get(key) if codec_of(key) == "raw" else self._w.encoded.get(key)
        if found is None:
            raise WitnessLacksError(f"the trace's witness lacks block {cid}")
        return found

    async def cat(self, cid: str) -> bytes:
        key = canonical_cid(cid)
        if key in self._w.files:
            return self._w.files[key]
        if key in self._w.encoded:  # a dag-cbor block that is no file: the tool shows it as JSON
            raise InvalidBlockError(f"{cid} is not a file")
        raise WitnessLacksError(f"the trace's witness lacks file {cid}")

    async def get_dag(self, cid: str) -> Any:
        key = canonical_cid(cid)
        if key not in self._w.blocks:
            raise WitnessLacksError(f"the trace's witness lacks block {cid}")
        return self._w.blocks[key]


async def check_tools(
    calls: tuple[ToolCall, ...],
    runner: ToolRunner,
    witness: VerifiedWitness | None = None,
    recorded: Mapping[str, ToolSpec] | None = None,
    mcp_budget_s: float = MCP_RERUN_BUDGET_S,
    rng: random.Random | None = None,
    commit_block: int | None = None,
) -> tuple[list[Finding], int, OwnSide | None]:
    """Re-run deterministic calls; returns the findings (in trace order), how many calls were
    re-run, and why the receipt is unverifiable (a re-run that failed for lack of data or time), if
    so. With the trace's ``witness``, every re-run ``store_read`` reads it alone (`WitnessStore`),
    never a store. ``recorded``: the tool specs the trace says its agent was offered (an MCP call is
    re-run only where the validator's own spec of the tool is the same). ``mcp_budget_s``: how long
    the MCP re-runs may take together; they run in an order drawn from ``rng`` (the validator's
    own, secret), so that a node cannot place a lie where the budget will have run out, and the
    ones left when it is spent are skipped, not accused. ``commit_block``: the block the receipt's
    batch was committed in (a ``chain_read`` pinned at or past it is a finding, `chain_check`). Every
    reason it gives is `OwnSide`: a re-run that cannot be made is this validator's state, never the
    receipt's."""
    findings: list[Finding] = []
    rerun = 0
    unverifiable: OwnSide | None = None
    from_witness = RegistryRunner(WitnessStore(witness)) if witness is not None else None
    recorded = recorded or {}
    deferred: list[ToolCall] = []  # MCP calls to re-run within the budget
    for call in calls:
        if is_mcp(call.name) and _environmental(call.error):
            if not _mcp_words(call):
                findings.append(
                    _finding(
                        call,
                        f"tool {call.name}: a failure in words the node never uses for it",
                        "the node's one wording of an MCP failure",
                        _short(call.error),
                    )
                )
            continue
        known = runner.deterministic(call.name)
        if known is None:
            continue
        if call.name == CHAIN_READ and isinstance(runner, RegistryRunner):
            # pinned to a final block its result names: re-read there (`chain_check`)
            finding, reread, why = await check_chain_read(
                call, runner.validate, runner.chain, _is_timeout(call, runner), commit_block
            )
            findings += [finding] if finding is not None else []
            rerun += reread
            unverifiable = unverifiable or why
            continue
        operators_word = is_mcp(call.name)
        if operators_word and not call.deterministic:
            continue  # an MCP tool is deterministic only if the node's operator says so
        if operators_word and not _same_server(call.name, runner, recorded):
            continue  # another server under the same local name, or another version of it
        if known and not call.deterministic:
            findings.append(
                _finding(call, f"tool {call.name} is deterministic but recorded as not", True, False)
            )
        if not known:
            continue
        if _exempt(call):
            if not _own_words(call, runner):
                findings.append(
                    _finding(
                        call,
                        f"tool {call.name}: a failure in words the tool never uses",
                        "the tool's own words for a failed moment",
                        _short(call.error),
                    )
                )
            continue
        if operators_word:
            deferred.append(call)
            continue
        # a store_read is re-run from the trace's witness alone: a success needs what it read there,
        # and no honest failure that is not the moment's (exempt above) reads anything at all
        rerunner = from_witness if from_witness and call.name == STORE_READ else runner
        found, why = await _rerun(call, rerunner, operators_word=False)
        rerun += 1
        findings += found
        unverifiable = unverifiable or why
    (rng or random.SystemRandom()).shuffle(deferred)
    mcp_spent = 0.0
    for call in deferred:
        if mcp_spent >= mcp_budget_s:
            break  # the receipt's MCP budget is spent: the rest skipped, as on a validator without the server
        started = time.monotonic()
        found, why = await _rerun(call, runner, operators_word=True)
        mcp_spent += time.monotonic() - started
        rerun += 1
        findings += found
        unverifiable = unverifiable or why
    findings.sort(key=lambda f: -1 if f.call is None else f.call)  # trace order
    return findings, rerun, unverifiable


async def _rerun(
    call: ToolCall, runner: ToolRunner, operators_word: bool
) -> tuple[list[Finding], OwnSide | None]:
    """Re-run one call and compare: its findings, and why it could not be re-run here, if so."""
    try:
        result, error = await runner.run(call.name, call.args), None
    except Exception as exc:
        if isinstance(exc.__cause__, WitnessLacksError):
            return [
                _finding(
                    call,
                    f"tool {call.name}: {exc.__cause__}, so nothing backs its recorded result",
                    "the block or file it read, in the witness",
                    _short(call.result),
                )
            ], None
        result, error = None, f"{type(exc).__name__}: {exc}"
    if _environmental(error):  # this validator's moment (its load, its MCP server): checked again
        return [], OwnSide(f"tool call {call.call} could not be re-run here: {error}")
    if (error is None) != (call.error is None):
        return [
            _finding(
                call,
                f"tool {call.name}: error on one side only",
                error or _short(result),
                call.error or _short(call.result),
            )
        ], None
    if error is not None and not operators_word and error != call.error:
        # the text reaches the agent (and through it the model or the user): a node that
        # writes its own there steers the task; built-in tools word their errors themselves
        return [
            _finding(call, f"tool {call.name} failed with another error on re-run", error, call.error)
        ], None
    if error is None and _canon(_roundtrip(result)) != _canon(call.result):
        return [
            _finding(
                call,
                f"tool {call.name} returned another result on re-run",
                _short(result),
                _short(call.result),
            )
        ], None
    return [], None


def _finding(call: ToolCall, message: str, expected: Any, claimed: Any) -> Finding:
    return Finding(Check.TOOL, message, call=call.call, expected=expected, claimed=claimed)


def _roundtrip(value: Any) -> Any:
    """The value as it looks after a dag-cbor round trip (tuples become lists)."""
    from supernet.node.kernel.trace import to_dag

    return to_dag(value)


def _short(value: Any, limit: int = 200) -> Any:
    text = _canon(value)
    return value if len(text) <= limit else text[:limit] + "…"
