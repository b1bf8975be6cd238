"""Scheduler policies on the FAKE engine of ``kernel_fixtures``: ordering, batching, fair share,
preemption and exact resume, error propagation, no hang."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from kernel_fixtures import FakeLLMEngine, FakeParams, fake_token
from supernet.node.kernel.errors import KernelStoppedError, LLMError
from supernet.node.kernel.policies import FairSharePolicy, make_policy
from supernet.node.kernel.scheduler import GenerationOutcome, LLMJob, Scheduler

pytestmark = pytest.mark.timeout(20)


def job(
    rid: str, *, user: str = "alice", fee: int = 1, prompt: tuple[int, ...] = (1, 2, 3), n: int = 8
) -> LLMJob:
    return LLMJob(rid, f"task-{rid}", user, fee, prompt, FakeParams(n))


async def run_all(sched: Scheduler, jobs: list[LLMJob]) -> tuple[list[str], list[GenerationOutcome]]:
    """Run ``jobs`` concurrently (queued in list order); returns the completion order and outcomes."""
    done: list[str] = []

    async def one(j: LLMJob) -> GenerationOutcome:
        out = await sched.generate(j)
        done.append(j.request_id)
        return out

    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*(one(j) for j in jobs))
    return done, list(outcomes)


async def test_fifo_runs_in_arrival_order_one_at_a_time(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=1)
    done, outs = await run_all(sched, [job("a"), job("b"), job("c")])
    assert done == ["a", "b", "c"]
    assert all(len(step) == 1 for step in fake_llm_engine.steps)
    assert all(o.preemptions == 0 and o.finish_reason == "length" for o in outs)


async def test_calls_of_all_agents_share_the_batch(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=4)
    await run_all(sched, [job(f"j{i}", prompt=(i,)) for i in range(6)])
    assert max(len(step) for step in fake_llm_engine.steps) == 4
    assert sched.active == 0 and sched.waiting == 0


async def test_round_robin_preempts_and_resumes_to_the_same_tokens(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("rr"), max_active=1, time_slice_tokens=3)
    prompts = {"a": (5, 6), "b": (7,), "c": (9, 9, 9)}
    _, outs = await run_all(sched, [job(r, prompt=p, n=10) for r, p in prompts.items()])
    for (rid, prompt), out in zip(prompts.items(), outs, strict=True):
        assert out.output_ids == tuple(fake_token(prompt, i) for i in range(10)), rid
        assert out.preemptions >= 2
        assert len(out.logprobs) == 10
    # Interleaved: the engine switched between the calls many times.
    steps = fake_llm_engine.steps
    switches = sum(1 for x, y in itertools.pairwise(steps) if x != y)
    assert switches >= 6
    assert sched.context.stats().held == 0


async def test_round_robin_does_not_preempt_without_waiters(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("rr"), max_active=2, time_slice_tokens=2)
    _, outs = await run_all(sched, [job("a", n=9), job("b", n=9)])
    assert [o.preemptions for o in outs] == [0, 0]


async def test_fair_share_interleaves_users(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
    jobs = [job(f"a{i}", user="alice") for i in range(4)] + [job("b0", user="bob")]
    done, _ = await run_all(sched, jobs)
    # Under FIFO bob would finish last; with fair share he is served before alice's backlog.
    assert done.index("b0") < 3


async def test_fair_share_gives_higher_fees_priority(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
    jobs = [job("cheap1", user="c", fee=1), job("cheap2", user="c", fee=1), job("rich", user="r", fee=100)]
    # The first call is admitted at once (an empty engine); the rich user then goes next.
    done, _ = await run_all(sched, jobs)
    assert done.index("rich") <= 1


def test_fair_share_policy_weights_by_fee() -> None:
    policy = FairSharePolicy()

    class E:
        def __init__(self, user: str, fee: int, seq: int) -> None:
            self.user, self.fee, self.seq = user, fee, seq

    a, b = E("a", 1, 0), E("b", 3, 1)
    policy.push(a)
    policy.push(b)
    served = {"a": 0, "b": 0}
    for _ in range(400):  # serve one token at a time to whoever the policy picks, then requeue
        e = policy.pop()
        policy.charge(e, 1)
        served[e.user] += 1
        policy.push(e)
    assert served["b"] == pytest.approx(3 * served["a"], rel=0.02)


async def test_engine_error_reaches_the_caller_and_frees_the_slot() -> None:
    engine = FakeLLMEngine(fail_request_ids=frozenset({"bad"}))
    await engine.start()
    try:
        sched = Scheduler(engine, make_policy("fifo"), max_active=1)
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                sched.generate(job("bad")), sched.generate(job("good")), return_exceptions=True
            )
        assert isinstance(results[0], LLMError)
        assert isinstance(results[0].__cause__, RuntimeError)
        assert isinstance(results[1], GenerationOutcome)
    finally:
        await engine.stop()


async def test_submit_error_reaches_the_caller() -> None:
    class Broken:
        def submit(self, *args: object, **kwargs: object) -> None:
            raise ValueError("prompt too long")

    sched = Scheduler(Broken(), make_policy("fifo"), max_active=1)  # type: ignore[arg-type]
    async with asyncio.timeout(5):
        with pytest.raises(LLMError, match="prompt too long"):
            await sched.generate(job("x"))
    assert sched.active == 0


async def test_cancelled_caller_leaves_queue_and_others_finish(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=1)
    first = asyncio.ensure_future(sched.generate(job("first", n=20)))
    waiting = asyncio.ensure_future(sched.generate(job("waiting")))
    await asyncio.sleep(0)
    waiting.cancel()
    first_running_cancel = asyncio.ensure_future(sched.generate(job("third")))
    async with asyncio.timeout(5):
        assert (await first).finish_reason == "length"
        assert (await first_running_cancel).finish_reason == "length"
    assert waiting.cancelled()
    assert "waiting" not in {rid for step in fake_llm_engine.steps for rid in step}


async def test_cancelling_a_running_call_frees_its_slot(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=1)
    first_token = asyncio.Event()
    on_token = lambda i, t: first_token.set() or False  # noqa: E731
    running = asyncio.ensure_future(sched.generate(job("long", n=10_000), on_token))
    await first_token.wait()
    running.cancel()
    async with asyncio.timeout(5):
        out = await sched.generate(job("next"))
    assert out.finish_reason == "length"
    assert fake_llm_engine.cancelled == ["long"]  # the engine was told, not left generating


async def test_close_fails_waiting_calls(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=1)
    calls = [asyncio.ensure_future(sched.generate(job(f"c{i}", n=10_000))) for i in range(3)]
    await asyncio.sleep(0)
    sched.close()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, KernelStoppedError) for r in results)
    with pytest.raises(KernelStoppedError):
        await sched.generate(job("late"))


async def test_token_callback_can_stop_a_call(fake_llm_engine: FakeLLMEngine) -> None:
    sched = Scheduler(fake_llm_engine, make_policy("fifo"), max_active=2)
    seen: list[int] = []

    def on_token(index: int, token_id: int) -> bool:
        seen.append(token_id)
        return index == 3

    out = await sched.generate(job("s", n=50), on_token)
    assert out.finish_reason == "stopped"
    assert out.output_ids == tuple(seen) and len(seen) == 4
