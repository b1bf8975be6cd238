"""The answer check: a task's answer is handed to the caller only if it is what the node signed.

A node stores a task's output and its signed receipt (and its promise to commit it) in one
transaction (`supernet.node.service.db.NodeDB.finish_task`), so an answer can be checked the moment
it arrives: `check_answer` runs the receipt's checks for the request the user just signed
(`supernet.sdk.client.verify.check_receipt`: request hash, input hash, output hash, model, fee,
node signature, the promise to commit) and checks that the text shown (or the tool call) is that
output, by the rule `Client` checks a stream with (`supernet.sdk.client.streaming.stream_problem`:
cut at the user's stop strings, a run of U+FFFD for a character split across tokens, trailing
whitespace). So a node that runs the task honestly for the validators cannot hand the user other
text: the output the validators check is the output the user read. `Client.submit_task` and
`Client.stream` check this way before they return, and the OpenAI drop-in as it reads the response
(`supernet.sdk.openai_compat.answer_check`). Whether the receipt is then committed, and the trace,
are `Client.verify`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.client.streaming import CHECKED_AGENTS, stream_problem
from supernet.sdk.client.types import ClientError
from supernet.sdk.client.verify import PENDING_CHECK, check_receipt
from supernet.sdk.node_api import ReceiptPublic

# Not yet true of a receipt just signed: it is committed later, and the promise's horizon and
# backing are judged by `Client.verify` against the chain.
NOT_YET = frozenset({PENDING_CHECK, "commit promise kept", "commit promise backed"})


class AnswerMismatchError(ClientError):
    """The node's answer is not the output its receipt for the paid request commits to."""


@dataclass(frozen=True)
class SignedCall:
    """What the user signed for one completion: the answer must be the receipt of exactly this."""

    task_id: str
    request: TaskRequest
    task_input: Any
    domain: Domain
    agent: str = "chat"

    @property
    def node(self) -> str:
        return self.request.node


@dataclass(frozen=True)
class CheckedAnswer:
    """A completion that passed: the committed output and the node's receipt document."""

    output: str
    receipt: ReceiptPublic


def check_answer(
    call: SignedCall, proof: Any, text: str | None, tool_call: tuple[str, str] | None
) -> CheckedAnswer:
    """Check one answer: ``text`` (or ``tool_call``: name and JSON arguments) and the ``supernet``
    field ``proof`` the node sent with it.

    Raises:
        AnswerMismatchError: no receipt, a receipt that fails a check for ``call``, or an answer
            that is not the receipt's output cut at the request's stop strings.
    """
    if not isinstance(proof, dict) or not isinstance(proof.get("signedReceipt"), dict):
        raise AnswerMismatchError(f"task {call.task_id}: the node sent its answer without a signed receipt")
    output, doc = proof.get("output"), proof["signedReceipt"]
    if not isinstance(output, str):
        raise AnswerMismatchError(f"task {call.task_id}: the node sent no output with its receipt")
    request = call.request
    report = check_receipt(
        doc,
        task_id=call.task_id,
        user=request.user,
        node=request.node,
        task_input=call.task_input,
        output=output,
        onchain_batch=_not_committed,
        trace_loaded=None,
        model_id="0x" + request.model_id.hex(),
        max_fee=request.max_fee,
        fee=request.max_fee,  # the drop-in signs the node's price as maxFee: the fee it agreed to
        domain=call.domain,
        request=request,
    )
    failed = [c for c in report.failed() if c.name not in NOT_YET]
    if failed:
        detail = "; ".join(f"{c.name} ({c.detail})" if c.detail else c.name for c in failed)
        raise AnswerMismatchError(f"task {call.task_id}: the node's receipt fails: {detail}")
    if tool_call is None:
        problem = stream_problem(call.agent, call.task_input, [text or ""], output)
        if call.agent not in CHECKED_AGENTS and text != output:
            problem = "another text than the output"
        if problem is not None:
            raise AnswerMismatchError(
                f"task {call.task_id}: the answer is not what the receipt commits: {problem}"
            )
    elif _call_of(output) != (tool_call[0], parse_json(tool_call[1])):
        raise AnswerMismatchError(
            f"task {call.task_id}: the tool call is not the output the node's receipt commits to"
        )
    receipt = ReceiptPublic.model_validate(doc)
    return CheckedAnswer(output, receipt)


def _not_committed(batch_id: int) -> tuple[str, bytes, int]:
    raise AnswerMismatchError(f"a receipt just signed names batch {batch_id}: it cannot be committed yet")


def parse_json(text: str) -> Any:
    """``text`` as JSON, or a sentinel no JSON value equals."""
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


_INVALID = object()


def _call_of(output: str) -> tuple[Any, Any] | None:
    """The ``(name, arguments)`` of a tool call's output (the compact ``{"name", "arguments"}``
    object `supernet.node.agents.tool_calls` parses), None when it is none."""
    doc = parse_json(output)
    if not isinstance(doc, dict) or set(doc) != {"name", "arguments"}:
        return None
    return doc["name"], doc["arguments"]


def kept_promise(doc: ReceiptPublic) -> dict[str, Any] | None:
    """What a client keeps of a checked receipt's promise to commit it (an omission claim shows
    it and the promised receipt, `Client.claim_omission`); the leaf is the receipt's own hash,
    never the node's word for it."""
    if doc.promise is None:
        return None
    leaf = "0x" + Receipt.from_json(doc.receipt).leaf().hex()
    return {"leaf": leaf, "receipt": doc.receipt, **doc.promise.model_dump()}
