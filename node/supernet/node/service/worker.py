"""Runs admitted tasks through the executor and turns each result into a signed receipt.

A task moves ``accepted -> running -> done | failed``. The output, trace CID and signed
receipt are stored in one transaction before the task reads as done; only then is the
batcher woken. After a restart, :meth:`TaskWorker.resume` re-runs tasks that were accepted or
running (their deadline still ahead) and refuses the rest, which are then never charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

from eth_account.signers.local import LocalAccount
from supernet.node.faults import FaultInjector
from supernet.node.service.db import Database
from supernet.node.service.fee_slots import FeeSlots
from supernet.node.service.metrics import METRICS
from supernet.node.service.models import ReceiptRow, TaskRow, TaskStatus
from supernet.node.service.ports import ChainPort, Executor, Job, JobResult
from supernet.node.service.streams import StreamHub
from supernet.sdk.chain.eip712 import Domain, ReceiptPromise, sign_receipt_promise
from supernet.sdk.chain.receipts import Receipt, output_hash, sign_receipt, trace_hash

log = logging.getLogger(__name__)


def build_receipt(task: TaskRow, output: str, trace_cid: str) -> Receipt:
    """The protocol receipt of a finished task."""
    return Receipt(
        request_hash=bytes.fromhex(task.id[2:]),
        user=task.user,
        model_id=bytes.fromhex(task.model_id[2:]),
        input_hash=bytes.fromhex(task.input_hash[2:]),
        output_hash=output_hash(output),
        trace_hash=trace_hash(trace_cid),
        fee=task.fee,
    )


class PromiseBoundError(RuntimeError):
    """A task ended too late for its receipt's promise to be kept (it is failed, not charged)."""


