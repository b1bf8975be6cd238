"""Verifying one sampled receipt: manifest entry, signed request, trace, LLM calls and tools.

>>> verifier = Verifier(store, scorer, RegistryRunner(store), domain, "0xValidator")   # doctest: +SKIP
>>> manifest = await load_manifest(store, batch.manifest_cid, batch.root, batch.count)  # doctest: +SKIP
>>> verdict = await verifier.verify(batch.batch_id, batch.node, 0, manifest)           # doctest: +SKIP

Order of checks (each adds findings; nothing stops at the first one so the evidence is complete):
the entry against its leaf, the node's signature and the user's signed ``TaskRequest``; the trace
CID against ``traceHash``; the trace against the receipt (task, input, output, model, agent
hash); every LLM call's shape and finish reason, then its tokens, logprobs and fingerprints by
one teacher-forced pass (`llm_check`); every deterministic tool call by re-running it.
A receipt whose model this validator does not serve is *unverifiable*: no verdict, no challenge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from supernet.node.llm.sampling import SamplingParams
from supernet.node.llm.scoring import Tolerance
from supernet.node.llm.types import ScoreResult
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.validator.consistency import (
    Entry,
    MalformedEntry,
    check_receipt,
    check_trace,
    check_trace_hash,
    parse_entry,
)
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.llm_check import check_scores, check_shape, sampling_params
from supernet.validator.tool_check import ToolRunner, check_tools
from supernet.validator.trace_view import LLMCall, MalformedTrace, parse_trace


class Scorer(Protocol):
    """The validator's model (see `supernet.validator.scoring.ModelScorer`)."""

    model_id: str
    eos_ids: tuple[int, ...]

    def score(
        self, prompt_ids: Sequence[int], output_ids: Sequence[int], params: SamplingParams | None
    ) -> ScoreResult:
        """Teacher-forced logprobs, fingerprints (and selection margins when ``params``) of ``output_ids``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text."""
        ...


def score_call(scorer: Scorer, call: LLMCall) -> ScoreResult:
    """Teacher-forced scores of a call, with the selection margin of every output token.

    Greedy margins (best logprob minus the token's) come straight from the scores' top tokens,
    which saves a full-vocabulary pass per position; sampled calls get the engine's CDF margins.
    """
    if call.temperature > 0:
        return scorer.score(call.prompt_ids, call.output_ids, sampling_params(call))
    scored = scorer.score(call.prompt_ids, call.output_ids, None)
    margins = tuple(
        max(0.0, top[0][1] - lp) for top, lp in zip(scored.top_tokens, scored.logprobs, strict=True)
    )
    return replace(scored, margins=margins)


class DagStore(Protocol):
    """The content-store calls used here."""

    async def get_dag(self, cid: str) -> Any:
        """Fetch and decode a dag-cbor object (re-hashed against its CID)."""
        ...


class ManifestError(ValueError):
    """A batch manifest is missing, malformed, or does not match the committed root."""


@dataclass(frozen=True)
class Manifest:
    """A batch manifest whose leaves build the committed root."""

    entries: tuple[Mapping[str, Any], ...]
    tree: ReceiptTree


async def load_manifest(store: DagStore, cid: str, root: bytes, count: int) -> Manifest:
    """Fetch a batch manifest and check it against the on-chain root and count.

    Raises:
        ManifestError: it cannot be read, or its leaves do not build ``root``.
    """
    try:
        doc = await store.get_dag(cid)
        entries = tuple(doc["receipts"])
        tree = ReceiptTree(bytes.fromhex(str(e["leaf"]).removeprefix("0x")) for e in entries)
    except Exception as exc:
        raise ManifestError(f"manifest {cid}: {type(exc).__name__}: {exc}") from exc
    if len(entries) != count or tree.root != root:
        raise ManifestError(
            f"manifest {cid} does not build the committed root ({len(entries)} of {count} receipts)"
        )
    return Manifest(entries, tree)


class Verifier:
    """Checks receipts; holds the model, the tool runner and the tolerances.

    Args:
        store: content store holding traces.
        scorer: the validator's model (None: LLM calls are not re-scored; receipts are unverifiable).
        tools: re-runs deterministic tools.
        domain: the protocol's EIP-712 domain.
        validator: this validator's address (written into evidence).
        tolerance: numeric tolerances of the LLM checks.
    """

    def __init__(
        self,
        store: DagStore,
        scorer: Scorer | None,
        tools: ToolRunner,
        domain: Domain,
        validator: str,
        tolerance: Tolerance | None = None,
    ) -> None:
        self.store = store
        self.scorer = scorer
        self.tools = tools
        self.domain = domain
        self.validator = validator
        self.tolerance = tolerance or Tolerance()
        self._score_lock = asyncio.Lock()

    def entry(self, manifest: Manifest, index: int) -> Entry:
        """The parsed entry ``index`` (raises `MalformedEntry`)."""
        return parse_entry(manifest.entries[index])

    async def verify(self, batch_id: int, node: str, index: int, manifest: Manifest) -> Verdict:
        """Check receipt ``index`` of a batch; returns the verdict (never raises on node faults)."""
        raw_leaf = bytes.fromhex(str(manifest.entries[index].get("leaf", "")).removeprefix("0x"))
        try:
            entry = self.entry(manifest, index)
        except MalformedEntry as exc:
            return Verdict(batch_id, index, raw_leaf, unverifiable=str(exc), validator=self.validator)
        model_id = "0x" + entry.receipt.model_id.hex()

        def done(found: list[Finding], **extra: Any) -> Verdict:
            return Verdict(
                batch_id,
                index,
                entry.leaf,
                findings=tuple(found),
                validator=self.validator,
                model_id=model_id,
                request_hash=entry.receipt.request_hash,
                **extra,
            )

        findings = check_receipt(entry, node, self.domain) + check_trace_hash(
            entry.trace_cid, entry.receipt.trace_hash
        )
        try:
            trace = parse_trace(await self.store.get_dag(entry.trace_cid))
        except MalformedTrace as exc:
            findings.append(Finding(Check.TRACE_MALFORMED, str(exc)))
            return done(findings)
        except Exception as exc:  # not found / unavailable: do not accuse on a store problem
            return done(findings, unverifiable=f"trace unavailable: {exc}")
        findings += check_trace(trace, entry)
        scorer = self.scorer
        if scorer is None or scorer.model_id.lower() != model_id:
            return done(
                findings, unverifiable=None if findings else f"model {model_id} not served by this validator"
            )
        for call in trace.llm_calls:
            findings += check_shape(call, scorer.eos_ids, call.stop_strings, scorer.decode)
            if not call.output_ids:
                continue
            async with self._score_lock:  # one forward pass at a time: the engine is not re-entrant
                scored = await asyncio.to_thread(score_call, scorer, call)
            findings += check_scores(call, scored, self.tolerance)
        tool_findings, reran = await check_tools(trace.tool_calls, self.tools)
        findings += tool_findings
        return done(findings, llm_calls=len(trace.llm_calls), tool_calls=reran)
