"""Fee priority on the real kernel and model: the fair-share scheduler weighs each user's share of
the engine by the task's fee, so under load a higher fee buys an earlier finish.

A kernel with two LLM slots (time slice 8 tokens) gets eight tasks at once, each one LLM call of
exactly the same prompt and length on SmolLM2, each from its own user. The four low-fee tasks are
submitted *first*, so they take the slots and lead every queue by arrival; the four high-fee tasks
(4x the fee) come after. The test asserts on the order in which tasks finish (ranks, never
seconds): the high-fee tasks, as a group, finish before the low-fee ones. The same submission with
equal fees is the control: there the early (low-fee) group finishes first, so the assertion
depends on the fees, not on the submission order or the engine's speed.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.syscalls import TaskSpec

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

HIGH_FEE, LOW_FEE = 4, 1  # the ratio of scripts/bench_kernel.py's fee run
PER_GROUP = 4
SLOTS = 2  # LLM calls in the engine at once: the rest queue
SLICE = 8  # tokens before a running call may yield
TOKENS = 32  # each call's length: four slices


class CountAgent(Agent):
    """One LLM call, the same for every task: a long greedy reply cut at ``max_new_tokens``."""

    agent_id = "count"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        reply = await ctx.llm.chat(
            [{"role": "user", "content": "Count from 1 to 200, separated by commas."}],
            max_new_tokens=int(input["max_new_tokens"]),
        )
        return reply.text


async def finish_order(
    kernel: Any, fees: list[tuple[str, int]], first_user: int
) -> tuple[list[str], list[Any]]:
    """Submit one task per ``(task id, fee)`` at once, in that order, each from its own new user
    (numbered from ``first_user``: the policy remembers users' past service); the task ids in the
    order the tasks finished, and the outcomes in submission order."""
    finished: list[str] = []

    async def one(i: int, task_id: str, fee: int) -> Any:
        spec = TaskSpec(
            task_id, "count", {"max_new_tokens": TOKENS}, user=f"0x{first_user + i:040x}", fee=fee
        )
        outcome = await kernel.run_task(spec)
        finished.append(task_id)
        return outcome

    outcomes = await asyncio.gather(*(one(i, t, f) for i, (t, f) in enumerate(fees)))
    return finished, outcomes


def ranks(order: list[str], prefix: str) -> list[int]:
    """Finish ranks (0 = first) of the tasks whose id starts with ``prefix``."""
    return [i for i, task_id in enumerate(order) if task_id.startswith(prefix)]


async def test_high_fee_tasks_finish_before_low_fee_ones_on_the_real_engine(make_kernel: Any) -> None:
    agents = AgentRegistry()
    agents.register(CountAgent)
    config = KernelConfig(policy="fair", max_active=SLOTS, time_slice_tokens=SLICE)
    kernel = await make_kernel(config, agents=agents)
    warm = await kernel.run_task(TaskSpec("warmup", "count", {"max_new_tokens": 4}))
    assert warm.status == "ok", warm.error

    async def run(label: str, low: int, high: int, first_user: int) -> tuple[list[int], list[int], list[Any]]:
        # low-fee tasks first: by arrival they would take the slots and finish first
        submitted = [(f"{label}-low-{i}", low) for i in range(PER_GROUP)]
        submitted += [(f"{label}-high-{i}", high) for i in range(PER_GROUP)]
        order, outcomes = await finish_order(kernel, submitted, first_user)
        for o in outcomes:
            assert o.status == "ok", o.error
            assert o.llm_tokens == TOKENS, "every call runs its full length: the groups do equal work"
        assert sorted(order) == sorted(t for t, _ in submitted)
        return ranks(order, f"{label}-high-"), ranks(order, f"{label}-low-"), outcomes

    high, low, outcomes = await run("fees", LOW_FEE, HIGH_FEE, first_user=0x100)
    # The high-fee group finishes first: a lower mean rank, and every high-fee task before the
    # low-fee median (with fees ignored, the early low-fee group leads; see the control below).
    assert statistics.mean(high) < statistics.mean(low), (high, low)
    assert max(high) < statistics.median(low), (high, low)
    # The low-fee calls that held the slots were preempted to let the high-fee ones in.
    preempted = {
        o.task_id: sum(e.get("preemptions", 0) for e in o.trace["events"] if e["kind"] == "llm")
        for o in outcomes
    }
    assert any(preempted[f"fees-low-{i}"] for i in range(PER_GROUP)), preempted

    # Control: the same submission with equal fees. Now the later group has no priority, and the
    # same assertions fail: the order above is the fees' doing.
    same_high, same_low, _ = await run("equal", LOW_FEE, LOW_FEE, first_user=0x200)
    assert statistics.mean(same_high) > statistics.mean(same_low), (same_high, same_low)
    assert not max(same_high) < statistics.median(same_low), (same_high, same_low)
