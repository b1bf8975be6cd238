"""Verdicts and their evidence: what a validator found wrong, where, and by how much.

A `Verdict` lists `Finding`s, each with a machine-readable ``check`` name, the LLM or tool call
and token position it concerns, and the expected (re-computed) versus claimed value. The whole
verdict goes to the content store as dag-cbor (``supernet/evidence/v1``, defined in
`supernet.sdk.formats.evidence`); its CID is what a
challenge carries, so other validators (and anyone) can see why a receipt was challenged before
they re-check it themselves.

>>> f = Finding(Check.LLM_TOKEN, "token 5 is not the argmax", call=0, position=5, expected=17, claimed=99)
>>> v = Verdict(batch_id=1, index=0, leaf=b"\\x00" * 32, findings=(f,))
>>> v.ok, sorted(v.checks)
(False, ['llm.token'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from supernet.sdk.formats.evidence import Evidence, EvidenceFinding


class Check(StrEnum):
    """What a finding is about (the fault kind it reveals is in `FAULT_OF`)."""

    RECEIPT = "receipt"  # receipt fields vs the signed request, leaf, node signature
    REQUEST = "request"  # request hash / user signature
    TRACE = "trace"  # trace vs receipt (input, output, trace hash, model, agent)
    TRACE_MALFORMED = "trace.malformed"
    LLM_MODEL = "llm.model"  # logprobs / fingerprints out of tolerance: another model
    LLM_TOKEN = "llm.token"  # a greedy token that is not the argmax
    LLM_FINISH = "llm.finish"  # claimed finish reason impossible (truncated output)
    LLM_SAMPLE = "llm.sample"  # a sampled token not re-derivable from its seed
    LLM_SHAPE = "llm.shape"  # lengths or params inconsistent
    TOOL = "tool"  # deterministic tool result differs on re-run
    REPLAY = "replay"  # the trace is not what the agent does (answer, calls, prompts, order)
    ORIGIN = "origin"  # a root the task started from was not written by a committed task of its user
    SEARCH = "memory.search"  # a search's hits are not its root's entries closest to the query


FAULT_OF: dict[Check, str] = {
    Check.RECEIPT: "trace",
    Check.REQUEST: "trace",
    Check.TRACE: "trace",
    Check.TRACE_MALFORMED: "trace",
    Check.LLM_MODEL: "model",
    Check.LLM_TOKEN: "tokens",
    Check.LLM_FINISH: "truncate",
    Check.LLM_SAMPLE: "seed",
    Check.LLM_SHAPE: "tokens",
    Check.TOOL: "tool",
    Check.REPLAY: "answer",
    Check.ORIGIN: "answer",
    Check.SEARCH: "search",
}
"""The node fault kind (`supernet.node.faults.FaultKind` value) each check reveals."""


@dataclass(frozen=True)
class Finding:
    """One mismatch.

    Attributes:
        check: which check failed.
        message: a sentence for people.
        call: index of the LLM or tool call in the trace's events, if any.
        position: output token position within the call, if any.
        expected: the value the validator re-computed.
        claimed: the value the node reported.
    """

    check: Check
    message: str
    call: int | None = None
    position: int | None = None
    expected: Any = None
    claimed: Any = None


LOCAL_FAILURE_MARK = "failed on this validator"
"""The words of an *unverifiable* reason that is this validator's own failure (memory, a bug), for
people: the verdict's ``local`` flag is what the service acts on (`Validator._settle`)."""

MAX_EVIDENCE_FINDINGS = 64
"""Findings an evidence document holds: the first ones, in order (one proves the fault; a trace
of ~1,000 faulty calls had ~10,000 findings, over the store's block limit, and stalled every step)."""
MAX_EVIDENCE_VALUE_CHARS = 512
"""Longest message, expected or claimed value (as text) of a published finding."""


class OwnSide(str):
    """An unverifiable reason that is this validator's state, not the receipt's (its RPC down, its
    view of finality behind): the receipt is checked again while its window is open (the verdict
    is ``local``), never recorded as checked. A type, not a text mark: a reason may quote a node's
    words, and a node cannot make a check return this type."""

    __slots__ = ()


def local_failure(what: str, exc: BaseException) -> str:
    """The unverifiable reason of a check that failed on this side (`LOCAL_FAILURE_MARK`)."""
    return f"{what} {LOCAL_FAILURE_MARK}: {type(exc).__name__}: {exc}"