class TaskWorker:
    """Schedules admitted tasks on the executor, at most ``concurrency`` at a time.

    Args:
        db: the node database.
        executor: the kernel (or a fake in tests).
        account: the node key that signs receipts.
        streams: where generated text is published.
        on_receipt: called after each stored receipt (wakes the batcher).
        concurrency: tasks in the executor at once; the kernel batches their LLM calls.
        per_user: tasks of one user in the executor at once (default: a quarter of
            ``concurrency``, at least 1). A user's tasks can wait in the executor for long (for the
            user's own memory, held by another of their tasks; for a confirmation they never
            give), and unbilled if they then fail: without this cap, one user could hold every slot
            and keep every other user's task from starting.
        faults: deliberate cheating for tests and demos (``--fault trace:RATE``); None: honest.
        chain: where the users' payment channels are read before each task starts (`_unpaid`);
            None: not read (no chain).
        fee_priority: a freed slot goes to the waiting task with the highest fee (ties in arrival
            order, `FeeSlots`), as the kernel's `fair` policy orders LLM calls; False: arrival
            order (the `fifo` and `rr` policies).
    """

    def __init__(
        self,
        db: Database,
        executor: Executor,
        account: LocalAccount,
        streams: StreamHub,
        on_receipt: Callable[[], None],
        concurrency: int = 16,
        faults: FaultInjector | None = None,
        domain: Domain | None = None,
        promise_s: int = 600,
        per_user: int | None = None,
        promise_bound_s: int | None = None,
        commit_margin_s: float = 80.0,
        chain: ChainPort | None = None,
        fee_priority: bool = True,
    ) -> None:
        self.chain = chain
        self.fee_priority = fee_priority
        self.domain = domain
        self.promise_s = promise_s
        # the chain's MAX_PROMISE_DELAY: a promise falls due at the latest that long after the
        # request's deadline (`supernet.sdk.chain.promises.claim_due`), so a task that ends later
        # than that less the time a commit takes is failed, never promised (None: no chain)
        self.promise_bound_s = promise_bound_s
        self.commit_margin_s = commit_margin_s
        self.db = db
        self.executor = executor
        self.account = account
        self.streams = streams
        self._on_receipt = on_receipt
        self._slots = FeeSlots(concurrency)
        self._per_user = per_user if per_user is not None else max(1, concurrency // 4)
        self._user_slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # user -> (slots, tasks using it)
        self._running: dict[str, asyncio.Task[None]] = {}
        self.faults = faults

    def _promise(self, receipt: Receipt, deadline: int) -> tuple[int, str] | None:
        """The node's signed promise to commit ``receipt`` within ``promise_s`` (commitBy, signature):
        a receipt left out of the node's batches is slashable by its user (OmissionManager). Never
        later than the chain lets it fall due (the request's deadline plus ``promise_bound_s``)."""
        if self.domain is None:
            return None
        commit_by = int(time.time()) + self.promise_s
        if self.promise_bound_s is not None:
            commit_by = min(commit_by, deadline + self.promise_bound_s)
        promise = ReceiptPromise(receipt.request_hash, receipt.leaf(), commit_by)
        return commit_by, "0x" + sign_receipt_promise(promise, self.domain, self.account).hex()

    def start(self, task_id: str) -> asyncio.Task[None]:
        """Start running a stored task in the background; returns its asyncio task."""
        self.streams.open(task_id)
        job = asyncio.get_running_loop().create_task(self._run(task_id), name=f"task-{task_id[:10]}")
        self._running[task_id] = job
        job.add_done_callback(lambda _: self._running.pop(task_id, None))
        return job

    async def wait(self, task_id: str) -> None:
        """Wait until ``task_id`` (if running here) has finished."""
        job = self._running.get(task_id)
        if job is not None:
            await asyncio.shield(job)

    def resume(self, now: float | None = None) -> list[str]:
        """Re-run unfinished tasks after a restart; refuse those past their deadline.

        Returns:
            The ids of the tasks started again.
        """
        now = time.time() if now is None else now
        started = []
        for task in self.db.tasks_with_status(TaskStatus.ACCEPTED, TaskStatus.RUNNING):
            if task.deadline < now:
                log.info("refusing task %s after restart: deadline passed (not charged)", task.id)
                self.db.set_status(task.id, TaskStatus.REFUSED, error="node restarted after the deadline")
                METRICS.tasks_finished.labels(status="refused").inc()
                continue
            ran = self.db.irreversible_calls(task.id)
            if ran:
                # a re-run would issue them again under the user's one consent: the task ends
                # here, unbilled, and says which actions ran (or may have: recorded before the call)
                shown = ", ".join(f"{tool} (action {action})" for tool, action in ran)
                why = (
                    f"the node restarted after this task's irreversible calls ran or began: {shown}; "
                    "it is not run again, so they are not repeated (not charged)"
                )
                log.warning("not resuming task %s: %s", task.id, why)
                self.db.set_status(task.id, TaskStatus.FAILED, error=why)
                METRICS.tasks_finished.labels(status="failed").inc()
                continue
            log.info("resuming task %s after restart", task.id)
            self.start(task.id)
            started.append(task.id)
        return started

    async def stop(self) -> None:
        """Cancel running tasks; they stay ``running`` in the database and resume on restart."""
        jobs = list(self._running.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _user_slot(self, user: str) -> AsyncIterator[None]:
        """One of ``user``'s `per_user` slots, taken before a worker slot (waiting for it holds
        none); the semaphore of a user with no task is dropped."""
        key = user.lower()
        sem, users = self._user_slots.get(key, (asyncio.Semaphore(self._per_user), 0))
        self._user_slots[key] = (sem, users + 1)
        try:
            async with sem:
                yield
        finally:
            sem, users = self._user_slots[key]
            if users <= 1:
                del self._user_slots[key]
            else:
                self._user_slots[key] = (sem, users - 1)

    async def _unpaid(self, task: TaskRow) -> str | None:
        """Why ``task`` would be unpaid work if it started now, or None. The channel was funded at
        admission, but a user may ask to withdraw right after the 202 and withdraw once
        ``WITHDRAWAL_DELAY`` has passed while the task waited (behind a long queue, or behind the
        user's own tasks held on confirmations): its voucher then pays nothing. So the channel is
        read again (one call) as the task starts, and a task whose channel is closing does not
        start either (a withdrawal could land while it runs). A chain that cannot be read does not
        stop it."""
        amount = self.db.voucher_amount(task.id)
        if self.chain is None or amount is None:
            return None
        try:
            channel = await self.chain.channel(task.user)
        except Exception as exc:  # the chain's outage: admission saw the channel funded
            log.warning("cannot re-read the channel of %s before task %s: %s", task.user, task.id, exc)
            return None
        if channel.closing:  # as admission refuses new work against it: the user may withdraw mid-task
            return (
                f"the user asked to withdraw its payment channel (withdrawable at {channel.withdrawable_at})"
            )
        if channel.deposited < amount:
            return (
                f"the payment channel no longer covers this task's voucher ({channel.deposited} wei "
                f"deposited, the voucher is for {amount}): the user withdrew"
            )
        return None

    def _finish(self, task: TaskRow, result: JobResult, started: float) -> None:
        """Sign the task's receipt and store it with the output and the roots holding its writes
        (the task then reads as done)."""
        if self.promise_bound_s is not None:
            due = task.deadline + self.promise_bound_s
            if time.time() + self.commit_margin_s > due:
                # its promise would fall due before its batch could be committed: a user could
                # hold a task past the bound and claim the omission of an honest receipt
                raise PromiseBoundError(
                    f"the task ended too late to promise its receipt: the chain lets the promise fall "
                    f"due at {due} (its deadline {task.deadline} + {self.promise_bound_s} s), less "
                    f"than {self.commit_margin_s:.0f} s from now; not charged"
                )
        output = result.output
        if self.faults is not None:
            output = self.faults.on_output(task.id, output)  # the `trace` fault: receipt != trace
        receipt = build_receipt(task, output, result.trace_cid)
        row = ReceiptRow(
            task_id=task.id,
            leaf="0x" + receipt.leaf().hex(),
            body=json.dumps(receipt.to_json()),
            signature="0x" + sign_receipt(receipt, self.account).hex(),
        )
        promise = self._promise(receipt, task.deadline)
        self.db.finish_task(task.id, output, result.trace_cid, row, promise, result.roots)
        METRICS.tasks_finished.labels(status="done").inc()
        METRICS.task_seconds.observe(time.perf_counter() - started)

    async def _run(self, task_id: str) -> None:
        stream = self.streams.open(task_id)
        task = self.db.task(task_id)
        if task is None:
            stream.close()
            return
        priority = task.fee if self.fee_priority else 0
        async with self._user_slot(task.user), self._slots.slot(priority):
            if task.deadline < time.time():  # queued past its deadline (behind its user's own tasks)
                log.info("refusing task %s: its deadline passed while it waited (not charged)", task_id)
                late = "the deadline passed before it could start"
                self.db.set_status(task_id, TaskStatus.REFUSED, error=late)
                METRICS.tasks_finished.labels(status="refused").inc()
                stream.close()
                return
            unpaid = await self._unpaid(task)
            if unpaid is not None:
                log.info("refusing task %s: %s (not charged)", task_id, unpaid)
                self.db.set_status(task_id, TaskStatus.REFUSED, error=unpaid)
                METRICS.tasks_finished.labels(status="refused").inc()
                stream.close()
                return
            self.db.set_status(task_id, TaskStatus.RUNNING)
            started = time.perf_counter()
            stored = False

            async def store(result: JobResult) -> None:
                """Store the receipt; the executor calls it before the task's writes become its
                user's roots for the next task (`Kernel.submit`'s ``on_success``)."""
                nonlocal stored
                self._finish(task, result, started)
                stored = True

            try:
                job = Job(
                    task_id=task.id,
                    user=task.user,
                    agent=task.agent,
                    model_id=task.model_id,
                    input=task.input,
                    request=task.task_request(self.account.address).to_json(),
                    request_signature=task.signature,
                    fee=task.fee,
                )
                result = await self.executor.run(job, stream.push, stream.push_event, on_result=store)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not stored:
                    log.warning("task %s failed: %s", task_id, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                    self.db.set_status(task_id, TaskStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
                    METRICS.tasks_finished.labels(status="failed").inc()
                    stream.close()
                    return
                # done and receipted: what failed after cannot undo that
                log.error("task %s: after its receipt was stored: %s", task_id, exc)
            else:
                if not stored:  # an executor that does not call ``on_result``
                    self._finish(task, result, started)
            stream.close()
        self._on_receipt()
