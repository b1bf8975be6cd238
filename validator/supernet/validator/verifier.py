"""Verifying one sampled receipt: manifest entry, signed request, trace, LLM calls and tools.

>>> verifier = Verifier(store, scorer, RegistryRunner(store), domain, "0xValidator")   # doctest: +SKIP
>>> manifest = await load_manifest(store, batch.manifest_cid, batch.root, batch.count)  # doctest: +SKIP
>>> verdict = await verifier.verify(batch.batch_id, batch.node, 0, manifest)           # doctest: +SKIP

Order of checks (each adds findings; nothing stops at the first one so the evidence is complete):
the entry against its leaf, the node's signature and the user's signed ``TaskRequest``; the trace
CID against ``traceHash``; the trace against the receipt (task, input, output, model, agent
hash); every LLM call's shape and finish reason, a constrained call's tokens against its grammar
(`grammar_check`), then its tokens, logprobs and fingerprints by one teacher-forced pass
(`llm_check`); every deterministic tool call by re-running it.
A receipt whose model this validator does not serve is *unverifiable*: no verdict, no challenge.

``verify_many`` checks several receipts of a batch at once: their traces are fetched concurrently
and all their LLM calls are re-scored together (`Scorer.score_many` packs them into few forward
passes), which is what makes verification cheap next to generation; each verdict is the one
``verify`` gives for that receipt alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, cast

from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.kernel.replay import context_of
from supernet.node.llm.sampling import is_greedy
from supernet.node.llm.scoring import ScoreRequest, Tolerance
from supernet.node.llm.types import ScoreResult
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.formats.trace import STORE_READ, VerifiedWitness, Witness
from supernet.sdk.formats.trace import Trace as TraceDoc
from supernet.sdk.models import compute_of
from supernet.sdk.redact import redact, shown_url
from supernet.sdk.store.errors import InvalidBlockError, InvalidCIDError, StoreUnavailableError
from supernet.validator.consistency import check_receipt, check_trace, check_trace_hash
from supernet.validator.evidence import Check, Finding, OwnSide, Verdict, local_failure
from supernet.validator.grammar_check import check_grammar, grammar_masks
from supernet.validator.llm_check import check_scores, check_shape, check_tokens, sampling_params
from supernet.validator.origin_check import OriginOutcome, ReceiptIndex, check_origins
from supernet.validator.replay_check import ReplayOutcome, check_replay
from supernet.validator.search_check import SearchCheck
from supernet.validator.tool_check import MCP_RERUN_BUDGET_S, ToolRunner, check_tools
from supernet.validator.trace_view import LLMCall, MalformedTrace, Trace, parse_trace_block

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """The validator's model (see `supernet.validator.scoring.ModelScorer`)."""

    weights_id: str
    eos_ids: tuple[int, ...]

    @property
    def vocab_size(self) -> int:
        """Token ids the model knows: ``0 .. vocab_size - 1``."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (chat template and decoding, for the agent replay)."""
        ...

    @property
    def max_positions(self) -> int:
        """The longest prompt + output this scorer can re-score."""
        ...

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced logprobs, fingerprints (and selection margins where ``params``), in order."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text."""
        ...


def score_calls(scorer: Scorer, calls: Sequence[LLMCall]) -> list[ScoreResult]:
    """Teacher-forced scores of calls, with the selection margin of every output token.

    Greedy margins (best logprob minus the token's) come straight from the scores' top tokens,
    which saves a full-vocabulary pass per position; sampled calls get the engine's CDF margins.
    A constrained call's margins are computed under its grammar's masks (`grammar_check`).
    """
    requests = [
        ScoreRequest(c.prompt_ids, c.output_ids, None if is_greedy(c.temperature) else sampling_params(c))
        if c.grammar is None
        else ScoreRequest(c.prompt_ids, c.output_ids, sampling_params(c), _masks(scorer, c))
        for c in calls
    ]
    scored = scorer.score_many(requests)
    return [
        s
        if not is_greedy(c.temperature) or c.grammar is not None  # constrained: under the grammar's mask
        else replace(
            s,
            margins=tuple(max(0.0, top[0][1] - lp) for top, lp in zip(s.top_tokens, s.logprobs, strict=True)),
        )
        for c, s in zip(calls, scored, strict=True)
    ]


def _masks(scorer: Scorer, call: LLMCall) -> Any:
    return grammar_masks(call, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)


def score_call(scorer: Scorer, call: LLMCall) -> ScoreResult:
    """``score_calls`` for one call."""
    return score_calls(scorer, [call])[0]


class DagStore(Protocol):
    """The content-store calls used here."""

    async def get_dag(self, cid: str) -> Any:
        """Fetch and decode a dag-cbor object (re-hashed against its CID)."""
        ...

    async def get_block(self, cid: str) -> bytes:
        """Fetch a block's bytes (re-hashed against its CID)."""
        ...


