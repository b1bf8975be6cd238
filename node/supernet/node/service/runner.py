"""The node process: database, API, task worker, batcher and redeemer, with one lifecycle.

Every service has the same shape (``setup / run_forever / cleanup / stop``). ``NodeService``
is built from already-constructed parts (executor, chain, store), so tests can wire fakes;
:func:`supernet.node.service.app.build_node` wires the real ones from the settings.

On ``setup`` the node binds its database to the EIP-712 domain it signs for (a start off chain,
or on another chain, over a database whose receipts were promised on a chain is refused:
`open_bound`), registers and stakes (when configured), then resumes: tasks accepted or
running before a crash are re-run (or refused after their deadline, never charged), and
batches sealed or sent are driven to committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvicorn
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from supernet.node.faults import FaultInjector
from supernet.node.service.api import create_app
from supernet.node.service.auth import Authenticator
from supernet.node.service.availability import AvailabilityResponder
from supernet.node.service.batcher import Batcher, DagStore
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.db import Database
from supernet.node.service.decoys import DecoyPlanter
from supernet.node.service.deps import NodeContext
from supernet.node.service.http_protocol import bounded
from supernet.node.service.ports import ChainPort, Executor
from supernet.node.service.redeemer import Redeemer, RedeemPolicy
from supernet.node.service.routes_store import public_reader
from supernet.node.service.streams import StreamHub
from supernet.node.service.worker import TaskWorker
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.promises import answerable_promise_delay, check_promise_delay, max_promise_delay

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "00" * 20


def open_bound(path: Path, domain: Domain | None) -> Database:
    """The node's database at ``path``, bound to the EIP-712 domain this start signs for (None:
    dev mode, off chain; `Database.bind_domain`), or closed again and the start refused.

    Raises:
        DomainMismatchError: the file's receipts were promised on another chain, or on a chain
            while this start is in dev mode.
        DatabaseInUseError: another process (a second node on this data directory) holds it.
    """
    db = Database.open(path, exclusive=True)  # one node process per database
    try:
        db.bind_domain(domain, str(path))
    except BaseException:
        db.close()
        raise
    return db


class NodeService:
    """One node: owns its database and background services, serves the API."""

    def __init__(
        self,
        settings: NodeSettings,
        executor: Executor,
        account: LocalAccount,
        store: DagStore,
        chain: ChainPort | None,
        *,
        store_url: str | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.account = account
        self.store = store
        self.chain = chain
        self.store_url = store_url
        self.faults = faults
        self.ctx: NodeContext | None = None
        self.app: FastAPI | None = None
        self.batcher: Batcher | None = None
        self.redeemer: Redeemer | None = None
        self.availability: AvailabilityResponder | None = None
        self.decoys: DecoyPlanter | None = None
        self._server: uvicorn.Server | None = None
        self._stopped = asyncio.Event()

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain users sign under."""
        if self.chain is not None:
            return self.chain.domain
        return Domain(chain_id=self.settings.chain.chain_id, verifying_contract=ZERO_ADDRESS)

    async def setup(self) -> None:
        """Open the database, register on chain if configured, and resume unfinished work."""
        s = self.settings
        promise_bound: int | None = None
        if isinstance(self.chain, Web3Chain):  # before anything: promises this chain can enforce
            unbonding = await asyncio.to_thread(self.chain.contracts.service_manager.unbonding_period)
            tm = self.chain.contracts.task_manager
            retention, window, vote = await asyncio.gather(
                *(asyncio.to_thread(f) for f in (tm.batch_retention, tm.challenge_window, tm.vote_window))
            )
            check_promise_delay(
                s.batch.promise_s, unbonding, answerable_promise_delay(retention, window, vote)
            )
            promise_bound = max_promise_delay(unbonding)
        db = open_bound(s.data_dir / "node.sqlite3", self.domain if self.chain is not None else None)
        if self.chain is None:
            log.warning("dev mode: no chain, receipts are not committed")
        streams = StreamHub()
        self.batcher = Batcher(
            db,
            self.store,
            self.chain,
            self.account.address,
            s.batch.max_size,
            s.batch.max_age_s,
            reorg_watch=s.chain.reorg_watch,
            at_risk_after_s=s.batch.commit_margin_s,
        )
        worker = TaskWorker(
            db,
            self.executor,
            self.account,
            streams,
            self.batcher.notify,
            faults=self.faults,
            domain=self.domain,
            promise_s=s.batch.promise_s,
            promise_bound_s=promise_bound,
            # a receipt is committed within max_age_s; the rest is the transaction's inclusion
            commit_margin_s=s.batch.commit_margin_s,
            chain=self.chain,
            fee_priority=s.engine.policy == "fair",  # the worker's queue orders tasks as the kernel's does
        )
        auth = Authenticator(
            self.account.address,
            self.domain,
            self.executor,
            db,
            self.chain,
            s.pricing.task_fee_wei,
            max_unfinished=s.api.max_unfinished_per_user,
        )
        self.ctx = NodeContext(
            settings=s,
            address=self.account.address,
            db=db,
            executor=self.executor,
            auth=auth,
            worker=worker,
            streams=streams,
            chain=self.chain,
            store_url=self.store_url,
            store=self.store,
            public_store=public_reader(self.store),  # strangers' reads: local only, a pool of their own
            commit_risk=self.batcher.commit_risk,  # /healthz and admission: promises it cannot keep
        )
        self.app = create_app(self.ctx)
        if self.chain is not None:
            self.redeemer = Redeemer(
                db,
                self.chain,
                s.redeem.interval_s,
                RedeemPolicy(s.redeem.worth_factor, s.redeem.min_amount_wei),
            )
            self.batcher.settlement = self.redeemer
            if s.chain.auto_register:
                await self.chain.ensure_registered(
                    s.api.endpoint(), list(self.executor.model_ids()), s.chain.stake_wei
                )
        if isinstance(self.chain, Web3Chain):  # a real chain: answer availability challenges
            self.availability = AvailabilityResponder(
                db,
                self.store,
                self.chain.contracts.task_manager,
                self.account.address,
                self.chain.contracts.deployment.deploy_block,
                omission_manager=self.chain.contracts.omission_manager,
            )
            if s.decoys.enabled and self.faults is not None:
                self.decoys = DecoyPlanter(
                    db,
                    self.chain,
                    self.faults,
                    self.account,
                    s.api.endpoint(),
                    s.data_dir / "decoys",
                    share=s.decoys.share,
                    escrow_wei=s.decoys.escrow_wei,
                    inputs=s.decoys.inputs,
                    interval_s=s.decoys.interval_s,
                )
                await self.decoys.setup()
        resumed = worker.resume()
        if resumed:
            log.info("resumed %d unfinished tasks", len(resumed))

    async def run_forever(self) -> None:
        """Serve the API and run the background services until :meth:`stop`."""
        assert self.app is not None and self.batcher is not None, "setup() first"
        config = uvicorn.Config(
            self.app,
            host=self.settings.api.host,
            port=self.settings.api.port,
            log_level=self.settings.log_level.lower(),
            lifespan="off",
            # a whole request within a deadline, a client that reads nothing dropped, at most so
            # many connections (a new one evicts the oldest idle one: idle sockets must not 503
            # everyone); uvicorn's own limit, one above, then only bounds requests in progress
            http=bounded(self.settings.api.max_connections),
            limit_concurrency=self.settings.api.max_connections + 1,
        )
        self._server = uvicorn.Server(config)
        services = [self.batcher.run_forever(), self._server.serve()]
        if self.redeemer is not None:
            services.append(self.redeemer.run_forever())
        if self.availability is not None:
            services.append(self.availability.run_forever())
        if self.decoys is not None:
            services.append(self.decoys.run_forever())
        tasks: list[asyncio.Task[object]] = [asyncio.create_task(s) for s in services]
        stop_wait = asyncio.create_task(self._stopped.wait())
        await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        self.stop()
        for t in tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(t), 10)
        for t in [*tasks, stop_wait]:
            t.cancel()
        await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        for t in tasks:
            exc = None if t.cancelled() else t.exception()
            if exc is not None:
                raise exc

    def stop(self) -> None:
        """Stop taking tasks and ask every service to return."""
        if self.ctx is not None:
            self.ctx.accepting = False
        if self.batcher is not None:
            self.batcher.stop()
        if self.redeemer is not None:
            self.redeemer.stop()
        if self.availability is not None:
            self.availability.stop()
        if self.decoys is not None:
            self.decoys.stop()
        if self._server is not None:
            self._server.should_exit = True
        self._stopped.set()

    async def cleanup(self) -> None:
        """Cancel running tasks (they resume on the next start) and close the database."""
        if self.ctx is not None:
            await self.ctx.worker.stop()
            self.ctx.db.close()
            if self.ctx.public_store is not self.store:
                await self.ctx.public_store.aclose()

    async def serve(self) -> None:
        """``setup``, ``run_forever`` until SIGINT/SIGTERM or :meth:`stop`, then ``cleanup``."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.setup()
        try:
            await self.run_forever()
        finally:
            await self.cleanup()
