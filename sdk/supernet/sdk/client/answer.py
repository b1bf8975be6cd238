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
from typing import Any, Literal

from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.client.streaming import CHECKED_AGENTS, cut_at_stop, stops_of, stream_matches
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


@dataclass(frozen=True)
class CheckedAnswer:
    """A completion that passed: the committed output and the node's receipt document."""

    output: str
    receipt: ReceiptPublic


AnswerForm = Literal["output", "plain", "stream"]
"""How the checked text relates to the output: ``output`` is the output itself (`Client`, which
reads the output the node reports); ``plain`` is an OpenAI completion's text, the output cut at
the request's stop strings, verbatim; ``stream`` is the joined deltas of a streamed one, that cut
output up to the stream rule's leniency (`stream_matches`)."""


def check_answer(
    call: SignedCall,
    proof: Any,
    text: str | None,
    tool_call: tuple[str, str] | None = None,
    form: AnswerForm = "output",
) -> CheckedAnswer:
    """Check one answer: ``text`` (and ``tool_call``: name and JSON arguments) against the
    ``supernet`` field ``proof`` the node sent with it (``output`` and ``signedReceipt``).

    Raises:
        AnswerMismatchError: no receipt, a receipt that fails a check for ``call``, or an answer
            that is not the receipt's output (in ``form``).
    """
    if not isinstance(proof, dict) or not isinstance(proof.get("signedReceipt"), dict):
        raise AnswerMismatchError(f"task {call.task_id}: the node sent its answer without a signed receipt")
    output, doc = proof.get("output"), proof["signedReceipt"]
    if not isinstance(output, str):
        raise AnswerMismatchError(f"task {call.task_id}: the node sent no output with its receipt")
    request = call.request
    report = check_receipt(
        # the batch left out: a node committing fast may have committed it already, and whether
        # the commit is on chain (with its proof) is `Client.verify`'s check, not the answer's
        {**doc, "batch": None},
        task_id=call.task_id,
        user=request.user,
        node=request.node,
        task_input=call.task_input,
        output=output,
        onchain_batch=no_batch,
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
    problem = _text_problem(call, output, text, tool_call, form)
    if problem is not None:
        raise AnswerMismatchError(
            f"task {call.task_id}: the answer is not what the receipt commits: {problem}"
        )
    return CheckedAnswer(output, ReceiptPublic.model_validate(doc))


def _text_problem(
    call: SignedCall, output: str, text: str | None, tool_call: tuple[str, str] | None, form: AnswerForm
) -> str | None:
    """Why ``text`` / ``tool_call`` is not ``output`` in ``form`` (None: it is)."""
    if form == "output":
        return None if text == output and tool_call is None else "another text than the output"
    content, _ = cut_at_stop(output, stops_of(call.task_input) if call.agent in CHECKED_AGENTS else [])
    if tool_call is not None:
        # the node's rendering of the call it parses from that text (`routes_chat._tool_calls`)
        call_doc = parse_json(content)
        if text or not isinstance(call_doc, dict) or set(call_doc) != {"name", "arguments"}:
            return "a tool call the output is not (or text beside it)"
        arguments = tool_call_arguments(call_doc["arguments"])
        return None if tool_call == (call_doc["name"], arguments) else "another tool call than the output"
    if form == "plain":
        return None if text == content else f"{_short(text)} where the output is {_short(content)}"
    return None if stream_matches(text or "", content) else f"{_short(text)} streamed for {_short(content)}"


def tool_call_arguments(arguments: Any) -> str:
    """A tool call's ``function.arguments`` in an OpenAI answer: the compact JSON of the arguments
    the output holds. The node renders it so (`supernet.node.service.routes_chat`) and the answer
    check compares the string, so a retyped argument (``true`` for ``1``) is another call."""
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def _short(text: str | None) -> str:
    return repr(text) if text is None or len(text) <= 120 else repr(text[:120]) + "..."


def no_batch(batch_id: int) -> tuple[str, bytes, int]:
    """The ``onchain_batch`` of a receipt check made with ``"batch": None`` (an answer's, whose
    commit is `Client.verify`'s to check): never asked."""
    raise AssertionError(f"the answer check reads no batch (asked for {batch_id})")


def parse_json(text: str) -> Any:
    """``text`` as JSON, or a sentinel no JSON value equals."""
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


_INVALID = object()


def kept_promise(doc: ReceiptPublic) -> dict[str, Any] | None:
    """What a client keeps of a checked receipt's promise to commit it (an omission claim shows
    it and the promised receipt, `Client.claim_omission`); the leaf is the receipt's own hash,
    never the node's word for it."""
    if doc.promise is None:
        return None
    leaf = "0x" + Receipt.from_json(doc.receipt).leaf().hex()
    return {"leaf": leaf, "receipt": doc.receipt, **doc.promise.model_dump()}