class ManifestError(ValueError):
    """A batch manifest is missing, malformed, or does not match the committed root."""


STORE_PROBE_S = 10.0
"""How long this validator's own content store has to answer its ``version`` call (`store_down`)."""


class OwnStoreError(StoreUnavailableError):
    """This validator's own content store does not answer (down, a wrong URL, not a store): the
    validator's failure, never a node's missing data. Nothing is concluded from what it was
    reading (no verdict, no availability retry): the batch or entry is checked again once the
    store answers, and the step that met it fails (``/healthz``: `Validator.step`)."""


async def store_down(store: Any) -> OwnStoreError | None:
    """Why ``store`` does not answer its cheap ``version`` call within `STORE_PROBE_S` (None: it
    answers, or it has no such call to ask, as test doubles)."""
    version = getattr(store, "version", None)
    if version is None:
        return None
    try:
        await asyncio.wait_for(version(), STORE_PROBE_S)
    except Exception as exc:
        url = getattr(store, "url", None)
        where = f" at {shown_url(url)}" if isinstance(url, str) else ""
        why = f"no answer within {STORE_PROBE_S:.0f} s" if isinstance(exc, TimeoutError) else f"{exc}"
        return OwnStoreError(f"this validator's content store{where} does not answer: {redact(why, [url])}")
    return None


async def own_store_error(store: Any, exc: BaseException) -> OwnStoreError | None:
    """``exc``, raised by a call of ``store``, as this validator's own store failing (None: the
    data's). Only a `StoreUnavailableError` (no connection, no answer in time, an answer that is
    not the store's API) can be, and only when the store does not answer its ``version`` call
    either (`store_down`): a Kubo store looks for a block it lacks on the network until the
    client's timeout, so "no answer in time" from a store that answers is a block nobody serves,
    which stays the node's (retried, then claimed on chain). A block not found, or bytes that do
    not hash to their CID, are always the data's."""
    if isinstance(exc, OwnStoreError):
        return exc
    if not isinstance(exc, StoreUnavailableError):
        return None
    return await store_down(store)


async def raise_own_store(store: Any, exc: Exception) -> None:
    """Raise ``exc`` as an `OwnStoreError` where it is ``store`` itself failing (`own_store_error`);
    return where it is the data's, for the caller to handle."""
    own = await own_store_error(store, exc)
    if own is exc:
        raise own
    if own is not None:
        raise own from exc


@dataclass(frozen=True)
class Manifest:
    """The entries of a batch a validator can read, each bound to its position in the batch tree.

    Either the whole manifest fetched from the store (``tree`` set: its leaves build the committed
    root), or the entries nodes posted on chain in availability answers (``proofs`` set: each
    entry's proof at its position, checked against the root before it is kept). ``malformed``
    holds the posted entries whose trace is not well-formed or lacks the signed request (the
    node's own answer on chain: its fault), by position, with why.
    """

    entries: Mapping[int, ManifestEntry]
    tree: ReceiptTree | None = None
    proofs: Mapping[int, tuple[bytes, ...]] | None = None
    malformed: Mapping[int, tuple[bytes, str]] = field(default_factory=dict)
    receipts: Mapping[int, Receipt] = field(default_factory=dict)
    """The receipts of the ``malformed`` entries (posted on chain: a challenge proves them)."""
    commit_block: int | None = None
    """The block the batch was committed in, where known: every read its traces pin precedes it."""

    def readable(self, index: int) -> bool:
        """Whether entry ``index`` can be judged here (read, or posted malformed)."""
        return index in self.entries or index in self.malformed

    def leaf(self, index: int) -> bytes:
        """The leaf at ``index`` as the tree has it."""
        if self.tree is not None:
            return self.tree.leaves[index]
        if index in self.malformed:
            return self.malformed[index][0]
        return self.entries[index].leaf

    def proof(self, index: int) -> list[bytes]:
        """The Merkle proof of the entry at ``index``."""
        if self.tree is not None:
            return self.tree.proof_at(index)
        assert self.proofs is not None
        return list(self.proofs[index])

    def index_of(self, leaf: bytes) -> int | None:
        """The position of the entry with this leaf: in the tree when it is known (whether the
        entry is readable here or not: a voter must claim what it cannot read), else among the
        entries read or posted."""
        if self.tree is not None:
            return next((i for i, x in enumerate(self.tree.leaves) if x == leaf), None)
        for i in sorted({*self.entries, *self.malformed}):
            if self.leaf(i) == leaf:
                return i
        return None


