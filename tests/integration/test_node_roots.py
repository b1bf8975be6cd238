"""A user's agent memory survives a node restart (real kernel, model, embedder and store).

Memory and file roots used to live only in the kernel's RAM: after a restart every namespace
started empty and a user's memory was unreachable. The executor now persists them (atomically,
before the task is reported done) and restores them when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from supernet.node.service.config import NodeSettings
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.ports import Job

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

ALICE = "0x" + "a1" * 20


def job(executor: KernelExecutor, n: int, task_input: Any) -> Job:
    model_id = executor.model_ids()[0]  # the task runs on the core of the model it names
    return Job(
        task_id="0x" + f"{n:02x}" * 32, user=ALICE, agent="retrieval", model_id=model_id, input=task_input
    )


async def test_agent_memory_survives_a_node_restart(
    tmp_path: Path, smollm2_dir: Path, store_client: Any
) -> None:
    settings = NodeSettings.load(
        None, data_dir=tmp_path / "node", engine={"model": str(smollm2_dir), "agents": ["retrieval"]}
    )
    first = await KernelExecutor.create(settings, store_client)
    try:
        policy = first.kernel.access.policy  # one set of caps, from the config (issue: caps disagreed)
        assert policy.max_new_tokens == settings.engine.max_new_tokens
        assert policy.max_llm_tokens == settings.pricing.tokens_per_task
        await first.run(job(first, 1, {"remember": ["The vault code is 4711."]}), lambda _t: None)
        roots = first.kernel.namespace_roots()
        assert roots["memory"], "the memory write made a root"
    finally:
        await first.close()
    second = await KernelExecutor.create(settings, store_client)
    try:
        assert second.kernel.namespace_roots() == roots
        result = await second.run(
            job(second, 2, {"question": "What is the vault code?", "k": 1, "max_new_tokens": 8}),
            lambda _t: None,
        )
        trace = await store_client.get_dag(result.trace_cid)
        [search] = [e for e in trace["events"] if e["kind"] == "memory.search"]
        assert len(search["hits"]) == 1, "the note written before the restart is found after it"
    finally:
        await second.close()


async def test_a_task_whose_agent_code_changed_since_it_was_signed_is_not_run(
    tmp_path: Path, smollm2_dir: Path, store_client: Any
) -> None:
    """A stored task resumed after the operator upgraded its agent (a restart) must not run the new
    code: its result could never be replayed against the hash the user signed."""
    from supernet.node.service.kernel_executor import TaskFailedError

    settings = NodeSettings.load(
        None, data_dir=tmp_path / "node", engine={"model": str(smollm2_dir), "agents": ["retrieval"]}
    )
    executor = await KernelExecutor.create(settings, store_client)
    try:
        running = executor.agent_hash("retrieval")
        assert running is not None
        before = executor.kernel.namespace_roots()
        signed = "0x" + "5e" * 32
        stale = job(executor, 3, {"remember": ["written by the new code"]})
        stale = Job(**{**stale.__dict__, "request": {"agentHash": signed}})
        with pytest.raises(TaskFailedError, match=f"now runs under profile {running}, not the {signed}"):
            await executor.run(stale, lambda _t: None)
        assert executor.kernel.namespace_roots() == before, "nothing of the task ran"
        assert not before["memory"], "(and a write would have made a memory root)"
    finally:
        await executor.close()
