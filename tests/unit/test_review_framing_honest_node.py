"""Adversarial review: can a malicious USER (or a user with a validator) get an HONEST node
accused, robbed of its fee, or judged faulty, through what the user controls (the input's
spelling, the signed request and where it is sent, its deadline, stop strings, budgets)?

Everything here runs the real code of the side under attack without a model forward pass: the
node's admission (`Authenticator`, an in-memory node database, a stub executor), the node's stop
watcher (`dispatch._StopWatcher`) and the validator's shape / stop-string checks
(`llm_check.check_shape`) with the real SmolLM2 tokenizer when cached, and the user's client
verification (`supernet.sdk.client.verify.check_receipt`) on what an honest node returns.

``test_defence_*``: the honest party is not harmed. ``test_known_limit_*``: a real hole, asserted
as it behaves today; its docstring says who is harmed, how, and the fix proposed.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from supernet.node.kernel.dispatch import _StopWatcher, stop_text
from supernet.node.service.auth import Authenticator
from supernet.node.service.db import Database
from supernet.node.service.errors import DeadlinePassedError, PaymentError, ReplayError, WrongNodeError
from supernet.node.service.schemas import SignedTask
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request
from supernet.sdk.chain.receipts import (
    Receipt,
    input_hash,
    normal_input,
    output_hash,
    sign_receipt,
    trace_hash,
)
from supernet.sdk.client.verify import check_receipt
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.validator.llm_check import check_shape
from supernet.validator.trace_view import LLMCall

from tests.node_fixtures import signed_task

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "44" * 20)
USER = Account.from_key("0x" + "b1" * 32)
NODE_A = Account.from_key("0x" + "b2" * 32)
NODE_B = Account.from_key("0x" + "b3" * 32)
MODEL_ID = "0x" + "11" * 32
AGENT_HASH = "0x" + "22" * 32
FEE = 1000
SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"


# -- helpers: a node's admission with a stub executor -------------------------------------------------


class _Executor:
    """What admission asks of the node's executor: served models and the chat agent's profile hash."""

    def model_ids(self) -> list[str]:
        return [MODEL_ID]

    def agent_hash(self, agent: str) -> str | None:
        return AGENT_HASH if agent == "chat" else None

    def agent_input_schema(self, agent: str) -> None:
        return None


def _auth(node: Any, clock: float = 1_000.0) -> Authenticator:
    return Authenticator(
        node.address, DOMAIN, _Executor(), Database.open(Path(":memory:")), None, FEE, clock=lambda: clock
    )


def _signed(
    node: Any, task_input: Any, *, nonce: int = 1, cumulative: int = FEE, deadline: int = 10_000
) -> tuple[str, SignedTask]:
    body = signed_task(
        USER,
        node.address,
        DOMAIN,
        task_input,
        cumulative=cumulative,
        fee=FEE,
        nonce=nonce,
        deadline=deadline,
        model_id=MODEL_ID,
        agent_hash=AGENT_HASH,
    )
    auth = {k: body[k] for k in ("request", "signature", "voucher")}  # without the task's agent and input
    req = TaskRequest.from_json(body["request"])
    return "0x" + hash_task_request(req, DOMAIN).hex(), SignedTask.model_validate(auth)


# -- replays of signed requests ----------------------------------------------------------------------


async def test_defence_a_request_signed_for_one_node_is_refused_by_another() -> None:
    """Attack: a user (or anyone who saw the request on node A's API or in a manifest) sends the
    same signed request and voucher to node B. Had B run it, its receipt would carry a request
    whose ``node`` is A: every validator's receipt check flags that (the node field is the
    signer's), B would be slashed for work it did honestly, and the voucher (signed for A's
    channel) would never redeem for B: unpaid work plus a slash. Defence: admission refuses any
    request whose ``node`` is not this node before anything is stored or run (`_check_shape`)."""
    _, signed = _signed(NODE_A, "hi")
    with pytest.raises(WrongNodeError):
        await _auth(NODE_B).admit(signed, agent="chat", task_input="hi")
    task = await _auth(NODE_A).admit(signed, agent="chat", task_input="hi")  # control: its own node runs it
    assert task.fee == FEE


async def test_defence_a_replayed_request_to_its_own_node_is_refused_not_run_twice() -> None:
    """Attack: the user replays an admitted request (same task id) to the same node, or re-signs
    the same nonce with a fresh input, hoping the node runs twice for one fee (unpaid work at scale)
    or commits two receipts for one request id (a duplicate a validator might read as a fault).
    Defence: the task id is unique in the node's database and nonces must increase; the voucher
    must be exactly the billed total plus this fee, so a voucher reused for a second task pays
    nothing and is refused."""
    auth = _auth(NODE_A)
    _, first = _signed(NODE_A, "hi", nonce=1, cumulative=FEE)
    await auth.admit(first, agent="chat", task_input="hi")
    with pytest.raises(ReplayError):
        await auth.admit(first, agent="chat", task_input="hi")
    _, same_nonce = _signed(NODE_A, "other", nonce=1, cumulative=2 * FEE)
    with pytest.raises(ReplayError):
        await auth.admit(same_nonce, agent="chat", task_input="other")
    _, old_voucher = _signed(NODE_A, "other", nonce=2, cumulative=FEE)  # the first task's voucher again
    with pytest.raises(PaymentError):
        await auth.admit(old_voucher, agent="chat", task_input="other")
    _, paid = _signed(NODE_A, "other", nonce=2, cumulative=2 * FEE)
    assert (await auth.admit(paid, agent="chat", task_input="other")).nonce == 2


async def test_defence_a_request_sent_after_its_deadline_is_refused_before_any_work() -> None:
    """Attack: timing around the deadline. The user sends a request whose deadline has just
    passed, hoping the node runs it and then cannot bill it, or promises a receipt whose omission
    claim opens before the node can commit. Defence: admission refuses a passed deadline (nothing
    stored, nothing run); a task queued past it is refused at its start, and one that ends too
    close to the latest time its promise may fall due is failed unbilled (`Worker._finish`)."""
    _, signed = _signed(NODE_A, "hi", deadline=999)
    with pytest.raises(DeadlinePassedError):
        await _auth(NODE_A, clock=1_000.0).admit(signed, agent="chat", task_input="hi")


# -- the user's client verification -------------------------------------------------------------------


def _honest_receipt(task_input: Any, output: str) -> tuple[dict[str, Any], str]:
    """What an honest node returns for ``task_input``: the receipt of its normal form (the node
    runs and hashes the value the hash names, `routes_tasks`), signed, with its trace CID."""
    cid = compute_cid(encode_dag({"trace": 1}), "dag-cbor")
    task_id = "0x" + hashlib.sha256(b"honest task").hexdigest()
    receipt = Receipt(
        request_hash=bytes.fromhex(task_id[2:]),
        user=USER.address,
        model_id=bytes.fromhex(MODEL_ID[2:]),
        input_hash=input_hash(normal_input(task_input)),
        output_hash=output_hash(output),
        trace_hash=trace_hash(cid),
        fee=FEE,
    )
    doc = {
        "receipt": receipt.to_json(),
        "leaf": "0x" + receipt.leaf().hex(),
        "signature": "0x" + sign_receipt(receipt, NODE_A).hex(),
        "traceCid": cid,
        "batch": None,
    }
    return doc, task_id


def test_defence_client_verify_passes_an_honest_receipt_for_an_input_spelling_an_integer_as_a_float() -> None:
    """Attack (found by this review, fixed): the user's own client judged an honest node's receipt
    faulty for an input spelling an integral number as a float, e.g. ``"temperature": 1.0``.

    The signed ``inputHash`` is the RFC 8785 hash, where ``1.0`` and ``1`` hash alike, so the node
    admits the request, runs its normal form and commits a correct receipt. The client remembered
    the input as given, and `check_receipt` compared it through `binding.input_hash_or_reason`,
    which gives a non-normal input a *reason* instead of a hash (right for a trace's input: a node
    must not run 8.0 for a signed 8; wrong for the user's own value). So `supernet task verify`
    reported the honest node as answering another input, and the client never kept its promise.

    Defence: `check_receipt` compares the hash the user's value signs (`input_hash`); a trace's
    input is still held to its normal form with the trace's fields; and `Client._prepare_paid`
    remembers the normal form, what the node runs."""
    sent = {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "max_new_tokens": 8}
    assert input_hash(sent) == input_hash(normal_input(sent))  # one signed hash: the node admits it
    doc, task_id = _honest_receipt(sent, "hello")

    def report(task_input: Any) -> dict[str, bool]:
        rep = check_receipt(
            doc,
            task_id=task_id,
            user=USER.address,
            node=NODE_A.address,
            task_input=task_input,
            output="hello",
            onchain_batch=lambda _: ("0x" + "00" * 20, b"", 0),
            trace_loaded=None,
        )
        return {c.name: c.ok for c in rep.checks}

    as_sent = report(sent)  # a record from before the client kept the normal form
    assert as_sent["input hash"] is True
    assert as_sent["node signature"] and as_sent["output hash"] and as_sent["request hash"]
    assert report(normal_input(sent))["input hash"] is True  # what the client remembers now
    assert report({"x": float("nan")})["input hash"] is False  # no canonical form: a clear failure


def test_defence_client_verify_of_an_honest_receipt_with_unicode_and_escapes_passes() -> None:
    """Attack: an input and output full of what encodings disagree on (NUL, CR LF, U+2028, astral
    characters, combining marks, a BOM, RTL overrides), hoping the client's hash of what it sent
    or received differs from the node's (a false failure the user could publish). Defence: both
    sides hash RFC 8785 JSON of the same value (no Unicode normalisation) and the UTF-8 bytes of
    the output string: the honest receipt passes every check but the pending commit."""
    text = "a\x00b\r\n\u2028c\U0001f600e\u0301\ufeff\u202eZ"
    sent = {"messages": [{"role": "user", "content": text}], "stop": [text[-3:]]}
    doc, task_id = _honest_receipt(sent, text)
    rep = check_receipt(
        doc,
        task_id=task_id,
        user=USER.address.lower(),  # another spelling of the user's address
        node=NODE_A.address.lower(),
        task_input=sent,
        output=text,
        onchain_batch=lambda _: ("0x" + "00" * 20, b"", 0),
        trace_loaded=None,
        model_id=MODEL_ID.upper().replace("0X", "0x"),
        max_fee=FEE,
        fee=FEE,
    )
    assert rep.pending, rep.failed()


# -- stop strings: the node's watcher against the validator's shape check -----------------------------


class _CharTokenizer:
    """A tokenizer of one character per id (id = code point); id 0 is a special token."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))


def _call(ids: tuple[int, ...], finish: str, max_new: int, stops: tuple[str, ...]) -> LLMCall:
    return LLMCall(
        call=0,
        model_id=MODEL_ID,
        prompt_ids=(1,),
        output_ids=ids,
        logprobs=(),
        fingerprints=None,
        temperature=0.0,
        top_p=1.0,
        seed=0,
        max_new_tokens=max_new,
        stop_token_ids=(2,),
        finish_reason=finish,
        text=None,
        stop_strings=stops,
    )


def _honest_run(
    tok: Any, ids: list[int], stops: tuple[str, ...], max_new: int
) -> tuple[tuple[int, ...], str]:
    """The honest engine under the node's `_StopWatcher`: generate ``ids`` until a stop string
    appears or a stop token (id 2: ``<|im_end|>`` in SmolLM2) is drawn (finish "stop"), or the
    budget is spent (finish "length")."""
    watcher = _StopWatcher(tok, stops, lambda _i, _t: None)
    out: list[int] = []
    for i, t in enumerate(ids[:max_new]):
        out.append(t)
        if watcher.on_token(i, t) or t == 2:
            return tuple(out), "stop"
    return tuple(out), "length"


def test_defence_empty_and_whitespace_stop_strings_and_a_stop_on_the_last_budgeted_token() -> None:
    """Attack: stop strings at their edges: the empty string (in every text, so the node stops
    after one token), a stop string that only a special token separates (skipped in the text), and
    a stop string completed exactly by the last token the budget allows (the engine reports "stop":
    the kernel's watcher ends the call at that token whatever the budget, `types.finish_reason_of`).
    A validator that searched text with special tokens kept would flag the honest node. Defence:
    one `stop_text` rule on both sides, one finish rule (so the other reason there is a finding:
    the node does not choose what the agent reads); the past-stop check looks only at proper
    prefixes."""
    tok = _CharTokenizer()
    cases = [
        ([ord(c) for c in "hello"], ("",), 5),
        ([ord("a"), 0, ord("b"), ord("c")], ("ab",), 4),  # "ab" across a skipped special token
        ([ord(c) for c in "xyzEND"], ("END",), 6),  # completed by the last budgeted token
        ([ord(c) for c in "a \t\nb"], ("\t\n",), 5),
    ]
    for ids, stops, budget in cases:
        out, finish = _honest_run(tok, ids, stops, budget)
        decode = lambda xs: stop_text(tok, xs)  # noqa: E731
        assert check_shape(_call(out, finish, budget, stops), (2,), stops, decode) == [], (ids, stops)
        other = "length" if finish == "stop" else "stop"  # one honest reason: the other is a finding
        flagged = check_shape(_call(out, other, budget, stops), (2,), stops, decode)
        assert [f.check.value for f in flagged] == ["llm.finish"], (ids, stops, other)


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="SmolLM2 not cached")
def test_defence_stop_strings_on_real_tokens_never_flag_the_honest_stop() -> None:
    """Attack: a user picks stop strings that straddle the byte-level tokenizer's token boundaries
    and multi-byte characters (CJK, emoji, combining marks, U+FFFD itself, a lone space) and
    lets the node run greedy text through them, hoping the validator's prefix bisection
    (`_past_stop_string`) places the first stop elsewhere than the node's token-by-token watcher
    (an ``llm.finish`` finding: "tokens past a stop string") or finds no stop where the node
    stopped ("truncated"). Defence: both decode with `stop_text` (special tokens skipped); a
    prefix's text is a prefix of the longer text except for a trailing U+FFFD, which the
    validator scans linearly: every honest stop verifies, over every candidate stop string."""
    from supernet.node.llm.tokenizer import Tokenizer

    tok = Tokenizer(SMOLLM2)
    texts = [
        "The cat 中文字 sat 😀😀 on the mat.\n\nDone<|im_end|> after",
        "e\u0301e\u0301 ëë  double  spaces\tand\ttabs 🇫🇷 flags ∑∫",
        "中中中文文😀a😀b",
    ]
    checked = 0
    for text in texts:
        ids = list(tok.encode(text))
        decoded = stop_text(tok, ids)
        stops_pool = sorted({decoded[i : i + n] for n in (1, 2, 3) for i in range(len(decoded) - n + 1)})
        stops_pool += ["\ufffd", " ", "", "😀a", "\u0301"]
        for stops in itertools.chain(((s,) for s in stops_pool), [tuple(stops_pool[:5])]):
            budget = len(ids)
            out, finish = _honest_run(tok, ids, stops, budget)
            found = check_shape(_call(out, finish, budget, stops), (2,), stops, lambda xs: stop_text(tok, xs))
            assert found == [], (text[:20], stops, found)
            checked += 1
    assert checked > 150


async def test_defence_uint256_edges_of_the_signed_request_neither_crash_nor_wedge_the_node() -> None:
    """Attack: the EIP-712 request's integers are uint256; the node's database keeps the deadline
    as a 64-bit INTEGER. A user signs a deadline past 2^63 (hoping the insert fails half-way, or
    a restart's ``deadline < now`` comparison crashes `Worker.resume` for every queued task) and
    a nonce near 2^255 (hoping later honest nonces wrap). Defence: the API schema bounds the
    deadline below 2^63 (a 422 before admission), nonces are stored as decimal text and compared
    as Python integers, so the huge nonce is admitted and orders correctly."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _signed(NODE_A, "hi", deadline=2**70)
    auth = _auth(NODE_A)
    _, big = _signed(NODE_A, "hi", nonce=2**255)
    await auth.admit(big, agent="chat", task_input="hi")
    assert auth.db.last_nonce(USER.address) == 2**255
    _, lower = _signed(NODE_A, "x", nonce=2**255 - 1, cumulative=2 * FEE)
    with pytest.raises(ReplayError):
        await auth.admit(lower, agent="chat", task_input="x")