async def load_manifest(
    store: DagStore, cid: str, root: bytes, count: int, commit_block: int | None = None
) -> Manifest:
    """Fetch a batch manifest and check it against the on-chain root and count.

    Raises:
        ManifestError: it cannot be read, is not a well-formed ``supernet/batch`` (the node's
            fault, handled as unreadable: the availability challenge makes it post its entries), or
            its leaves do not build ``root``.
        OwnStoreError: this validator's own store does not answer (`own_store_error`): nothing
            is known of the manifest, which must not be taken for one the node withholds.
    """
    try:
        manifest = BatchManifest.from_dag(await store.get_dag(cid))
        tree = ReceiptTree(e.leaf for e in manifest.entries)
    except Exception as exc:
        await raise_own_store(store, exc)
        raise ManifestError(f"manifest {cid}: {type(exc).__name__}: {exc}") from exc
    if len(manifest.entries) != count or tree.root != root:
        raise ManifestError(
            f"manifest {cid} does not build the committed root ({len(manifest.entries)} of {count} receipts)"
        )
    # an entry whose receipt is not the hash of its leaf says nothing of what was committed there:
    # it is data the node has not shown (the availability path makes it post the receipt that is
    # the leaf, and its trace, or be slashed), never a fault (no challenge can prove it)
    shown = {i: e for i, e in enumerate(manifest.entries) if e.receipt.leaf() == e.leaf}
    return Manifest(shown, tree, commit_block=commit_block)


LOAD_RETRY_S = 600.0
"""How long after a failed load of a compute format (memory) the verifier tries it again; receipts
of that format meanwhile are local failures without a load."""


