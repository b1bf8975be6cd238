"""The validator service: follow commits, sample, verify, challenge, vote, resolve.

Shape: ``setup / run_forever / stop / cleanup``.

In process (the devnet demo, tests)::

    validator = Validator(ValidatorSettings(chain={...}, store_url=url), on_event=print)
    await validator.setup()
    task = asyncio.create_task(validator.run_forever())
    ...
    validator.stop(); await task; await validator.cleanup()

or ``async with Validator(settings) as v: await v.step()``. As a process: ``supernet validator run``
(`supernet.validator.cli`; `supernet.validator.process.launch` builds the command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import uvicorn
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.chain_read import CHAIN_READ_GAS, MAX_PIN_AGE_S
from supernet.node.kernel.embeddings import token_count
from supernet.sdk.chain.contracts import Contracts
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.chain.errors import ContractError, InsufficientFundsError
from supernet.sdk.chain.registry import ServiceManager
from supernet.sdk.chain.rpc_checks import require_rpc
from supernet.sdk.redact import redact
from supernet.sdk.store import StoreClient
from supernet.sdk.store.errors import StoreUnavailableError
from supernet.validator.availability import Availability
from supernet.validator.chain import EXPIRED_SEED, TaskManagerClient
from supernet.validator.challenger import Disputes
from supernet.validator.config import MAX_POLL_INTERVAL_S, ValidatorSettings
from supernet.validator.db import BatchRow, CheckRow, Database, DivergedRow
from supernet.validator.evidence import Verdict, publish
from supernet.validator.follower import Follower
from supernet.validator.manifests import ManifestWatch
from supernet.validator.ops import Health, ValidatorMetrics, ops_app
from supernet.validator.origin_check import ReceiptIndex
from supernet.validator.sampler import sample
from supernet.validator.search_check import SearchCheck
from supernet.validator.tool_check import RegistryRunner, ToolRunner
from supernet.validator.turns import TurnOrder
from supernet.validator.verifier import (
    Manifest,
    ManifestError,
    OwnStoreError,
    Scorer,
    Verifier,
    own_store_error,
    store_down,
)
from supernet.validator.writes import WriteLog

log = logging.getLogger(__name__)

# Receipts verified together: their LLM calls share forward passes (cheaper), while progress is
# still recorded every few receipts (a restart redoes at most one group).
RECEIPTS_PER_PASS = 8
ACTIVE_BATCHES = 8  # batches checked in turns, a group each (`Validator._check_batches`)
STEP_TURNS_S = 300.0  # wall seconds of turns a step makes before its other duties

RECHECK_BASE_S = 60
"""Chain seconds before the first re-check of an entry whose check failed on this validator,
doubling with each failure (`service.recheck_at`)."""
RECHECK_SHARE = 4
"""A re-check waits at most ``1/RECHECK_SHARE`` of the time left in the entry's window."""
_jitter = secrets.SystemRandom()  # re-check delays no node can predict

STALE_POLLS = 10
"""``/healthz`` goes stale when the last good step is older than this many poll intervals (at least
`STALE_MIN_S`); ``poll_interval_s`` is at most `MAX_POLL_INTERVAL_S`, so the bound is at most ten
minutes."""
STALE_MIN_S = 60.0


class SamplingMismatch(RuntimeError):
    """The local sample disagrees with ``TaskManager.isSampled`` (wrong chain or protocol drift)."""