def _bounded(value: Any) -> Any:
    """``value`` as published: as it is when short, else the start of its text, marked."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:  # what dag-cbor encodes as an integer
        return value
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= MAX_EVIDENCE_VALUE_CHARS:
        return value if not isinstance(value, int) else text
    return f"{text[:MAX_EVIDENCE_VALUE_CHARS]}… ({len(text)} chars)"


@dataclass(frozen=True)
class Verdict:
    """A validator's verdict on one receipt.

    Attributes:
        batch_id: on-chain batch id.
        index: receipt position in the batch manifest.
        leaf: the receipt's Merkle leaf.
        findings: every mismatch found (empty: the receipt checks out).
        unverifiable: why it could not be checked (e.g. a model this validator does not serve);
            an unverifiable receipt is never challenged.
        llm_calls: LLM calls re-scored.
        tool_calls: deterministic tool calls re-run.
        rechecked: LLM calls the exact arbiter re-scored: those the screen did not accept, and
            those it drew at random from the accepted ones (docs/validator.md, Screen and arbiter).
        validator: the validator's address.
        model_id: the model the trace claims.
        missing: the receipt's trace (or the batch's manifest) could not be fetched: not a verdict
            yet, but a case for the availability challenge once retries are spent.
        origin_pending, withheld, unread_manifests: see below.
    """

    batch_id: int
    index: int
    leaf: bytes
    findings: tuple[Finding, ...] = ()
    unverifiable: str | None = None
    llm_calls: int = 0
    tool_calls: int = 0
    rechecked: int = 0
    validator: str = ""
    model_id: str = ""
    request_hash: bytes = b""
    missing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    origin_pending: bool = False
    """Unverifiable only because data the origin check needs cannot be read yet (a writer's
    committed trace or manifest): worth checking again until the batch's challenge window closes."""
    withheld: tuple[tuple[int, int], ...] = ()
    """``(batch, index)`` of the writer entries whose committed traces could not be read: the
    availability path makes the node serve them (or slashes it)."""
    local: bool = False
    """Checking failed on this validator (`local_failure`)."""
    unread_manifests: tuple[int, ...] = ()
    """Batches of the node whose manifests could not be read, where a writer may be: the manifest
    challenge makes the node post their receipts (or slashes it; `supernet.validator.manifests`)."""

    @property
    def ok(self) -> bool:
        """True when nothing was found wrong."""
        return not self.findings

    @property
    def local_failure(self) -> bool:
        """Unverifiable only because checking failed on this validator (``local``, set where the
        verifier catches its own failure, never read from the reason's text, which may quote a
        node's words): not a verdict on the receipt, which is checked again while its window is
        open."""
        return self.local and not self.findings

    @property
    def checks(self) -> set[str]:
        """The failed checks' names."""
        return {f.check.value for f in self.findings}

    @property
    def fault_kinds(self) -> set[str]:
        """The node fault kinds the findings reveal."""
        return {FAULT_OF[f.check] for f in self.findings}

    def to_dag(self) -> dict[str, Any]:
        """The dag-cbor evidence document (`supernet.sdk.formats.evidence`)."""
        return Evidence(
            batch_id=self.batch_id,
            index=self.index,
            leaf=self.leaf,
            request_hash=self.request_hash,
            validator=self.validator,
            model_id=self.model_id,
            unverifiable=self.unverifiable,
            llm_calls=self.llm_calls,
            tool_calls=self.tool_calls,
            findings=tuple(
                EvidenceFinding(
                    f.check.value,
                    _bounded(f.message),
                    f.call,
                    f.position,
                    _bounded(f.expected),
                    _bounded(f.claimed),
                )
                for f in self.findings[:MAX_EVIDENCE_FINDINGS]
            ),
        ).to_dag()


class DagPutter(Protocol):
    """The content-store call used here."""

    async def put_dag(self, obj: Any, *, pin: bool = False) -> str:
        """Store a dag-cbor object; returns its CID."""
        ...


async def publish(store: DagPutter, verdict: Verdict) -> str:
    """Write the verdict to the store (pinned); returns the evidence CID."""
    return await store.put_dag(verdict.to_dag(), pin=True)