class Verifier:
    """Checks receipts; holds the model, the tool runner and the tolerances.

    Args:
        store: content store holding traces.
        scorer: the validator's model (None: LLM calls are not re-scored; receipts are unverifiable).
        tools: re-runs deterministic tools.
        domain: the protocol's EIP-712 domain.
        validator: this validator's address (written into evidence).
        tolerance: numeric tolerances of the LLM checks (default: per receipt, for the pair of the
            node's recorded dtype and this validator's, `Tolerance.for_pair`).
        agents: the agents this validator can replay (default: the built-ins).
        arbiter: the same weights in an exact format, when ``scorer`` is a cheaper *screen*
            (bfloat16): a call the screen does not accept (`Tolerance.screening`) is re-scored by
            the arbiter in the node's own format (`ModelScorer.for_compute`), whose verdict alone
            decides it, and the greedy calls of a node in another format than the screen's go to
            the arbiter without the screen (`_route`: the screen's rounding can hide a swapped
            argmax in any near-tie). So a bfloat16 validator never accuses on its own rounding,
            and a float32 or float16-weights node's greedy tokens are held to the exact bound.
        arbiter_sample: with an arbiter, sampled calls per receipt it re-scores *although* the
            screen accepts them, drawn at random among the accepted ones, when the node serves a
            format other than the screen's (float32, float16-weights): the screen's cross-format
            bounds accept the screen's own (cheaper) compute, the arbiter's do not. At least 1.
        arbiter_sample_fraction: a fraction of the accepted calls to draw instead, when it names
            more calls than ``arbiter_sample`` (rounded up). Default 1: every call of such a node
            is decided in its own format (the screen's sampled bound is a window a node could steer
            a token in), so the screen serves bf16 nodes, and other-format ones only where an
            operator lowers this to trade that window for cost.
        rng: where the draw comes from; default the OS's CSPRNG (`secrets`), which no node can
            predict (a draw from the trace alone a node could compute and answer honestly).
        origins: where the nodes' committed receipts are: the roots a task started from are
            followed to the committed tasks that wrote them (`supernet.validator.origin_check`).
            None: not checked (a verifier without the chain, as in the benchmarks).
        searches: ranks every searched memory root again (`supernet.validator.search_check`);
            default: one reading entries from ``store``, vectors kept in memory.
        mcp_budget_s: how long one receipt's MCP re-runs may take together (`check_tools`).
    """

    def __init__(
        self,
        store: DagStore,
        scorer: Scorer | None,
        tools: ToolRunner,
        domain: Domain,
        validator: str,
        tolerance: Tolerance | None = None,
        agents: AgentRegistry | None = None,
        arbiter: Scorer | None = None,
        arbiter_sample: int = 1,
        arbiter_sample_fraction: float = 1.0,
        rng: random.Random | None = None,
        origins: ReceiptIndex | None = None,
        searches: SearchCheck | None = None,
        mcp_budget_s: float = MCP_RERUN_BUDGET_S,
    ) -> None:
        if arbiter_sample < 1 or not 0.0 <= arbiter_sample_fraction <= 1.0:
            raise ValueError("arbiter_sample must be at least 1 and arbiter_sample_fraction in [0, 1]")
        # every agent installed here, packaged ones included, at its installed code hash: a replay
        # runs exactly the code the user signed (a task of an agent not installed is unverifiable)
        self.agents = agents or default_registry(packages=None)
        self.arbiter = arbiter
        self.store = store
        # compute formats whose load failed here -> when (monotonic): not declared as checked
        # while they fail (`Validator._declare_models`), tried again after `LOAD_RETRY_S`
        self.unloadable: dict[str, float] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self.scorer = scorer
        self.tools = tools
        self.domain = domain
        self.validator = validator
        self.tolerance = tolerance
        self.arbiter_sample = arbiter_sample
        self.arbiter_sample_fraction = arbiter_sample_fraction
        self._rng = rng if rng is not None else secrets.SystemRandom()
        self.origins = origins
        self.searches = searches if searches is not None else SearchCheck(store)
        self.mcp_budget_s = mcp_budget_s
        self._score_lock = asyncio.Lock()

    async def replay(self, trace: TraceDoc) -> ReplayOutcome:
        """Replay ``trace``'s agent alone (no model, no tool re-run): what `WriteLog` runs on every
        trace that writes, sampled or not."""
        if self.scorer is None:
            return ReplayOutcome(unverifiable="no model here: its tokenizer is needed")
        return await check_replay(trace, self.agents, self.scorer.tokenizer, self.tools, self.domain)

    def entry(self, manifest: Manifest, index: int) -> ManifestEntry:
        """Entry ``index`` (``KeyError`` if not readable here)."""
        return manifest.entries[index]

    async def verify(
        self, batch_id: int, node: str, index: int, manifest: Manifest, recheck_all: bool = False
    ) -> Verdict:
        """Check receipt ``index`` of a batch; returns the verdict (never raises on node faults).

        ``recheck_all``: the arbiter re-scores every call the screen accepted instead of a random
        draw (`arbiter_draw`): for a receipt someone found faulty (a vote on a challenge, a
        challenge re-sent), where a draw that misses the one cheated call must not clear it."""
        return (await self.verify_many(batch_id, node, [index], manifest, recheck_all))[0]

    async def verify_many(
        self, batch_id: int, node: str, indexes: Sequence[int], manifest: Manifest, recheck_all: bool = False
    ) -> list[Verdict]:
        """``verify`` for several receipts of one batch, their LLM calls scored together.

        Raises:
            OwnStoreError: this validator's own store stopped answering while their data was read
                (no verdict: the caller defers them)."""
        staged = await _all(self._stage_safe(batch_id, node, i, manifest) for i in indexes)
        return await self._finish(staged, recheck_all)

    async def verify_groups(
        self, batch_id: int, node: str, indexes: Sequence[int], manifest: Manifest, size: int
    ) -> AsyncGenerator[tuple[list[int], list[Verdict]], None]:
        """`verify_many` over groups of ``size`` receipts, pipelined: while one group's calls are
        scored (in a worker thread), the next group is staged (store reads, receipt and trace
        checks, replay) on the event loop. Yields each group's indexes and verdicts in order."""
        groups = [list(indexes[g : g + size]) for g in range(0, len(indexes), size)]
        if not groups:
            return

        def stage(group: list[int]) -> asyncio.Future[list[Verdict | _Staged]]:
            return asyncio.ensure_future(_all(self._stage_safe(batch_id, node, i, manifest) for i in group))

        staging = stage(groups[0])
        try:
            for k, group in enumerate(groups):
                staged = await staging
                if k + 1 < len(groups):
                    staging = stage(groups[k + 1])
                yield group, await self._finish(staged)
        finally:
            staging.cancel()
            # a group staged but never finished (the batch's checks closed early): its outcome is
            # nobody's, retrieved here so that asyncio does not log it as never retrieved
            staging.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _finish(self, staged: Sequence[Verdict | _Staged], recheck_all: bool = False) -> list[Verdict]:
        """Score the staged receipts' calls together and turn every stage into its verdict."""
        ready = [s for s in staged if isinstance(s, _Staged)]
        judged = iter(await self._judge(ready, recheck_all))  # in the order of `ready`, i.e. of `staged`
        verdicts = []
        for s in staged:
            if isinstance(s, Verdict):
                verdicts.append(s)
                continue
            judgement = next(judged)
            try:
                verdicts.append(await self._conclude(s, judgement))
            except Exception as exc:  # one receipt must never stall its batch (or the step)
                verdicts.append(_barrier(s.head, exc, list(s.findings)))
        return verdicts

    async def _conclude(self, s: _Staged, judgement: _Judgement | str) -> Verdict:
        """The verdict of one staged receipt: its calls' shapes and scores, its tools re-run."""
        findings = list(s.findings)
        if isinstance(judgement, str):  # scoring or judging failed on this side (`local_failure`)
            return s.head.verdict(findings, unverifiable=None if findings else judgement, local=True)
        # decoding a long output takes a while: off the event loop, where the validator's votes
        # and reveals run (tests/unit/test_review_validator_bait.py)
        findings += await asyncio.to_thread(_shapes, s, judgement)
        offered = {spec.name: spec for spec in context_of(s.trace.doc)[2]}  # the specs the user signed
        tool_findings, reran, why = await check_tools(
            s.trace.tool_calls,
            self.tools,
            _witness(s.trace),
            offered,
            self.mcp_budget_s,
            self._rng,
            s.head.commit_block,
        )
        findings += tool_findings
        return s.head.verdict(
            findings,
            llm_calls=len(s.trace.llm_calls),
            tool_calls=reran,
            unverifiable=None if findings else why,
            rechecked=judgement.rechecked,
            local=isinstance(why, OwnSide) and not findings,
        )

    async def _judge(self, ready: Sequence[_Staged], recheck_all: bool = False) -> list[_Judgement | str]:
        """Per receipt, the findings on each scorable call: the screen's where the screen accepts
        the call (no finding under `Tolerance.screening`) and the arbiter did not draw it
        (`arbiter_draw`), else those of the decider's scoring under the final tolerance (or, when
        scoring fails on this side, the reason instead). Which calls the screen sees at all is
        `_route`'s choice; the decider's calls of every receipt are scored in one pass."""
        routes = [self._route(s, recheck_all) for s in ready]
        first = await self._score_each(
            [(s.scorer, screened) for s, (_, screened) in zip(ready, routes, strict=True)]
        )
        out: list[_Judgement | str] = []
        rescore: list[list[LLMCall]] = []
        for s, (direct, screened), scores in zip(ready, routes, first, strict=True):
            if isinstance(scores, str):
                out.append(scores)
                rescore.append([])
                continue
            tol = s.tolerance if s.screen is None else s.screen
            try:
                found = {c.call: check_scores(c, sc, tol) for c, sc in zip(screened, scores, strict=True)}
            except Exception as exc:  # a bug on this side: this receipt unverifiable, not the batch stalled
                log.exception("checking the scores of receipt %d failed", s.head.index)
                out.append(local_failure("checking", exc))
                rescore.append([])
                continue
            out.append(_Judgement(found))
            if s.screen is None:
                rescore.append([])
                continue
            accepted = [c for c in screened if not found[c.call]]
            picked = {c.call for c in direct} | {c.call for c in screened if found[c.call]}
            if s.sampled:
                picked |= {c.call for c in self.arbiter_draw(accepted)}
            rescore.append([c for c in s.scorable if c.call in picked])
        if not any(rescore):
            return out
        work = [(s.decider or s.scorer, calls) for s, calls in zip(ready, rescore, strict=True)]
        exact = await self._score_each(work)
        for k, (s, calls, scores) in enumerate(zip(ready, rescore, exact, strict=True)):
            judged = out[k]
            if not calls or isinstance(judged, str):
                continue
            if isinstance(scores, str):
                out[k] = scores
                continue
            try:
                judged.findings.update(
                    {c.call: check_scores(c, sc, s.tolerance) for c, sc in zip(calls, scores, strict=True)}
                )
            except Exception as exc:  # as above
                log.exception("checking the arbiter's scores of receipt %d failed", s.head.index)
                out[k] = local_failure("checking", exc)
                continue
            judged.rechecked = len(calls)
        return out

    def _route(self, s: _Staged, recheck_all: bool) -> tuple[list[LLMCall], list[LLMCall]]:
        """(calls only the decider scores, calls the screen scores first) of one receipt.

        Without a screen, or for a node in the screen's own format, the first scorer sees every
        call. For a node in another format the screen settles none of what goes straight to the
        decider, so scoring it there first is work thrown away:

        * its greedy calls: the screen's rounding (bf16 moves a logit by up to ~0.9) hides a
          swapped argmax inside any near-tie, and a greedy call of more than a few tokens nearly
          always holds one (every one of 500 in `make bench-verify`), so the decider judges every
          greedy token of such a node under its own tight bound, by design rather than on a hint;
        * its sampled calls when the arbiter's draw would take all of them anyway (no more calls
          than the draw's size, or ``recheck_all``).

        The draw then falls among the sampled calls the screen accepted: what the node can predict
        (greedy or not) never shrinks the set it must compute honestly."""
        if s.screen is None or not s.sampled:
            return [], list(s.scorable)
        greedy = {c.call for c in s.scorable if is_greedy(c.temperature)}
        rest = [c for c in s.scorable if c.call not in greedy]
        if recheck_all or len(rest) <= self._draw_size(len(rest)):
            return list(s.scorable), []
        return [c for c in s.scorable if c.call in greedy], rest

    def _draw_size(self, accepted: int) -> int:
        """How many of ``accepted`` calls the arbiter draws (`arbiter_draw`), before capping at all."""
        return max(self.arbiter_sample, math.ceil(self.arbiter_sample_fraction * accepted))

    def arbiter_draw(self, accepted: Sequence[LLMCall]) -> list[LLMCall]:
        """The calls the screen accepted that the arbiter re-scores anyway: ``arbiter_sample`` of
        them, or ``ceil(arbiter_sample_fraction * n)`` where that is more (all when fewer are
        left), uniformly without replacement from this validator's private randomness. Nothing in
        the trace or the receipt decides the draw, so a node cannot compute the one call it must
        get right: a receipt where ``m`` of its ``n`` screened calls are computed in a cheaper
        format that the screen accepts is caught with probability at least
        ``1 - C(n - m, k) / C(n, k)`` (``m / n`` for ``k = 1``)."""
        k = self._draw_size(len(accepted))
        if k >= len(accepted):
            return list(accepted)
        return self._rng.sample(list(accepted), k)

    async def _score_each(
        self, work: Sequence[tuple[Scorer, Sequence[LLMCall]]]
    ) -> list[list[ScoreResult] | str]:
        """`_score` of every (scorer, calls) pair, the pairs of one scorer in one go, in order."""
        out: list[list[ScoreResult] | str] = [[] for _ in work]
        by_scorer: dict[int, list[int]] = {}
        for k, (scorer, _) in enumerate(work):
            by_scorer.setdefault(id(scorer), []).append(k)
        for ks in by_scorer.values():
            scored = await self._score(work[ks[0]][0], [work[k][1] for k in ks])
            for k, result in zip(ks, scored, strict=True):
                out[k] = result
        return out

    async def _score(
        self, scorer: Scorer | None, groups: Sequence[Sequence[LLMCall]]
    ) -> list[list[ScoreResult] | str]:
        """Scores of every group's calls, all in one go; per group, the error instead when scoring
        fails on this side (memory, a bug): the receipt becomes unverifiable rather than the
        validator retrying the batch forever."""
        if not any(groups):
            return [[] for _ in groups]
        assert scorer is not None  # only receipts of the served model are staged
        async with self._score_lock:  # one scoring pass at a time: the model is not re-entrant
            try:
                flat = iter(await asyncio.to_thread(score_calls, scorer, [c for g in groups for c in g]))
                return [[next(flat) for _ in g] for g in groups]
            except Exception:
                log.exception("scoring %d receipts together failed; scoring them one by one", len(groups))
            out: list[list[ScoreResult] | str] = []
            for g in groups:
                try:
                    out.append(await asyncio.to_thread(score_calls, scorer, g))
                except Exception as exc:
                    out.append(local_failure("scoring", exc))
            return out

    async def _stage_safe(
        self, batch_id: int, node: str, index: int, manifest: Manifest
    ) -> Verdict | _Staged:
        """`_stage` behind a per-receipt barrier: an unexpected exception while checking one receipt
        (a trace no check foresaw, a bug here) becomes that receipt's *unverifiable* verdict, logged,
        never an exception out of the batch: otherwise one poison trace would make the service's
        step fail before ``finish_batch`` on every retry and stall every later batch. Only
        `OwnStoreError` passes it: this validator's store not answering says nothing of the
        receipt, and a verdict (even *unverifiable*, or its trace *missing*) would be recorded
        against it."""
        found: list[Finding] = []  # what `_stage` found before it raised still counts
        try:
            return await self._stage(batch_id, node, index, manifest, found)
        except OwnStoreError:  # not the receipt's: no verdict at all, the caller defers it
            raise
        except Exception as exc:
            if not manifest.readable(index):  # the caller asked for an entry it cannot read
                raise
            if index in manifest.malformed:
                leaf = manifest.malformed[index][0]
                log.exception("checking receipt %d of batch %d failed", index, batch_id)
                why = local_failure("checking", exc)
                return Verdict(batch_id, index, leaf, unverifiable=why, validator=self.validator, local=True)
            return _barrier(_Head(batch_id, index, manifest.entries[index], self.validator), exc, found)

    async def _stage(
        self, batch_id: int, node: str, index: int, manifest: Manifest, findings: list[Finding]
    ) -> Verdict | _Staged:
        """Everything before the model: entry, signatures, trace; a final verdict if it ends there.
        ``findings``: the caller's list, filled as faults are found, so that an exception later on
        (a check that raises on what the node wrote) cannot erase them: a node placed a malformed
        value after its lie, and the barrier's verdict had no finding (a review, HIGH)."""
        if index in manifest.malformed:  # the node's own answer on chain: its fault
            leaf, reason = manifest.malformed[index]
            finding = Finding(Check.TRACE_MALFORMED, f"the posted trace: {reason}")
            return Verdict(batch_id, index, leaf, findings=(finding,), validator=self.validator)
        entry = self.entry(manifest, index)
        head = _Head(batch_id, index, entry, self.validator, commit_block=manifest.commit_block)
        findings += check_receipt(entry, node, self.domain) + check_trace_hash(
            entry.trace_cid, entry.receipt.trace_hash
        )
        try:
            trace = parse_trace_block(await self.store.get_block(entry.trace_cid))
        except (MalformedTrace, InvalidBlockError, InvalidCIDError) as exc:  # what the node committed
            findings.append(Finding(Check.TRACE_MALFORMED, str(exc)))
            return head.verdict(findings)
        except Exception as exc:  # not found / unavailable: never an accusation, an availability case
            await raise_own_store(self.store, exc)  # this validator's store: no verdict (`_stage_safe`)
            return head.verdict(findings, unverifiable=f"trace unavailable: {exc}", missing=not findings)
        findings += check_trace(trace, entry)
        scorer = self.scorer
        # The precision comes from the id the user signed, never from the trace's word for it.
        node_dtype = None if scorer is None else compute_of(head.model_id, scorer.weights_id)
        if scorer is None or node_dtype is None:
            why = None if findings else f"model {head.model_id} not served by this validator"
            return head.verdict(findings, unverifiable=why)
        if trace.doc.engine.dtype != node_dtype:
            findings.append(
                Finding(
                    Check.TRACE,
                    f"trace engine dtype {trace.doc.engine.dtype!r} is not the signed model's {node_dtype!r}",
                    expected=node_dtype,
                    claimed=trace.doc.engine.dtype,
                )
            )
        replayed = await check_replay(trace.doc, self.agents, scorer.tokenizer, self.tools, self.domain)
        findings += replayed.findings
        if replayed.unverifiable is not None and not findings:
            return head.verdict(findings, unverifiable=replayed.unverifiable)
        if self.origins is not None and replayed.first_roots:
            origin = await check_origins(
                trace.doc, replayed.first_roots, self.origins, self.store, node, batch_id
            )
            findings += origin.findings
            if origin.unverifiable is not None:
                # only the origin waits: every other check runs, and a fault it finds is settled now
                # (a node must not buy unchecked model work with one unreadable manifest)
                head = replace(head, origin=origin)
        if not replayed.findings:  # the hits of a trace that replays: are they the closest entries?
            searched = await self.searches.check(trace.doc)
            findings += searched.findings
            head = replace(head, unread=searched.unverifiable)
        scorable, too_long = [], []
        for call in trace.llm_calls:
            bad = check_tokens(call, scorer.vocab_size)
            findings += bad
            if not bad and call.grammar is not None:  # the mask walk, off the event loop
                args = (call, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
                findings += await asyncio.to_thread(check_grammar, *args)
            if len(call.prompt_ids) + len(call.output_ids) > scorer.max_positions:
                too_long.append(call.call)
            elif call.output_ids and not bad:
                scorable.append(call)
        if too_long:  # a longer context than this validator's model holds: not proof of anything
            why = f"calls {too_long} exceed the {scorer.max_positions} positions this validator scores"
            return head.verdict(findings, unverifiable=None if findings else why)
        try:
            decider = await self._decider(node_dtype)
        except Exception as exc:  # this validator cannot load that format: not the node's fault,
            # and not a verdict either: checked again while the window is open (a final
            # "unverifiable" here let a node serve the format validators cannot hold, unchecked)
            log.exception("loading a %s scorer failed", node_dtype)
            why = None if findings else f"cannot score in {node_dtype} here: {type(exc).__name__}: {exc}"
            return head.verdict(findings, unverifiable=why, local=True)
        final = self._tolerance(node_dtype, decider)
        if self.arbiter is None:
            return _Staged(head, trace, tuple(findings), decider, tuple(scorable), final)
        screen = Tolerance.screening(node_dtype, _dtype(scorer))
        # the screen's bounds for another format accept the screen's own compute: a node serving
        # that other format gets a random sample of its accepted calls judged by the arbiter too
        sampled = node_dtype != _dtype(scorer)
        return _Staged(head, trace, tuple(findings), scorer, tuple(scorable), final, screen, decider, sampled)

    async def _decider(self, node_compute: str) -> Scorer:
        """The scorer whose verdict decides a call of a node serving ``node_compute``: the arbiter
        (else the sole scorer) in the node's own format where it offers one (`ModelScorer.for_compute`;
        a first use loads it, in a worker thread), so the tight tolerance of a format against itself
        applies instead of a looser cross-format one."""
        base = self.arbiter if self.arbiter is not None else self.scorer
        assert base is not None  # only receipts of a served model get here
        for_compute = getattr(base, "for_compute", None)
        if for_compute is None:  # a scorer with one format only
            return base
        # one load of a format at a time: receipts staged together wait for it, then share its
        # outcome (a failure is remembered, not retried per receipt)
        async with self._loading.setdefault(node_compute, asyncio.Lock()):
            failed_at = self.unloadable.get(node_compute)
            if failed_at is not None and time.monotonic() - failed_at < LOAD_RETRY_S:
                # one whole-model load per format per back-off, not one per receipt (a node signing
                # many receipts in a format this validator cannot hold made it load for each)
                why = f"a {node_compute} copy failed to load here less than {LOAD_RETRY_S:.0f} s ago"
                raise MemoryError(why)
            try:
                loaded = cast("Scorer", await asyncio.to_thread(for_compute, node_compute))
            except Exception:
                self.unloadable[node_compute] = time.monotonic()
                raise
            self.unloadable.pop(node_compute, None)  # a load that works again: declared again
            return loaded

    def _tolerance(self, node_dtype: str, scorer: Scorer) -> Tolerance:
        """The configured tolerance, else the one of the (node, validator) precision pair."""
        if self.tolerance is not None:
            return self.tolerance
        return Tolerance.for_pair(node_dtype, _dtype(scorer))


async def _all(stages: Iterable[Awaitable[Verdict | _Staged]]) -> list[Verdict | _Staged]:
    """The receipts' stages (`Verifier._stage_safe`), run together; the first error (an
    `OwnStoreError`) raised once all of them have ended, so that none is left running behind it."""
    staged = await asyncio.gather(*stages, return_exceptions=True)
    for s in staged:
        if isinstance(s, BaseException):
            raise s
    return cast("list[Verdict | _Staged]", staged)


def _dtype(scorer: Scorer) -> str:
    """The precision a scorer computes in (``float32`` unless it says otherwise)."""
    return str(getattr(scorer, "dtype", "float32"))


def _witness(trace: Trace) -> VerifiedWitness | None:
    """The witness a re-run ``store_read`` reads, keyed by recomputed CIDs: None when the trace has no
    ``store_read`` (nothing to hash again for the tool check), an empty one where it is malformed
    (the replay reports that), so such a re-run never falls back on this validator's store."""
    if not any(call.name == STORE_READ for call in trace.tool_calls):
        return None
    try:
        return VerifiedWitness(trace.doc.witness)
    except FormatError:
        return VerifiedWitness(Witness())


def _shapes(s: _Staged, judgement: _Judgement) -> list[Finding]:
    """The receipt's LLM calls' shapes (`check_shape`) and, for each scored one, its scores' findings."""
    findings: list[Finding] = []
    for call in s.trace.llm_calls:
        scored = call.call in judgement.findings
        decode = s.scorer.decode if scored else None  # only ids the model knows
        findings += check_shape(call, s.scorer.eos_ids, call.stop_strings, decode)
        if scored:
            findings += judgement.findings[call.call]
    return findings


def _barrier(head: _Head, exc: Exception, findings: list[Finding]) -> Verdict:
    """The verdict of a receipt whose checking raised: the findings so far (a node's fault found
    before the failure still counts), else unverifiable with the error (logged with its trace)."""
    log.exception("checking receipt %d of batch %d failed", head.index, head.batch_id)
    why = local_failure("checking", exc)
    return head.verdict(findings, unverifiable=None if findings else why, local=True)


@dataclass(frozen=True)
class _Head:
    """Which receipt a verdict is about."""

    batch_id: int
    index: int
    entry: ManifestEntry
    validator: str
    origin: OriginOutcome | None = None  # set while the roots' origins cannot be judged yet
    commit_block: int | None = None  # the block the batch was committed in, where known
    unread: str | None = None  # why a search's ranking cannot be judged here (an entry not read)

    @property
    def model_id(self) -> str:
        return "0x" + self.entry.receipt.model_id.hex()

    def verdict(self, findings: Sequence[Finding], **extra: Any) -> Verdict:
        """The verdict; with no finding and nothing else unverifiable, one whose origin is pending
        stays pending (`Verdict.origin_pending`)."""
        if not findings and extra.get("unverifiable") is None and self.origin is not None:
            extra = {
                **extra,
                "unverifiable": f"origin: {self.origin.unverifiable}",
                "origin_pending": True,
                "withheld": self.origin.withheld,
                "unread_manifests": self.origin.manifests,
            }
        elif not findings and extra.get("unverifiable") is None and self.unread is not None:
            extra = {**extra, "unverifiable": self.unread}
        return Verdict(
            self.batch_id,
            self.index,
            self.entry.leaf,
            findings=tuple(findings),
            validator=self.validator,
            model_id=self.model_id,
            request_hash=self.entry.receipt.request_hash,
            **extra,
        )


@dataclass
class _Judgement:
    """The LLM findings of one receipt, by call index, and how many calls the arbiter re-scored
    (those the screen doubted and those it drew at random)."""

    findings: dict[int, list[Finding]]
    rechecked: int = 0


@dataclass(frozen=True)
class _Staged:
    """A receipt past its model-free checks, waiting for its LLM calls' scores."""

    head: _Head
    trace: Trace
    findings: tuple[Finding, ...]
    scorer: Scorer  # scores every call first: the screen, or the decider itself
    scorable: tuple[LLMCall, ...]  # calls with output tokens that passed `check_tokens`
    tolerance: Tolerance  # what decides a call: the decider's pair with the node's format
    screen: Tolerance | None = None  # what the screen accepts without the decider (None: no screen)
    decider: Scorer | None = None  # re-scores what the screen doubts, in the node's format
    sampled: bool = False  # another format than the screen's: `_route` and the arbiter's draw apply