class OwnStore:
    """This validator's content-store client as its duties use it: every call passes through to
    ``client``, and one that fails for want of an answer (`StoreUnavailableError`) while the store
    does not answer its ``version`` call either (`own_store_error`) raises `OwnStoreError`
    instead, kept in ``failure``. So a block this validator cannot get because its own store is
    down is never taken for one a node withholds (the readers defer what they read), and the
    step that met the outage fails (`Validator.step`), which ``/healthz`` shows."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.failure: OwnStoreError | None = None
        """The outage met since the last `check`, if any."""

    async def check(self) -> OwnStoreError | None:
        """Ask the store whether it answers (`store_down`): the outage (kept in ``failure``), or
        None (``failure`` cleared: a step starts afresh)."""
        self.failure = await store_down(self.client)
        return self.failure

    def __getattr__(self, name: str) -> Any:
        client = self.__dict__.get("client")
        if client is None:
            raise AttributeError(name)
        attr = getattr(client, name)
        if name in ("version", "aclose") or not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attr(*args, **kwargs)
            except StoreUnavailableError as exc:
                own = await own_store_error(client, exc)
                if own is None:  # the store answers: the data's (e.g. a block nobody serves)
                    raise
                self.failure = own
                if own is exc:
                    raise
                raise own from exc

        return guarded


@dataclass(frozen=True)
class ValidatorEvent:
    """Something the validator did, for live displays.

    ``kind`` is one of batch, verdict, challenge, vote, resolved; ``data`` its details.
    """

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class Validator:
    """One validator.

    Args:
        settings: the configuration.
        scorer: an already loaded model (default: load ``settings.model``).
        arbiter: the float32 model that decides what a cheaper ``scorer`` does not accept (loaded
            with the default scorer when its precision is not float32).
        store: a content-store client (default: one on ``settings.store_url``).
        tools: deterministic-tool runner (default: the node's built-in tools).
        agents: the agents it replays (default: the node's built-ins).
        on_event: called with each `ValidatorEvent` (must not block).
    """

    def __init__(
        self,
        settings: ValidatorSettings,
        *,
        scorer: Scorer | None = None,
        arbiter: Scorer | None = None,
        store: Any = None,
        tools: ToolRunner | None = None,
        agents: AgentRegistry | None = None,
        on_event: Callable[[ValidatorEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.account = settings.chain.account()
        self.address: str = self.account.address
        self._scorer, self._store, self._tools, self._on_event = scorer, store, tools, on_event
        self._arbiter = arbiter
        self._declared_without: set[str] = set()  # formats left out of the declaration
        self._agents = agents
        self._own_store = store is None
        self._mcp: Any = None  # MCPTools of settings.mcp_servers, started in setup
        self._stop = asyncio.Event()
        self.turn_order = TurnOrder()  # the order of `_check_batches`' turns, kept across steps
        self.metrics = ValidatorMetrics()
        self.health = Health(address=self.address)
        self._urls = (settings.chain.rpc_url, settings.store_url)

    _urls: tuple[str, ...] = ()
    """The configured URLs whose paths, queries and credentials are kept out of what is logged and
    shown (`_shown`)."""
    _guard: OwnStore | None = None
    """The store client as `setup` wraps it (`OwnStore`)."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Connect to the chain and the store, open the database, load the model, register if asked."""
        s = self.settings
        self.deployment = Deployment.load(s.chain.deployment)
        # as every client connects: the chain id checked and pinned, the answer floor the
        # deployment file's; every transaction a duty within [chain] max_priority_fee_gwei
        self.contracts = Contracts.connect(
            s.chain.rpc_url, self.deployment, self.account, tip_ceiling=s.chain.tip_ceiling(), duty=True
        )
        self.w3 = self.contracts.w3
        self.chain = TaskManagerClient.of(self.contracts)
        # recorded chain_reads are re-read over this RPC: it must run calls with the protocol's gas
        # (a lower cap would accuse honest reads of running out of it) and hold the states of the
        # oldest pin judged here: MAX_PIN_AGE_S before a commit whose last dispute can open up to
        # BATCH_RETENTION after it (a reopened leaf) and be voted on for a VOTE_WINDOW more (a
        # review: the window alone let an RPC pass that could not judge the disputes it joins)
        retention = await asyncio.to_thread(self.chain.binding.batch_retention)
        span = MAX_PIN_AGE_S + retention + self.chain.params().vote_window
        await asyncio.to_thread(require_rpc, self.w3, "validator", call_gas=CHAIN_READ_GAS, state_span_s=span)
        # the content store answers, or nothing starts: with a store it cannot reach every step
        # would go on, and every block it cannot get be taken for one the node withholds
        client = self._store or StoreClient(s.store_url)
        self._urls = (s.chain.rpc_url, s.store_url, str(getattr(client, "url", "")))
        self._guard = OwnStore(client)
        self.store: Any = self._guard
        down = await self._guard.check()
        if down is not None:
            if self._own_store:  # opened here: closed here (`cleanup` needs the database)
                await client.aclose()
            raise down  # "validator cannot start: this validator's content store at URL does not answer: ..."
        self.db = Database(s.db_path)
        # a header not in memory is read in its commit block, as recorded: one single-block query
        self.chain.commit_block_of = self.db.commit_block
        if self._scorer is None:
            from supernet.validator.scoring import ModelScorer

            screen, arbiter = await asyncio.to_thread(
                ModelScorer.load_screened, s.model.name, s.model.threads, s.model.device, s.model.dtype
            )
            self._scorer, self._arbiter = screen, arbiter
        scorer: Scorer = self._scorer
        # the entry-length rule's tokenizer (replays of memory adds run it), loaded off the loop
        await asyncio.to_thread(token_count, "")
        tools = self._tools
        if tools is None:
            runner = RegistryRunner(self.store, s.chain.rpc_url)  # chain_read re-read on our chain
            if s.mcp_servers:
                from supernet.node.kernel.mcp_tools import MCPTools
                from supernet.node.service.kernel_executor import mcp_config

                self._mcp = MCPTools([mcp_config(m) for m in s.mcp_servers])
                await self._mcp.start()  # a server that is down: its calls are skipped, not accused
                log.info("re-running MCP tools %s", runner.add_mcp(self._mcp))
            tools = runner
        self.verifier = Verifier(
            self.store,
            self._scorer,
            tools,
            self.deployment.domain,
            self.address,
            agents=self._agents,
            arbiter=self._arbiter,
            arbiter_sample=s.model.arbiter_sample,
            arbiter_sample_fraction=s.model.arbiter_sample_fraction,
            mcp_budget_s=s.mcp_rerun_budget_s,
            # searched entries' texts from the write log, their vectors kept across restarts
            searches=SearchCheck(self.store, db=self.db),
        )
        self.disputes = Disputes(
            self.chain,
            self.db,
            self.verifier,
            self.store,
            self.address,
            challenge=s.challenge,
            auto_withdraw=s.auto_withdraw,
            on_event=lambda kind, data: self._emit(kind, **data),
        )
        # the roots a task started from are followed to the committed receipts that wrote them
        self.verifier.origins = ReceiptIndex(
            self.db, self.disputes.manifest, self.deployment.domain, claims=self.chain
        )
        # every batch's manifest is read in its window, and claimed on chain when not served
        self.manifests = ManifestWatch(
            self.chain,
            self.db,
            self.verifier.origins,
            backoff_s=s.availability_backoff_s,
            challenge=s.challenge,
            start_block=self.deployment.deploy_block,
            on_event=lambda kind, data: self._emit(kind, **data),
        )
        self.availability = Availability(
            self.chain,
            self.db,
            self.disputes,
            self.verifier,
            self._settle,
            retries=s.availability_retries,
            backoff_s=s.availability_backoff_s,
            challenge=s.challenge,
            on_event=lambda kind, data: self._emit(kind, **data),
        )
        self.disputes.on_missing = self.availability.note
        # every committed trace is read in its window for the writes it records (the origin check)
        self.writes = WriteLog(
            self.chain,
            self.db,
            self.store,
            self.verifier.origins,
            self.availability,
            retries=s.availability_retries,
            backoff_s=s.availability_backoff_s,
            # and every trace that writes is replayed: a diverging writer is checked in full
            replay=self.verifier.replay,
            diverged=self.check_entry,
        )
        # every batch from the deploy block on is followed (the origin check's receipt index);
        # those before ``start_block`` are never sampled here
        self.follower = Follower(
            self.chain,
            self.db,
            self.deployment.deploy_block,
            s.chain.confirmations,
            history_until=s.chain.start_block or 0,
            on_undo=self._forget_batches,
        )
        await asyncio.to_thread(self.follower.backfill_history)  # a database that began later
        await asyncio.to_thread(self.chain.params)
        if s.register_stake_wei:
            await asyncio.to_thread(self._ensure_registered, s.register_stake_wei)
        await asyncio.to_thread(self._declare_models, scorer.weights_id)
        log.info(
            "validator %s ready: weights %s, sampling rate %d ppm",
            self.address,
            scorer.weights_id,
            self.chain.params().sample_rate_ppm,
        )

    def _registry(self) -> ServiceManager:
        """The ServiceManager binding, signing as this validator."""
        return self.contracts.service_manager

    def _ensure_registered(self, stake: int) -> None:
        sm = self._registry()
        if not sm.is_active_validator(self.address):
            sm.register_validator(stake)

    async def _declare_loadable(self) -> None:
        """Declare again when the formats this validator fails to load changed (a load failed, or
        one that failed works again): clients sign only what some validators can check."""
        failed = set(self.verifier.unloadable)
        if failed != self._declared_without and self.verifier.scorer is not None:
            await asyncio.to_thread(self._declare_models, self.verifier.scorer.weights_id, failed)

    def _declare_models(self, weights_id: str, without: Collection[str] = ()) -> None:
        """Declare on chain this validator's checked ids: the served model ids it checks (its
        weights in every compute format it scores), the marker `CHECKED_AGENTS` (this validator
        declares agent code), then the code hashes of the agents it replays (its registry's:
        built-ins, then packages by id), so that clients sign requests only for models and agents
        the validators can check together (`supernet.sdk.chain.coverage`); at most the
        contract's ``MAX_MODELS`` (agent hashes beyond it are left out, and logged); only when
        registered and the list changed. ``without``: compute formats this validator failed to load
        (`Verifier.unloadable`), left out so that clients stop signing them for want of checkers."""
        from supernet.sdk.chain.coverage import checked_ids
        from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id

        self._declared_without = set(without)
        sm = self._registry()
        if not sm.is_active_validator(self.address):
            return
        formats = [c for c in COMPUTE_PRECISIONS if c not in self._declared_without]
        models = [bytes.fromhex(served_model_id(weights_id, c)[2:]) for c in formats]
        agents = sorted(self.verifier.agents.list(), key=lambda a: (a.package is not None, a.agent_id))
        hashes = [bytes.fromhex(a.code_hash.removeprefix("0x")) for a in agents]
        ids, left = checked_ids(models, hashes, int(sm.call("MAX_MODELS")))
        named = dict(zip(hashes, agents, strict=True))
        if left:
            log.warning(
                "MAX_MODELS leaves room for %d checked ids: the code hashes of agents %s are not "
                "declared, so clients will not sign for them",
                len(ids),
                ", ".join(named[h].agent_id for h in left),
            )
        if sm.checked_models(self.address) != ids:
            sm.declare_checked_models(ids)
            log.info(
                "declared what this validator checks: models %s; agent code %s",
                ", ".join("0x" + i.hex() for i in ids if i in models),
                ", ".join(f"{named[i].agent_id} 0x{i.hex()}" for i in ids if i in named),
            )

    async def run_forever(self) -> None:
        """Step until `stop`; a failing step is logged and retried after the poll interval. With
        ``http_port`` set, ``/healthz`` and ``/metrics`` are served meanwhile (`supernet.validator.ops`)."""
        server = self._ops_server()
        serving = asyncio.create_task(server.serve()) if server is not None else None
        self.health.ready = True
        revealing = asyncio.create_task(self._reveals())
        try:
            await self._steps()
        finally:
            self.health.draining = True
            revealing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await revealing
            if server is not None and serving is not None:
                server.should_exit = True
                await serving

    async def _reveals(self) -> None:
        """Open due sealed votes every poll interval, beside the steps: a step's checks (seconds to
        minutes, in worker threads) can outlast a vote's reveal phase, and a vote not opened in it
        loses its bond (tests/unit/test_review_sealed_votes.py)."""
        while not self._stop.is_set():
            try:
                await self.disputes.reveal_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "revealing sealed votes failed (retried): %s: %s", type(exc).__name__, _shown(self, exc)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.poll_interval_s)

    def _ops_server(self) -> Any:
        port = self.settings.http_port
        if port is None:
            return None
        # stale after ten polls, at least a minute; never more than ten of the longest poll allowed
        # (a poll interval past it could only come from settings built without their checks)
        polls = STALE_POLLS * self.settings.poll_interval_s
        stale = min(max(STALE_MIN_S, polls), STALE_POLLS * MAX_POLL_INTERVAL_S)
        app = ops_app(self.metrics, self.health, stale_after_s=stale)
        config = uvicorn.Config(app, host=self.settings.http_host, port=port, log_level="warning")
        return _QuietServer(config)

    async def _steps(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self.step()
                self.health.last_success, self.health.last_error = time.time(), None
                self.health.cursor = self.db.cursor(default=0)
                self.metrics.last_success.set(self.health.last_success)
                self.metrics.cursor.set(self.health.cursor)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.step_failures.inc()
                # never the RPC's API key (in its URL), which HTTP errors name: /healthz may be public
                error = f"{type(exc).__name__}: {_shown(self, exc)}"
                self.health.last_error = error[:300]
                log.warning(
                    "validator step failed (retrying): %s",
                    error,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            self.metrics.step_seconds.observe(time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.poll_interval_s)

    def stop(self) -> None:
        """Ask `run_forever` to return after the current step."""
        self._stop.set()

    async def cleanup(self) -> None:
        """Close the database, the MCP connections and the store client (if this object opened it)."""
        self.db.close()
        if self._mcp is not None:
            await self._mcp.close()
        if self._own_store:
            await self.store.aclose()

    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cleanup()

    # -- one step --------------------------------------------------------------------------------

    async def step(self) -> None:
        """Scan new blocks, check pending batches, vote on open challenges, settle expired ones.

        This validator's own content store is asked first (`OwnStore.check`). While it does not
        answer, nothing that reads data runs (every block it cannot get would be taken for one
        the node withholds: retried, its seed sealed, claimed on chain with a bond), only what
        needs the chain alone (following, declaring, settling), and the step fails with the
        store's error, so ``/healthz`` goes stale. An outage met during the step (`OwnStoreError`
        from a read) defers what was being read, skips the step's later data duties and fails the
        step likewise, after settling."""
        while await asyncio.to_thread(self.follower.step):
            pass
        guard: OwnStore | None = getattr(self, "_guard", None)
        if guard is None or await guard.check() is None:
            # re-checks due first: a backlog of pending batches must not push them past their window
            await self._check_diverged(await asyncio.to_thread(self.chain.timestamp), rechecks_only=True)
            # (sealed votes are opened by `_reveals`, beside the steps, however long their checks take)
            await self._check_batches()  # each batch isolated: its trouble never stops the rest
        try:
            await self._declare_loadable()
        except Exception as exc:
            log.warning("declaring the formats checked here failed, retried next step: %s", _shown(self, exc))
        chain_now = await asyncio.to_thread(self.chain.timestamp)
        # what keeps data secured in its window runs isolated: its trouble never stops the votes
        for name, part in (("manifests", self.manifests), ("writes", self.writes)):
            if _store_outage(self) is not None:
                break
            try:
                await part.step(chain_now)
            except Exception as exc:
                log.warning("%s step failed, retried next step: %s", name, _shown(self, exc))
        if _store_outage(self) is None:
            await self._check_diverged(chain_now)
        if _store_outage(self) is None:
            try:
                await self.availability.step(chain_now)
            except InsufficientFundsError as exc:  # an availability bond: retried next step, after settle
                log.warning("availability claim deferred, no ether for its bond: %s", _shown(self, exc))
        now = max(int(time.time()), chain_now)
        met: OwnStoreError | None = None
        if _store_outage(self) is None:
            try:
                await self.disputes.vote_open(now, until=time.monotonic() + STEP_TURNS_S)
            except OwnStoreError as exc:  # a vote's check met the outage: raised after settling
                met = exc
        await self.disputes.settle(now)
        failure = _store_outage(self) or met
        if failure is not None:
            raise failure

    def _forget_batches(self, batch_ids: list[int]) -> None:
        """Batches a reorg undid (`Follower.on_undo`; the database and the header cache forgot
        them already): what is kept of them in memory goes too (their ids may now hold other
        batches), and the turns in progress drop them (`_check_batches`)."""
        self.disputes.forget(batch_ids)
        self.manifests.forget(batch_ids)
        if self.verifier.origins is not None:
            self.verifier.origins.forget(batch_ids)
        self.turn_order.forget(batch_ids)

    def _emit(self, kind: str, **data: Any) -> None:
        self.metrics.on_event(kind, data)
        if self._on_event is not None:
            self._on_event(ValidatorEvent(kind, data))

    def _window_over(self, batch_id: int, now: int | None = None) -> bool:
        """Whether batch ``batch_id``'s challenge window has closed on chain (at ``now``, else at
        the latest block)."""
        header = self.chain.batch(batch_id)
        now = self.chain.timestamp() if now is None else now
        return now >= header.committed_at + self.chain.params().challenge_window

    def sample(self, batch: BatchRow, seed: bytes) -> list[int]:
        """This validator's indexes of the batch, cross-checked with ``TaskManager.isSampled``
        (every index when the seed expired unsealed: the contract then samples everyone)."""
        if seed == EXPIRED_SEED:
            mine = list(range(batch.count))
        else:
            mine = sample(seed, self.address, batch.count, self.chain.params().sample_rate_ppm)
        probe = sorted(set(mine) | set(range(min(batch.count, 16))))
        for i in probe:
            try:
                on_chain = self.chain.is_sampled(batch.batch_id, self.address, i)
            except ContractError as exc:
                if exc.error_name != "SeedNotReady":
                    raise
                break  # seed block not sealed yet: the seed came from its header, nothing to compare
            if on_chain != (i in mine):
                raise SamplingMismatch(f"batch {batch.batch_id} #{i}: local sample disagrees with isSampled")
        return mine

    async def _check_batches(self) -> None:
        """Check the pending batches in turns, a group of ``RECEIPTS_PER_PASS`` receipts a turn, in
        the order of `TurnOrder` (``turn_order``, kept across steps): by node, then by batch, what
        arrives joining the back. A node's flood, however many batches it splits it into, so
        delays its own later batch (its cheat) by one group per flood batch, never by the flood's
        whole check, and another node's batches only by their turns. The first
        ``ACTIVE_BATCHES`` batches opened keep their checks open (each stages its next group while
        others are scored); any other batch takes a turn of one group, opened and closed again
        (progress is in the database), so memory stays bounded whatever the number of batches.
        After each turn the chain is followed again (a batch committed, or whose seed was mined,
        meanwhile joins the turns) and the re-checks that fell due are made; a batch whose window
        closes during its turns is finished ``past_window``. Each batch is isolated: an error
        opening or checking one (no ether for a bond, a store that fails) defers that batch to the
        next step, never the others. The turns end after ``STEP_TURNS_S`` (or on shutdown), so
        that the step's other duties (votes, settlement) come in time; the next step goes on with
        those served longest ago."""
        order = self.turn_order
        order.take_undone()  # read from the database below
        pending = {b.batch_id: b for b in self.db.pending_batches()}
        order.keep(pending, {b.node.lower() for b in pending.values()})
        order.admit(pending.values())
        seen = max(pending, default=0)  # batches committed later are admitted as they come
        waiting: set[int] = set()  # their seeds were not there yet: tried again after other work
        open_checks: dict[int, AsyncGenerator[None, None]] = {}
        announced: set[int] = set()
        until = time.monotonic() + STEP_TURNS_S
        try:
            while (batch := order.next(pending, waiting)) is not None:
                outcome = await self._turn(batch, open_checks, announced)
                if _store_outage(self) is not None:
                    # this validator's store is down (`OwnStore`): the turn did nothing that counts,
                    # and every other batch waits for the store too (the step then fails)
                    break
                if outcome == "waiting":  # no work done: the node keeps its place
                    waiting.add(batch.batch_id)
                    continue
                if outcome == "idle":  # finished with nothing to check: the node keeps its turn
                    del pending[batch.batch_id]
                    continue
                order.served(batch)
                waiting.clear()  # work was done: seeds may have come meanwhile
                if outcome == "finished":
                    del pending[batch.batch_id]
                if time.monotonic() >= until or self._stop.is_set():
                    # the step's other duties (votes, settlement) wait for its end: the turns go on
                    # next step with the batches served longest ago (checks are recorded)
                    if len(pending) > len(waiting):
                        log.info("%d batches' checks go on next step", len(pending) - len(waiting))
                    break
                while await asyncio.to_thread(self.follower.step):
                    pass
                for undone in order.take_undone() & pending.keys():  # orphaned by a reorg: no more turns
                    del pending[undone]
                    if (checks := open_checks.pop(undone, None)) is not None:
                        with contextlib.suppress(Exception):
                            await checks.aclose()
                new = self.db.pending_batches(after=seen)  # committed, or seeded, meanwhile
                if new:
                    seen = max(b.batch_id for b in new)
                    pending |= {b.batch_id: b for b in new}
                    order.admit(new)
                if pending:  # more turns: the re-checks due meanwhile come first
                    now = await asyncio.to_thread(self.chain.timestamp)
                    await self._check_diverged(now, rechecks_only=True)
        finally:
            for checks in open_checks.values():  # the turns were cut short: the rest stays pending
                with contextlib.suppress(Exception):
                    await checks.aclose()

    async def _turn(
        self, batch: BatchRow, open_checks: dict[int, AsyncGenerator[None, None]], announced: set[int]
    ) -> Literal["more", "finished", "idle", "waiting"]:
        """One turn of ``batch``: a group of its receipts checked and settled. ``finished``: nothing
        is left for this step (checked, or deferred by an error); ``idle``: finished without a
        receipt to check (nothing sampled, past its window, its own...: no work, so no turn
        spent); ``waiting``: its seed is not there yet. A batch opened while fewer than
        ``ACTIVE_BATCHES`` are open keeps its checks open between turns (pipelined); any other is
        opened for one group and closed again."""
        checks = open_checks.get(batch.batch_id)
        try:
            if checks is None:
                keep = len(open_checks) < ACTIVE_BATCHES
                first = batch.batch_id not in announced
                opened = await self._open_batch(batch, groups=None if keep else 1, announce=first)
                if opened is None:
                    return "waiting"
                announced.add(batch.batch_id)
                checks = opened.checks
                if not opened.receipts:
                    async for _ in checks:  # finishes the batch
                        pass
                    return "idle"
                if not keep:
                    async for _ in checks:
                        pass
                    row = self.db.batch(batch.batch_id)
                    return "more" if row is not None and row.status == "pending" else "finished"
                open_checks[batch.batch_id] = checks
            await anext(checks)
            return "more"
        except StopAsyncIteration:
            pass
        except Exception as exc:  # the generator is finished by its own error
            _deferred(batch, exc, self)
        open_checks.pop(batch.batch_id, None)
        return "finished"

    async def process_batch(self, batch: BatchRow) -> bool:
        """Check this validator's sample of one batch, all its groups in one go (for callers outside
        `step`, which takes batches in turns: `_check_batches`); returns False while its seed is
        not ready."""
        opened = await self._open_batch(batch)
        if opened is None:
            return False
        async for _ in opened.checks:
            pass
        return True

    async def _open_batch(
        self, batch: BatchRow, groups: int | None = None, announce: bool = True
    ) -> _Opened | None:
        """Start checking this validator's sample of one batch: ``None`` while its seed is not
        ready, else its checks, a group of receipts per step of the iterator (`_group_checks`;
        none, and the batch finished here, when nothing is left: its own, past its window, its
        manifest missing, nothing sampled or all checked).
        ``groups``: check only that many groups now (the batch stays pending if more are left);
        ``announce``: emit the ``batch`` event and log its sample (once per step: a batch taking
        one-group turns is opened again each turn)."""
        if batch.node.lower() == self.address.lower():
            self.db.finish_batch(batch.batch_id, "skipped")
            return _Opened(_nothing(), 0)
        seed = await asyncio.to_thread(self.chain.batch_seed, batch.batch_id)
        if seed is None:
            return None
        if await asyncio.to_thread(self._window_over, batch.batch_id):
            # nothing found now can be challenged: a validator that fell behind must not spend its
            # time on batches it can no longer act on (under an expired seed, every entry of them)
            self.db.finish_batch(batch.batch_id, "past_window", "its challenge window was over when reached")
            return _Opened(_nothing(), 0)
        kept = self.turn_order.samples.get(batch.batch_id)
        if kept is not None and (kept[0] == seed or seed == EXPIRED_SEED):
            # sampled (and cross-checked on chain) once per seed while it is pending; a seed that
            # expired after this validator sampled by it leaves its sample as it was read in time
            indexes = kept[1]
        else:
            if kept is not None:  # a reorg replaced the seed block: its new mix picks anew
                log.warning("batch %d: its seed block was replaced; sampling it again", batch.batch_id)
            elif seed == EXPIRED_SEED:
                why = "its seed expired unsealed; checking all"
                log.warning("batch %d: %s %d receipts", batch.batch_id, why, batch.count)
            indexes = await asyncio.to_thread(self.sample, batch, seed)
            self.turn_order.samples[batch.batch_id] = (seed, indexes)
        if announce:
            self._emit("batch", batch_id=batch.batch_id, node=batch.node, count=batch.count, sampled=indexes)
        if not indexes:
            self.db.finish_batch(batch.batch_id)
            return _Opened(_nothing(), 0)
        if announce:
            log.info("verifying batch %d of %s: receipts %s", batch.batch_id, batch.node, indexes)
        try:
            manifest = await self.disputes.manifest(batch, reuse=True)
        except ManifestError as exc:  # never skipped: retried, then an availability challenge
            why = _shown(self, exc)  # kept and logged: never the store's or the RPC's credentials
            for i in indexes:
                self.availability.note(batch, i, f"manifest: {why}")
            self.db.finish_batch(batch.batch_id, "missing", why)
            return _Opened(_nothing(), 0)
        done = {c.index: c for c in self.db.checks(batch.batch_id)}
        # entries whose check failed here are `_check_diverged`'s, after their back-off; those
        # whose data is missing, or whose origins are, are the availability path's (a batch taking
        # one-group turns would otherwise stage the same withheld entries every turn)
        waiting = {r.index for r in self.db.diverged_rows() if r.batch_id == batch.batch_id and r.attempts}
        waiting |= self.db.missing_indexes(batch.batch_id)
        todo = []
        for i in indexes:
            if i in waiting:
                continue
            if not manifest.readable(i):  # a partial (posted) manifest: the rest is missing
                self.availability.note(batch, i, "entry not posted")
            elif i not in done:
                todo.append(i)
            elif (
                not done[i].ok
                and done[i].challenge_id is None
                and done[i].evidence_cid
                and self.disputes.enabled
            ):
                await self._retry_challenge(batch, i, manifest)
        if groups is not None and len(todo) > groups * RECEIPTS_PER_PASS:
            now = todo[: groups * RECEIPTS_PER_PASS]
            return _Opened(self._group_checks(batch, now, manifest, finish=False), len(now))
        return _Opened(self._group_checks(batch, todo, manifest), len(todo))

    async def _group_checks(
        self, batch: BatchRow, todo: list[int], manifest: Manifest, finish: bool = True
    ) -> AsyncGenerator[None, None]:
        """Verify ``todo`` in groups of ``RECEIPTS_PER_PASS``, settling each verdict as it comes;
        one step per group; the batch is finished after the last (``finish``: ``todo`` is all
        that is left of it)."""
        groups = self.verifier.verify_groups(batch.batch_id, batch.node, todo, manifest, RECEIPTS_PER_PASS)
        checked = 0
        try:
            async for group, verdicts in groups:
                for i, verdict in zip(group, verdicts, strict=True):
                    await self._settle(batch, i, verdict)
                checked += len(group)
                if checked >= len(todo):  # the last group: no turn to wait for
                    break
                yield
                if await asyncio.to_thread(self._window_over, batch.batch_id):  # the turns took it
                    self.db.finish_batch(
                        batch.batch_id, "past_window", "its window closed while it was checked"
                    )
                    return
        finally:
            await groups.aclose()
        if finish:
            self.db.finish_batch(batch.batch_id)

    async def check_entry(self, batch_id: int, index: int) -> None:
        """Verify one entry in full and settle its verdict (challenge if faulty), sampled here or
        not: an entry whose writes' replay diverged (`WriteLog`). A faulty check whose challenge
        was never sent is sent again; a manifest not served now goes to the availability path
        (retried, claimed, verified once served). Raises on anything else: the entry stays
        pending (`Database.diverged_pending`) and the step tries again (a check that fails on
        this validator: after its back-off, `_check_diverged`)."""
        batch = self.db.batch(batch_id)
        done = self.db.check(batch_id, index)
        if batch is None or (done is not None and (done.ok or done.challenge_id or not done.evidence_cid)):
            self.db.settle_diverged(batch_id, index)
            return
        try:
            manifest = await self.disputes.manifest(batch)
        except ManifestError as exc:
            self.availability.note(batch, index, f"manifest: {_shown(self, exc)}")
            self.db.settle_diverged(batch_id, index)
            return
        if done is not None:
            await self._retry_challenge(batch, index, manifest)
        elif not await self._settle(
            batch, index, await self.verifier.verify(batch_id, batch.node, index, manifest)
        ):
            return  # checking failed on this side again: still pending, tried after its back-off
        self.db.settle_diverged(batch_id, index)

    async def _check_diverged(self, chain_now: int, rechecks_only: bool = False) -> None:
        """The full checks still to settle (each isolated), while the entry's own window is open
        (`_entry_window`, an availability answer's included). A diverged writer is tried each
        step; an entry whose check failed on this validator (`Verdict.local_failure`) once its
        back-off is over (`recheck_at`), so that a check that fails here every time (a crafted
        trace that runs this validator out of memory) costs a few tries a window, not one a step.
        An error on the way leaves the entry due. One whose window closed first is `_closed`.
        ``rechecks_only``: the back-off's re-checks alone (a step makes them before its pending
        batches, whose backlog must not push them past their window)."""
        for row in self.db.diverged_rows():
            if rechecks_only and not row.attempts:
                continue
            if row.attempts and chain_now < row.next_at:
                continue  # backing off (`recheck_at` puts each try inside the entry's window)
            try:
                if chain_now >= await self._entry_window(row.batch_id, row.index, chain_now):
                    self._closed(row)
                    continue
                await self.check_entry(row.batch_id, row.index)
            except Exception as exc:  # `OwnStoreError` included: the entry stays due, no try counted
                log.warning(
                    "batch %d #%d: its full check failed, retried: %s",
                    row.batch_id,
                    row.index,
                    _shown(self, exc),
                )
                if isinstance(exc, OwnStoreError):  # this validator's store is down: the rest waits too
                    break

    async def _entry_window(self, batch_id: int, index: int, chain_now: int) -> int:
        """When entry ``index`` of batch ``batch_id`` stops being challengeable, in chain time: the
        batch's window, or a full one from an availability answer that posted the entry
        (`Availability.deadline`). An answer only extends the batch's window: it is asked for once
        that window is in its last tenth."""
        end = await self.availability.deadline(batch_id)
        if chain_now >= end - self.chain.params().challenge_window // 10:
            end = await self.availability.deadline(batch_id, index)
        return end

    def _closed(self, row: DivergedRow) -> None:
        """The entry's window closed before its full check was settled: nothing can be sent now.
        One whose check last failed on this validator ends *unchecked by this validator*, which
        is logged, kept in the database (`Database.unchecked`) and counted as an unverifiable
        verdict (``supernet_validator_receipts{result="unverifiable"}``): a cheat it hid went
        unseen here, and an operator must know (memory, a bug: the warnings before say which).
        One whose fault was found but whose challenge could not be sent ends *unchallenged*,
        logged and kept likewise."""
        check = self.db.check(row.batch_id, row.index)
        if check is not None and not check.ok and check.challenge_id is None and check.evidence_cid:
            log.error(
                "batch %d #%d UNCHALLENGED: a fault was found (%s) but its challenge was not sent in time",
                row.batch_id,
                row.index,
                check.kinds,
            )
            self.db.settle_diverged(row.batch_id, row.index, outcome="unchallenged")
            return
        if not row.attempts or check is not None:
            self.db.settle_diverged(row.batch_id, row.index)
            return
        reason = (
            f"unchecked here: checking failed on this validator {row.attempts} times"
            " until the entry's window closed"
        )
        log.error("batch %d #%d UNCHECKED by this validator: %s", row.batch_id, row.index, reason)
        self.db.settle_diverged(row.batch_id, row.index, outcome="unchecked")
        self._emit(
            "verdict",
            batch_id=row.batch_id,
            index=row.index,
            ok=True,
            checks=[],
            unverifiable=reason,
            evidence=None,
        )

    async def _settle(self, batch: BatchRow, i: int, verdict: Verdict) -> bool:
        """Publish a verdict's evidence, record it (before anything else happens), challenge if faulty.
        A verdict that only says the data is missing goes to the availability path instead; one
        that only says checking failed on this validator (memory, a bug: `Verdict.local_failure`)
        is no verdict: the entry is checked again in full, with back-off, while its own window is
        open (`_check_diverged`; recorded as checked, a cheat it hid would never be looked at
        again). Returns whether the verdict was recorded."""
        if verdict.missing:
            self.availability.note(batch, i, _shown(self, verdict.unverifiable or "trace unavailable"))
            return True
        if verdict.origin_pending:  # not a verdict yet: checked again once the origins are served
            self.availability.await_origins(batch, i, verdict)
            return True
        if verdict.local_failure:
            attempts = self.db.recheck_attempts(batch.batch_id, i) + 1
            try:
                now = await asyncio.to_thread(self.chain.timestamp)
                next_at = recheck_at(attempts, now, await self._entry_window(batch.batch_id, i, now))
            except Exception as exc:  # the chain unreachable: due again at once, as before back-off
                log.warning("batch %d #%d: no back-off (%s)", batch.batch_id, i, _shown(self, exc))
                next_at = 0
            self.db.mark_recheck(batch.batch_id, i, next_at)
            log.warning(
                "batch %d #%d: %s; checked again from chain time %d (failed here %d times)",
                batch.batch_id,
                i,
                verdict.unverifiable,
                next_at,
                attempts,
            )
            return False
        cid = await publish(self.store, verdict)
        self.db.record_check(
            CheckRow(
                batch.batch_id,
                i,
                verdict.ok or bool(verdict.unverifiable),
                ",".join(sorted(verdict.checks)),
                cid,
                None,
            )
        )
        self._emit(
            "verdict",
            batch_id=batch.batch_id,
            index=i,
            ok=verdict.ok,
            checks=sorted(verdict.checks),
            unverifiable=verdict.unverifiable,
            evidence=cid,
        )
        if not verdict.ok and not verdict.unverifiable:
            log.warning(
                "batch %d #%d FAULTY: %s",
                batch.batch_id,
                i,
                "; ".join(f.message for f in verdict.findings[:3]),
            )
            challenge_id = await self.disputes.challenge(batch, verdict, cid)
            if challenge_id:
                self._emit(
                    "challenge",
                    batch_id=batch.batch_id,
                    index=i,
                    challenge_id=challenge_id,
                    node=batch.node,
                    evidence=cid,
                )
        return True

    async def _retry_challenge(self, batch: BatchRow, index: int, manifest: Any) -> None:
        """A faulty verdict stored before a crash, whose challenge was never sent: re-verify and send."""
        verdict = await self.verifier.verify(batch.batch_id, batch.node, index, manifest, recheck_all=True)
        if not verdict.ok and not verdict.unverifiable:
            await self.disputes.challenge(batch, verdict, await publish(self.store, verdict))


# Module functions rather than methods: tests assemble stand-in validators from some of its methods
# (`step`, `_turn`, `_check_diverged`, ...), whose attributes are all these may count on.


def _shown(v: Any, text: object) -> str:
    """``text`` (an error) as validator ``v`` may log it or show it on ``/healthz``: without the
    path, query or credentials of its RPC and store URLs (`redact`; `Validator._urls`). Hosted RPCs
    carry their API key there, and an HTTP client's error names the URL, or its path alone."""
    return redact(str(text), getattr(v, "_urls", ()))


def _store_outage(v: Any) -> OwnStoreError | None:
    """The outage of validator ``v``'s own content store met since its step began (`OwnStore`)."""
    guard: OwnStore | None = getattr(v, "_guard", None)
    return None if guard is None else guard.failure


def _deferred(batch: BatchRow, exc: Exception, v: Any) -> None:
    """An error of one batch's checks: logged, the batch left pending (checked next step; an
    `OwnStoreError` too: nothing of it is recorded)."""
    if isinstance(exc, InsufficientFundsError):  # bonds come back through `settle` at the step's end
        log.warning("batch %d: challenge deferred, no ether for its bond: %s", batch.batch_id, _shown(v, exc))
    else:
        log.warning("batch %d: checking failed, retried next step: %s", batch.batch_id, _shown(v, exc))


@dataclass(frozen=True)
class _Opened:
    """A batch opened for checking (`Validator._open_batch`): its checks, a group per step, and
    how many receipts they cover (0: nothing to check, the batch is finished by them)."""

    checks: AsyncGenerator[None, None]
    receipts: int


async def _nothing() -> AsyncGenerator[None, None]:
    """The checks of a batch with nothing left to check."""
    return
    yield


def recheck_at(attempts: int, now: int, end: int) -> int:
    """When an entry whose check failed on this validator ``attempts`` times is tried again, in
    chain time (``now``; its window ends at ``end``): after ``RECHECK_BASE_S * 2**(attempts - 1)``
    seconds, but at most ``1/RECHECK_SHARE`` of the time left, each delay drawn down to half at
    random. In time, not in steps (a flood of batches makes steps long): the tries thicken toward
    the window's end (about log(window) of them, the last ones a second apart), and
    no moment of them is known to the node, so a check that fails only while the node causes it
    finds the window's rest."""
    delay = min(RECHECK_BASE_S * 2 ** min(attempts - 1, 32), max(0, end - now) // RECHECK_SHARE)
    return now + max(1, int(delay * _jitter.uniform(0.5, 1.0)))  # never twice in one step's time


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the validator's CLI owns SIGINT/SIGTERM and stops the
    server with the validator (`Validator.run_forever`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
