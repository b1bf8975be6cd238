"""Review 17: the two newest commits (e68b8a3, 69a6bc9), adversarially.

Scope: `bindings.fill_nonce_gap` and its use in `Web3Chain.broadcast` (a re-broadcast commit fills
the nonces under it that the RPC counts neither pending nor mined and that the process does not
hold), against a hostile or lagging RPC (tests/rpc_proxy.py); the OpenAI drop-in's new checks:
`chat_input.unsigned_fields`, `answer_check.answer_bound` and the id check, the read-body path of
`SupernetAuth`, and `factory._fund`.

Found (both fixed; each test was a failing ``test_attack_*``):

- MEDIUM, FIXED (a gap filler replaces the node's own pending transaction):
  `fill_nonce_gap` (sdk/supernet/sdk/chain/bindings.py) takes "not counted by the RPC and not
  held by the process" as "nothing will ever use this nonce". But `_held` forgets a nonce as soon
  as its transaction was handed to the RPC (`release_nonce(sent=True)`): a vote, an availability
  answer or a redemption the node sent a moment or a fee spike ago, still in the pool, is neither
  held nor, for an RPC whose pending count lags or lies, counted. When the commit above it is
  broadcast again, `Web3Chain.broadcast` signs a 0-value self-transfer at that nonce, priced at
  today's fees and the RPC's tip suggestion (up to the tip ceiling): it replaces the real
  transaction in the pool and is mined in its place. The RPC alone could only delay that
  transaction (the node resends); with the filler the node itself signs its death.
  ``test_defence_a_gap_filler_never_replaces_the_nodes_own_pending_transaction``
  FIXED: every nonce the process hands to an RPC is remembered (`bindings._SENT`, by account,
  whatever client sent it) until the latest count passes it or `SENT_MEMORY_S` (600 s) goes by,
  and `fill_nonce_gap` never fills one.
- MEDIUM, FIXED (the answer bound does not bound what is held): `answer_bound` is applied to the text of
  parsed chunks only (`_Answer._part`); `CheckedStream._feed` appends every piece to
  ``self._buffer`` before any check, so an event stream that never sends a line end, or a plain
  (non-stream) completion, is held whole in the caller's memory, however long: the check fires
  only at the end of the body ("ends inside a line"), i.e. never for an endless one. Tool call
  arguments are not counted either (the docstring says they are), and the growing buffer is
  re-split on every piece (quadratic CPU on a long line sent in small pieces). For a plain
  completion the harm is LOW (the caller's httpx reads a non-streamed body whole anyway, but the
  check could stop it early). ``test_defence_an_endless_stream_line_is_refused_past_the_body_bound``,
  ``test_defence_an_endless_plain_completion_is_refused_past_the_body_bound``
  FIXED: what `CheckedStream` holds (a plain body, a stream's unfinished line) fails the answer
  once past `body_bound` (the text twice at 6 bytes a character, plus 64 KiB), and tool
  arguments count toward `answer_bound`.

Checked and holding:

- `unsigned_fields`: every field outside the signed input and the transport set is refused,
  including null ones; `n: 1.0` / `n: True` / a penalty of 0.0 or False pass, which the node's
  API reads as the neutral value (lax int/float), so nothing unsigned changes the run; a nested
  field (a message's extra keys, a content part's extra keys) is inside a signed field or dropped
  identically by the node's own `chat_task_input` (`test_defence_unsigned_fields_...`).
- `answer_bound`: a bool, a negative or a huge ``max_new_tokens`` falls back to 4096 tokens, and a
  short limit still allows 16 384 characters (an honest long-token answer is not refused).
- the id check: every chunk's ``id`` is gathered (an ``id: null`` chunk is "none" and fails);
  chunks without an id are honest (the node puts it on each).
- `_broadcast_before`: bounded (cleared at 256), in memory: after a restart the first
  re-broadcast fills nothing, the second does; a gap is filled at most 8 nonces per broadcast,
  and a filler at a mined nonce is refused by the pool ("nonce too low", no gas); a reserved
  nonce is skipped (review 16's test). A lying count can cost at most 8 fillers per commit.
- read, not made into tests (time): `SupernetAuth`'s read-body path checks a transport's loaded
  body at once (``hasattr(response, "_content")``); `factory._fund` refuses an inactive node and a
  closing channel before depositing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from chain_fixtures import Actors
from rpc_proxy import Forward, answer, rpc_proxy
from supernet.node.service.chain import Web3Chain
from supernet.node.service.ports import SignedCommit
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.bindings import MAX_PRIORITY_FEE, latest_base_fee, release_nonce
from supernet.sdk.client.answer import SignedCall
from supernet.sdk.openai_compat.answer_check import (
    AnswerMismatchError,
    CheckedStream,
    answer_bound,
    body_bound,
)
from supernet.sdk.openai_compat.chat_input import unsigned_fields
from web3.exceptions import TransactionNotFound

GWEI = 10**9
TASK = "0x" + "ab" * 32


def _url(c: Contracts) -> str:
    return str(c.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


# -- the node's gap filler ------------------------------------------------------------------------


@pytest.mark.anvil
def test_defence_a_gap_filler_never_replaces_the_nodes_own_pending_transaction(
    network: Contracts, actors: Actors
) -> None:
    """Harm: the node sent a transaction at nonce n (a vote, an availability answer, a redemption:
    here a 1-wei transfer signed as `build_signed` signs, the nonce mechanics are the same); it
    waits in the pool (a fee spike, a busy chain: Anvil with automine off). Its commit at n+1
    waits too and is broadcast again. The RPC's pending count lags (or lies) at n, its tip
    suggestion is high. `fill_nonce_gap` sees nonce n neither counted nor held and signs a 0-value
    self-transfer there, at a higher fee than the real one: the pool replaces the node's own
    transaction with the filler, which is what gets mined.

    Cause: sdk/supernet/sdk/chain/bindings.py `fill_nonce_gap` (``gap = [n for n in range(count,
    below) if n not in held]``): `_held` keeps reserved nonces only, a sent one goes at
    `release_nonce(sent=True)`; nothing remembers what the process sent and is not yet mined.

    Fix (by design): remember every nonce this process handed to the RPC (with its hash) until the
    latest count passes it, and never fill one of those; or fill only nonces under the latest
    count of a second, trusted read, priced no higher than the lowest fee the process sent at."""
    w3, node, other = network.w3, actors.node, actors.outsider
    n = w3.eth.get_transaction_count(node.address)
    base = latest_base_fee(w3)
    chain_id = w3.eth.chain_id

    def transfer(nonce: int, value: int) -> Any:
        return node.sign_transaction(
            {
                "to": other.address,
                "value": value,
                "nonce": nonce,
                "chainId": chain_id,
                "gas": 21_000,
                "maxFeePerGas": 2 * base + GWEI,
                "maxPriorityFeePerGas": GWEI,
            }
        )

    def lagging(req: dict[str, Any], _fwd: Forward) -> dict[str, Any] | None:
        p = req.get("params") or []
        if req["method"] == "eth_getTransactionCount" and str(p[0]).lower() == node.address.lower():
            return answer(req, hex(n))  # counts nothing in the pool (a lagging backend, or a lie)
        if req["method"] == "eth_maxPriorityFeePerGas":
            return answer(req, hex(MAX_PRIORITY_FEE))  # a "fee spike": within the tip ceiling
        return None

    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        real = transfer(n, 1)  # the node's own transaction, handed to the RPC (released as sent)
        real_hash = w3.eth.send_raw_transaction(real.raw_transaction)
        release_nonce(w3, node.address, n, sent=True)  # as every send path of the SDK does
        commit_tx = transfer(n + 1, 2)
        commit = SignedCommit("0x" + commit_tx.hash.hex(), bytes(commit_tx.raw_transaction), n + 1)
        with rpc_proxy(_url(network), lagging) as (url, _):
            chain = Web3Chain(Contracts.connect(url, network.deployment, node), node)

            async def twice() -> None:
                await chain.broadcast(commit)  # the first attempt
                await chain.broadcast(commit)  # again, after a wait that timed out

            asyncio.run(twice())
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        try:
            receipt = w3.eth.get_transaction_receipt(real_hash)
        except TransactionNotFound:
            receipt = None
        mined = w3.eth.get_block("latest", full_transactions=True)["transactions"]
        at_n = [t for t in mined if t["from"].lower() == node.address.lower() and t["nonce"] == n]
        assert receipt is not None, (
            f"the node's own transaction at nonce {n} was replaced by its gap filler: mined there is "
            f"{[(t['to'], t['value']) for t in at_n]}"
        )
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        w3.provider.make_request("anvil_removePoolTransactions", [node.address])  # type: ignore[arg-type]
        release_nonce(w3, node.address)


# -- the drop-in's answer bound -------------------------------------------------------------------


def _call(max_new_tokens: int) -> SignedCall:
    """What the user signed, as far as the stream reads it before its final check (the task id and
    the signed input); the request and domain are never reached on these paths."""
    task_input = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": max_new_tokens}
    return SignedCall(TASK, None, task_input, None)  # type: ignore[arg-type]


class _Endless:
    """A hostile node's body: ``head`` then ``filler`` pieces for ever (capped for the test),
    counting what the caller took."""

    def __init__(self, head: bytes, filler: bytes, cap: int) -> None:
        self.head, self.filler, self.cap, self.taken = head, filler, cap, 0

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        self.taken += len(self.head)
        while self.taken < self.cap:
            yield self.filler
            self.taken += len(self.filler)

    def close(self) -> None:
        pass


def _read_until_refused(stream: CheckedStream, source: _Endless) -> tuple[int, str]:
    try:
        for _ in stream:
            pass
    except AnswerMismatchError as exc:
        return source.taken, str(exc)
    return source.taken, "not refused"


def test_defence_an_endless_stream_line_is_refused_past_the_body_bound() -> None:
    """Harm: a node answers a stream whose one ``data:`` line never ends (a huge chunk, say a
    tool call's arguments): `CheckedStream` keeps every byte in its line buffer and checks nothing
    until a line end, so the caller's memory grows with whatever the node sends, past the signed
    token limit's bound (`answer_bound`, here 16 384 characters) by any amount.

    Cause: sdk/supernet/sdk/openai_compat/answer_check.py `CheckedStream._feed` (``self._buffer
    += piece`` before any size check; the bound counts parsed ``content`` only, in `_Answer._part`).

    Fix (by design): fail the answer once the buffered bytes (a partial line, or a plain body)
    pass `answer_bound` plus a fixed envelope allowance, before appending more."""
    call = _call(4)
    bound = answer_bound(call.task_input)
    head = b'data: {"id": "' + TASK.encode() + b'", "choices": [{"index": 0, "delta": {"content": "'
    source = _Endless(head, b"x" * 65_536, cap=64 * bound)
    stream = CheckedStream(source, call, True, lambda _r: None, {"content-type": "text/event-stream"})
    taken, why = _read_until_refused(stream, source)
    assert taken <= body_bound(bound) + 65_536, (  # the bound, and the piece that passed it
        f"the caller held {taken} bytes of one line ({taken // bound}x the {bound}-character bound) "
        f"before any check; then: {why}"
    )


def test_defence_an_endless_plain_completion_is_refused_past_the_body_bound() -> None:
    """Harm: the same for a plain (non-streamed) completion: the whole body is buffered, unbounded,
    and parsed only at its end; a node that sends without end holds the caller's memory without
    end (the bound on the answer's text applies only after the body is whole).

    Cause and fix: as above (`CheckedStream._feed`/`_end`)."""
    call = _call(4)
    bound = answer_bound(call.task_input)
    head = b'{"id": "' + TASK.encode() + b'", "choices": [{"index": 0, "message": {"content": "'
    source = _Endless(head, b"x" * 65_536, cap=64 * bound)
    stream = CheckedStream(source, call, False, lambda _r: None, {"content-type": "application/json"})
    taken, why = _read_until_refused(stream, source)
    assert taken <= body_bound(bound) + 65_536, (
        f"the caller held {taken} bytes of a plain completion ({taken // bound}x the bound) before "
        f"any check; then: {why}"
    )


# -- what held ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, refused",
    [
        ({"n": 1.0}, []),
        ({"n": True}, []),
        ({"presence_penalty": 0.0, "frequency_penalty": False}, []),
        ({"n": 2}, ["n"]),
        ({"n": None, "logit_bias": None}, ["logit_bias"]),
        ({"frequency_penalty": 0.5}, ["frequency_penalty"]),
        ({"reasoning_effort": "high", "stream_options": {"include_usage": True}}, ["reasoning_effort"]),
        ({"user": "u", "parallel_tool_calls": False, "supernet": {}}, []),
        ({"top_k": 1, "repetition_penalty": 1.3}, ["repetition_penalty", "top_k"]),
    ],
)
def test_defence_unsigned_fields_refuses_every_field_that_could_change_the_run(
    body: dict[str, Any], refused: list[str]
) -> None:
    """Every field outside the signed input and the transport set is named (null ones too); the
    accepted values of ``n`` and the penalties are those the node's API reads as neutral."""
    full = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, **body}
    assert unsigned_fields(full) == refused


@pytest.mark.parametrize("tokens", [True, -1, 0, 10**9, "8", None])
def test_defence_answer_bound_never_drops_below_the_floor(tokens: Any) -> None:
    """A strange ``max_new_tokens`` never makes the bound refuse an honest answer: the floor is
    16 384 characters, a non-int or a bool or a non-positive limit counts as 4096 tokens."""
    assert 16_384 <= answer_bound({"max_new_tokens": tokens}) <= 4096 * 1024
