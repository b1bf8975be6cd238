"""A FAKE node whose chat tasks leave a well-formed trace in its store, as a real kernel's do.

The OpenAI drop-in checks an answer's ``finish_reason``, ``usage`` and ``logprobs`` against the
trace its receipt names, read from the node's advertised store
(`supernet.sdk.openai_compat.answer_facts`), and fails an answer whose trace it cannot read. The
FAKE executor of ``node_fixtures.py`` names a trace it never stores; `store_chat_traces` makes a
fake node store one for each chat task (one LLM call: a token per word of the prompt and of the
echoed answer, each answer token with its own log-probability) and gives the transport a drop-in
reads that store through (the node's own app: its public ``/v1/store``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from node_fixtures import FAKE_PROFILE, FakeNode
from supernet.node.service.ports import Job, JobResult
from supernet.sdk.formats.trace import Engine, LlmEvent, Message, Sampling, Trace


def chat_trace(job: Job, output: str) -> Trace:
    """The trace of the FAKE executor's answer ``output`` to the chat ``job``."""
    task_input: Any = job.input
    messages = task_input.get("messages", []) if isinstance(task_input, dict) else []
    said = tuple(
        Message(str(m.get("role")), m["content"] if isinstance(m.get("content"), str) else "")
        for m in messages
        if isinstance(m, dict)
    )
    prompt_words = sum(len(m.content.split()) for m in said) or 1
    answer_words = len(output.split(" "))
    call = LlmEvent(
        index=0,
        model_id=job.model_id,
        messages=said,
        prompt_ids=tuple(range(1, prompt_words + 1)),
        output_ids=tuple(range(100, 100 + answer_words)),
        params=Sampling(512, 0.0, 1.0, 0, None, ()),
        finish_reason="stop",
        logprobs=tuple(-0.125 * (i + 1) for i in range(answer_words)),
        fingerprints=None,
        text=output,
        preemptions=0,
    )
    return Trace(
        task_id=job.task_id,
        user=job.user,
        fee=job.fee,
        agent=FAKE_PROFILE.agent,
        model_id=job.model_id,
        input=task_input,
        seed=0,
        limits=FAKE_PROFILE.limits,
        tools=FAKE_PROFILE.tools,
        engine=Engine("cpu", "float32"),
        output=output,
        status="ok",
        error=None,
        events=(call,),
    )


def store_chat_traces(node: FakeNode) -> httpx.AsyncBaseTransport:
    """Make ``node`` store the trace of each chat task it runs (`chat_trace`, under the CID its
    receipt names) and return the transport its advertised store is read through."""
    run = node.executor.run

    async def traced(result: JobResult, job: Job) -> JobResult:
        if job.agent != "chat":
            return result
        cid = await node.store.put_dag(chat_trace(job, result.output).to_dag())
        return dataclasses.replace(result, trace_cid=cid)

    async def run_traced(job: Job, on_token: Any, on_event: Any = None, on_result: Any = None) -> JobResult:
        async def sink(result: JobResult) -> None:
            await on_result(await traced(result, job))

        result = await run(job, on_token, on_event, sink if on_result is not None else None)
        return await traced(result, job)

    node.executor.run = run_traced  # type: ignore[method-assign]
    return httpx.ASGITransport(app=node.service.app)
