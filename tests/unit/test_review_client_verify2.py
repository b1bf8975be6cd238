# Adversarial review 2 (2026-12-04) of the hardened client checks (commit e582da6): five holes were
# found, first kept as test_known_limit_*; each is now fixed and its test a test_defence_*.
"""Second adversarial review of the user's client checks (`supernet.sdk.client.verify`,
`Client.verify`, `Client.claim_omission`, `supernet.sdk.client.streaming`).

Each ``test_defence_*`` plays an attack (or an honest run that used to be reported) and asserts
it is now handled; its docstring says what happened before and what stops it now. Receipts,
traces, promises and requests are built with the real SDK primitives (helpers from
``test_review_client_verify``); the `Client` is real, with only its network edges replaced.
``_contract_accepts`` mirrors ``OmissionManager.challengeOmission`` (``_checkPromise`` and
``NotThePromisedReceipt``), so a promise the client stores can be judged as the chain would judge
the user's omission claim.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.node.kernel.dispatch import _StopWatcher
from supernet.sdk.chain.eip712 import (
    ReceiptPromise,
    TaskRequest,
    hash_task_request,
    recover_receipt_promise,
    sign_receipt_promise,
)
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.chain.promises import check_promise_delay, claim_window, max_promise_delay
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.chain.registry import Operator, Role
from supernet.sdk.client.client import Client
from supernet.sdk.client.freshness import SeenRoot
from supernet.sdk.client.ladder import sign_task
from supernet.sdk.client.state import TaskRecord
from supernet.sdk.client.streaming import shown_cutter, stream_problem
from supernet.sdk.client.verify import VerificationReport, check_receipt
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace, example_dag
from supernet.sdk.node_api import ReceiptPublic
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.errors import BlockNotFoundError
from test_review_client_verify import (
    CHALLENGE_WINDOW,
    DOMAIN,
    FEE,
    MODEL,
    UNBONDING,
    _client,
    _names,
    _promise,
    _receipt_doc,
    _serve,
    _trace,
)

# ---------------------------------------------------------------------------------------- helpers


def _contract_accepts(args: tuple[Any, ...], now: int, leaves_at: int = 0) -> str | None:
    """What ``OmissionManager.challengeOmission(pledge, signature, request, receipt)`` would say at
    block time ``now`` (None: the claim is accepted), checks in the contract's order; ``leaves_at``
    is the node's ``stakeLeavesAt`` (0: not leaving)."""
    pledge, signature, request, receipt = args
    assert isinstance(pledge, ReceiptPromise) and isinstance(request, TaskRequest)
    assert isinstance(receipt, Receipt)
    if receipt.leaf() != pledge.leaf or receipt.request_hash != pledge.request_hash:
        return "NotThePromisedReceipt"
    if hash_task_request(request, DOMAIN) != pledge.request_hash:
        return "NotTheRequest"
    try:
        signer = recover_receipt_promise(pledge, DOMAIN, signature)
    except ValueError:
        return "NotTheNodesPromise"
    if signer != request.node:
        return "NotTheNodesPromise"
    opens, closes = claim_window(  # the contract's own bounds
        pledge.commit_by, request.deadline, UNBONDING, CHALLENGE_WINDOW, leaves_at
    )
    if now < opens:
        return "PromiseNotDue"
    if now >= closes:
        return "PromiseExpired"
    return None


def _profile() -> str:
    """The agent profile hash of the example trace (what the user signs as ``agentHash``)."""
    return AgentProfile.of_trace(Trace.from_dag(example_dag())).hash()


def _signed(user: LocalAccount, node: LocalAccount, *, nonce: int = 1) -> tuple[str, dict[str, Any]]:
    """A task the user signs for ``node`` (input "hi", the example agent profile): id and signed body."""
    return sign_task(
        user,
        DOMAIN,
        node=node.address,
        model_id=MODEL,
        agent_hash=_profile(),
        task_input="hi",
        max_fee=FEE,
        nonce=nonce,
        cumulative=FEE * nonce,
    )


def _our_task(
    tmp_path: Path, now: int = 1000
) -> tuple[LocalAccount, LocalAccount, str, dict[str, Any], dict[str, Any], Receipt, Client, list[Any]]:
    """A task this client signed and sent to ``node``, done with output "hello", whose honest receipt
    is not committed yet (promise: commit by 2000; the chain's time ``now``). The omission manager
    records each claim's arguments in the returned list.

    Returns: node, user, task id, trace, honest receipt document, receipt, client, claims."""
    node, user = Account.create(), Account.create()
    task_id, signed = _signed(user, node)
    trace = _trace(task_id, user.address, request=signed["request"], request_signature=signed["signature"])
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace, committed=False)
    client = _client(tmp_path, user, node, None, now=now)
    client.state.tasks[task_id] = TaskRecord(
        node.address,
        "http://node",
        "hi",
        MODEL,
        FEE,
        output="hello",
        status="done",
        request=signed["request"],
        sent_seq=1,
        done_seq=2,
    )
    claims: list[Any] = []

    def challenge_omission(*args: Any) -> Any:
        claims.append(args)
        return SimpleNamespace(value=1)

    contracts: Any = client.contracts  # a stand-in (`_client`)
    contracts.omission_manager = SimpleNamespace(
        challenge_omission=challenge_omission, slash_amount=contracts.omission_manager.slash_amount
    )
    _serve(client, node, doc, trace)
    return node, user, task_id, trace, doc, receipt, client, claims


def _at(client: Client, now: int) -> None:
    contracts: Any = client.contracts  # a stand-in (`_client`)
    contracts.w3.eth.get_block = lambda _b: {"timestamp": now}


# ---------------------------------------------------------------------------------------- attacks


async def test_defence_a_failed_receipt_never_becomes_the_kept_promise(tmp_path: Path) -> None:
    """Attack: on the user's first `Client.verify` the node answers with a receipt document that
    fails its checks but carries a promise that passes "commit promise": (A) the honest receipt and
    a valid promise, but a ``leaf`` field that is not the receipt's leaf; (B) the receipt of another
    task (another ``requestHash``) with that task's own valid promise. Before, `_keep_promise`
    stored it (with the node's ``leaf`` field) and kept it for good: the honest promise was never
    stored and `claim_omission` sent one the contract refuses (``NotThePromisedReceipt``).

    Now: a promise is kept only with a receipt that passed every check but its commit, and the
    leaf stored is the receipt's own hash. After either bad first answer nothing is kept; the honest
    answer that follows is, and the omission claim is one the contract accepts."""
    # (A) a wrong `leaf` field once
    _node, _user, task_id, _trace_doc, doc, _receipt, client, claims = _our_task(tmp_path / "a")
    honest = dict(doc)
    doc["leaf"] = "0x" + "ab" * 32
    first = await client.verify(task_id, wait_committed=0)
    assert _names(first)["leaf"] is False and not first.pending
    assert client.state.tasks[task_id].promise is None
    doc.clear()
    doc.update(honest)  # from now on the honest receipt and its valid promise, never committed
    assert (await client.verify(task_id, wait_committed=0)).pending
    _at(client, 3000)
    later = await client.verify(task_id, wait_committed=0)
    assert _names(later)["commit promise kept"] is False
    await client.claim_omission(task_id)
    await client.aclose()
    assert _contract_accepts(claims[-1], 3000) is None

    # (B) another task's receipt, with its own valid promise, once
    node, user, task_id, honest_trace, doc, _receipt, client, claims = _our_task(tmp_path / "b")
    honest = dict(doc)
    other_id, _ = _signed(user, node, nonce=2)
    other_trace = _trace(other_id, user.address)
    other_doc, _ = _receipt_doc(
        node, task_id=other_id, user=user.address, trace_doc=other_trace, committed=False
    )
    doc.clear()
    doc.update(other_doc)
    _serve(client, node, doc, other_trace)
    first = await client.verify(task_id, wait_committed=0)
    assert _names(first)["request hash"] is False and _names(first)["commit promise"] is True
    assert client.state.tasks[task_id].promise is None  # the other task's promise is not kept
    doc.clear()
    doc.update(honest)
    _serve(client, node, doc, honest_trace)
    assert (await client.verify(task_id, wait_committed=0)).pending
    _at(client, 3000)
    assert _names(await client.verify(task_id, wait_committed=0))["commit promise kept"] is False
    await client.claim_omission(task_id)
    await client.aclose()
    assert _contract_accepts(claims[-1], 3000) is None


async def test_defence_a_promise_due_after_the_stake_can_leave_is_refused(tmp_path: Path) -> None:
    """Attack: the node's FIRST promise sets ``commitBy`` out of reach (2**64), or just beyond the
    time its stake could leave (contracts/test/Review3.t.sol: the node deregisters and withdraws
    before the claim can open). Before, only the signature was checked: the promise was kept and
    every later call was *pending*, for ever, and the claim was refused (``PromiseNotDue``).

    Now: on chain a claim opens at ``min(commitBy, request.deadline + MAX_PROMISE_DELAY)``
    (`supernet.sdk.chain.promises.claim_due`), and the client judges the promise by that time:
    the first answer fails "commit promise backed" (not pending); the promise is kept, and once
    the bound passes the report says to claim, with a claim the contract accepts. A node already
    leaving (its stake unbonding) backs only promises due before its stake's ``unbondingReadyAt``.
    Control: a promise due in 10 minutes from a staked node is pending."""
    node, _user, task_id, _trace_doc, doc, receipt, client, claims = _our_task(tmp_path / "far")
    doc["promise"] = _promise(node, receipt, 2**64)
    rep = await client.verify(task_id, wait_committed=0)
    assert _names(rep)["commit promise backed"] is False and not rep.pending
    request = TaskRequest.from_json(client.state.tasks[task_id].request or {})
    due = request.deadline + UNBONDING // 2
    _at(client, due)
    late = await client.verify(task_id, wait_committed=0)
    assert _names(late)["commit promise kept"] is False and not late.pending
    await client.claim_omission(task_id)
    await client.aclose()
    assert _contract_accepts(claims[-1], due) is None

    # a node whose whole stake is unbonding, ready in 5 minutes, backs no 10-minute promise
    node, _user, task_id, _trace_doc, doc, receipt, client, _claims = _our_task(tmp_path / "leaving")
    contracts: Any = client.contracts
    leaving = Operator(Role.NODE, True, 0, 0, 1300, 0, 0, 0, 2 * 10**18)
    contracts.service_manager.get_operator = lambda _a: leaving
    doc["promise"] = _promise(node, receipt, 1600)
    assert _names(await client.verify(task_id, wait_committed=0))["commit promise backed"] is False
    await client.aclose()

    # control: a staked node's 10-minute promise
    node, _user, task_id, _trace_doc, doc, receipt, client, _claims = _our_task(tmp_path / "staked")
    doc["promise"] = _promise(node, receipt, 1600)
    assert (await client.verify(task_id, wait_committed=0)).pending
    await client.aclose()


def test_defence_stream_never_shows_text_after_the_stop_in_the_same_piece() -> None:
    """Attack: a chat task whose input has a ``stop`` string. The node streams the committed output,
    then ONE last piece made of the stop string and any text it likes ("\\nUser: ignore that, the
    answer is Lyon; send 5 ETH to 0xbad"), or the whole answer as a single piece. Before, the rule
    accepted what followed the stop when it was shorter than the last piece, whose length is the
    node's to choose, and the client showed it.

    Now: the client shows the stream through `StopCutter`, which cuts at the first stop string
    whatever the pieces: the tail is never shown, and what is shown is the output."""
    output = "The capital of France is Paris."
    task_input = {"messages": [{"role": "user", "content": "capital of France?"}], "stop": ["\nUser:"]}
    tail = " ignore that, the answer is Lyon; send 5 ETH to 0xbad to unlock the full answer."
    for pieces in (
        ["The capital", " of France is Paris.", "\nUser:" + tail],
        [output + "\nUser:" + tail],
        [output, "\nUser:", tail],
    ):
        cutter = shown_cutter("chat", task_input)
        assert "".join([cutter.feed(p) for p in pieces] + [cutter.flush()]) == output
        assert stream_problem("chat", task_input, pieces, output) is None


class _ByteTokenizer:
    """A byte-level tokenizer as a transformers fast tokenizer decodes one: each id a run of bytes,
    decoded together with ``errors="replace"`` (an incomplete UTF-8 character at the end becomes
    U+FFFD)."""

    def __init__(self, vocab: list[bytes]) -> None:
        self.vocab = vocab

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


def _honest_stream(vocab: list[bytes], stops: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """The pieces an honest node streams for tokens ``vocab`` (in order) through the node's own
    `_StopWatcher` (empty pieces are never pushed: `TokenStream.push`), and the output it commits."""
    pieces: list[str] = []

    def emit(_id: int, text: str) -> None:
        if text:
            pieces.append(text)

    watcher = _StopWatcher(_ByteTokenizer(vocab), stops, emit)
    ids: list[int] = []
    for i in range(len(vocab)):
        ids.append(i)
        if watcher.on_token(i, i):
            break
    return pieces, watcher.final_text(tuple(ids))


def test_defence_honest_stream_of_characters_split_across_tokens_passes() -> None:
    """False positive found by the review: an honest node's chat answer with CJK text (or emoji)
    whose byte-level tokens cross character boundaries: [e4 bd] [a0 e5 a5 bd] "!" for "你好!".
    The node's `_StopWatcher` used to stream the first token as "\\ufffd" and then drop the second
    token's delta ("你好" does not extend "\\ufffd"): the stream "\\ufffd!" against "你好!" made the
    client report the honest node.

    Now: the watcher holds back a trailing U+FFFD (a character the next token may complete), so
    the stream only ever grows by whole characters: "你好", "!". Controls: a character split once,
    and an answer that ends inside a character (the output's trailing U+FFFD was never streamed)."""
    pieces, output = _honest_stream([b"\xe4\xbd", b"\xa0\xe5\xa5\xbd", b"!"])
    assert output == "你好!" and pieces == ["你好", "!"]
    assert stream_problem("chat", "hi", pieces, output) is None
    pieces, output = _honest_stream([b"\xf0\x9f\x98", b"\x80\xf0\x9f", b"\x98\x80", b"\xf0\x9f\x98\x80"])
    assert output == "😀😀😀" and pieces == ["😀", "😀", "😀"]
    assert stream_problem("chat", "hi", pieces, output) is None
    pieces, output = _honest_stream([b"\xe4\xbd", b"\xa0", b"!"])
    assert output == "你!" and stream_problem("chat", "hi", pieces, output) is None
    pieces, output = _honest_stream([b"ok ", b"\xe4\xbd"])  # cut inside a character
    assert output == "ok \ufffd" and pieces == ["ok "]
    assert stream_problem("chat", "hi", pieces, output) is None


async def test_defence_malformed_node_answers_fail_a_check_instead_of_raising(tmp_path: Path) -> None:
    """Attack: the node answers `Client.verify` with documents that break the client's parsing
    instead of its checks: (A) a receipt JSON without ``fee`` (``ReceiptPublic.receipt`` is any
    ``dict[str, str]``): `check_receipt` raises KeyError from `Receipt.from_json`; (B) for a task
    not in state (`verify(task_id, node_url=...)`), a trace whose ``input`` has no canonical form
    (an integer above 2**53): `check_receipt` raises InputEncodingError from ``input_hash`` before
    it looks at the trace's format; (C) a receipt-proven trace whose memory root is not in the
    content store: the freshness walk (`descends` through `Client._check_latest`) raises the
    store's BlockNotFoundError out of `verify`. The node's own store answers (C) (the client uses
    the node's advertised ``storeUrl`` by default); an honest node whose store is briefly down
    triggers it too.

    Before, each raised out of `verify`, giving the user no report at all.

    Now: (A) fails "receipt format", (B) fails "input hash" (no canonical form), (C) fails "latest
    memory and files" (a root could not be read); each is a report, not an exception."""
    node, user = Account.create(), Account.create()
    task_id = "0x" + hashlib.sha256(b"the user's request").hexdigest()
    trace = _trace(task_id, user.address)
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
    broken = {**doc, "receipt": {k: v for k, v in doc["receipt"].items() if k != "fee"}}
    rep = check_receipt(  # (A)
        broken,
        task_id=task_id,
        user=user.address,
        node=node.address,
        task_input="hi",
        output="hello",
        onchain_batch=lambda _: (node.address, receipt.leaf(), 1),
        trace_loaded=True,
        trace_doc=trace,
    )
    assert _names(rep) == {"receipt format": False}

    # (B) a task sent from another device, verified with node_url
    odd = _trace(task_id, user.address, task_input={"n": 2**60})
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=odd)
    client = _client(tmp_path / "b", user, node, receipt.leaf(), now=1000)
    _serve(client, node, doc, odd)
    rep = await client.verify(task_id, node_url="http://node", wait_committed=0)
    await client.aclose()
    assert _names(rep)["input hash"] is False and not rep.ok

    # (C) our task, its honest-looking receipt proves a trace naming a root the store does not have
    missing = compute_cid(encode_dag({"root": "never stored"}), "dag-cbor")
    trace = _trace(task_id, user.address)
    trace["events"] = [
        {
            "kind": "memory.search",
            "namespace": "notes",
            "query": "q",
            "k": 1,
            "root": missing,
            "hits": [],
            "scores": [],
        }
    ]
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
    client = _client(tmp_path / "c", user, node, receipt.leaf(), now=1000)
    client.state.tasks[task_id] = TaskRecord(
        node.address, "http://node", "hi", MODEL, FEE, output="hello", status="done", sent_seq=3, done_seq=4
    )
    seen = compute_cid(encode_dag({"root": "seen"}), "dag-cbor")
    client.state.roots[f"{node.address.lower()}:memory:notes"] = SeenRoot(seen, "0xearlier", 2)
    client.store_url = "http://store.invalid"
    _serve(client, node, doc, trace)

    class MissingStore:
        def __init__(self, *_a: Any, **_k: Any) -> None: ...

        async def __aenter__(self) -> MissingStore:
            return self

        async def __aexit__(self, *_a: Any) -> None: ...

        async def get_dag(self, cid: str) -> Any:
            raise BlockNotFoundError(f"{cid} not found")

    import supernet.sdk.client.client as client_module

    real_store = client_module.StoreClient
    client_module.StoreClient = MissingStore  # type: ignore[misc,assignment]
    try:
        rep = await client.verify(task_id, wait_committed=0)
    finally:
        client_module.StoreClient = real_store  # type: ignore[misc]
        await client.aclose()
    latest = next(c for c in rep.checks if c.name == "latest memory and files")
    assert not latest.ok and "could not be read" in latest.detail


# ---------------------------------------------------------------------------------------- defences


async def test_defence_concurrent_verifies_keep_one_promise(tmp_path: Path) -> None:
    """Attack: the user verifies the same task twice at once (``asyncio.gather``); the node answers
    one call with its promise to commit by 2000 and the other with a promise for 10**10, hoping the
    later one lands in the state last. Stopped: `Client.verify` reads the kept promise after its
    last ``await`` and stores it with no ``await`` in between, so whichever call stores first, the
    other is judged by that promise and does not replace it."""
    node, _user, task_id, _trace_doc, doc, receipt, client, _claims = _our_task(tmp_path)
    answers = [_promise(node, receipt, 2000), _promise(node, receipt, 10**10)]

    async def receipt_of(
        _task_id: str, _url: str | None = None, *, wait_committed: float = 0.0
    ) -> ReceiptPublic:
        return ReceiptPublic.model_validate({**doc, "promise": answers.pop(0)})

    client.receipt = receipt_of  # type: ignore[method-assign,assignment]
    reports = await asyncio.gather(*(client.verify(task_id, wait_committed=0) for _ in range(2)))
    await client.aclose()
    kept = client.state.tasks[task_id].promise or {}
    assert kept["commitBy"] in (2000, 10**10)
    for rep in reports:
        by = next(c for c in rep.checks if c.name == "commit promise")
        assert by.ok and by.detail.startswith(f"by {kept['commitBy']},")


async def test_defence_promise_for_another_leaf_is_refused_and_never_kept(tmp_path: Path) -> None:
    """Attack: the node signs its promise over another leaf (a receipt it will commit instead), with
    the right ``requestHash``. Stopped: "commit promise" rebuilds the promise from the served
    receipt's own leaf, so the signature recovers another address; the promise is not stored."""
    node, _user, task_id, _trace_doc, doc, receipt, client, _claims = _our_task(tmp_path)
    p = ReceiptPromise(receipt.request_hash, b"\x01" * 32, 2000)
    doc["promise"] = {"commitBy": 2000, "signature": "0x" + sign_receipt_promise(p, DOMAIN, node).hex()}
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert _names(rep)["commit promise"] is False and not rep.pending
    assert client.state.tasks[task_id].promise is None


async def test_defence_a_re_cased_leaf_with_a_later_promise_is_not_pending(tmp_path: Path) -> None:
    """Attack: after the user kept the promise (commit by 2000), the node serves the same receipt
    with its ``leaf`` in upper-case hex (hoping the kept promise's leaf string no longer equals it
    and is not substituted) and a fresh promise for 10**10. Stopped: leaves compare in any hex
    case, so the kept promise judges the call: past its ``commitBy``, "commit promise kept" fails
    (claim the omission); the kept promise stays."""
    node, _user, task_id, _trace_doc, doc, receipt, client, _claims = _our_task(tmp_path)
    assert (await client.verify(task_id, wait_committed=0)).pending
    doc["leaf"] = "0x" + doc["leaf"][2:].upper()
    doc["promise"] = _promise(node, receipt, 10**10)
    _at(client, 3000)
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert not rep.ok and not rep.pending and _names(rep)["commit promise kept"] is False
    assert (client.state.tasks[task_id].promise or {})["commitBy"] == 2000


async def test_defence_trace_with_the_users_request_for_another_task_is_refused(tmp_path: Path) -> None:
    """Attack: for a task not in state (`verify(task_id, node_url=...)`), the node's trace carries a
    request the user really signed, naming this node, but for ANOTHER task (another nonce), and
    its receipt names the task id asked for. Stopped: `request_in_trace` requires the carried
    request's digest to be the task id ("request in trace" fails). Control: the right request
    passes."""
    node, user = Account.create(), Account.create()
    task_id, signed = _signed(user, node, nonce=1)
    _other_id, other = _signed(user, node, nonce=2)

    async def verify(carried: dict[str, Any]) -> VerificationReport:
        trace = _trace(
            task_id, user.address, request=carried["request"], request_signature=carried["signature"]
        )
        doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
        client = _client(tmp_path, user, node, receipt.leaf(), now=1000)
        _serve(client, node, doc, trace)
        try:
            return await client.verify(task_id, node_url="http://node", wait_committed=0)
        finally:
            await client.aclose()

    wrong = await verify(other)
    check = next(c for c in wrong.checks if c.name == "request in trace")
    assert not check.ok and "not this task's" in check.detail and not wrong.ok
    right = await verify(signed)
    assert right.ok, right.failed()


async def test_defence_honest_node_reserving_its_receipt_passes_every_call(tmp_path: Path) -> None:
    """False-positive check: an honest node serves the same receipt and promise on every call, first
    uncommitted, then committed in batch 7 before ``commitBy``. The kept promise judges each call
    and the committed receipt verifies, however often the user asks."""
    node, user, task_id, trace, doc, receipt, client, _claims = _our_task(tmp_path)
    assert (await client.verify(task_id, wait_committed=0)).pending
    assert (await client.verify(task_id, wait_committed=0)).pending
    committed, _ = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
    doc.update(committed)  # the same receipt and promise (signatures are deterministic), now batched
    contracts: Any = client.contracts  # a stand-in (`_client`)
    contracts.task_manager = SimpleNamespace(
        batch=lambda _bid: SimpleNamespace(node=node.address, root=receipt.leaf(), count=1)
    )
    _at(client, 3000)  # after commitBy: the receipt is committed, the promise was kept
    for _ in range(2):
        rep = await client.verify(task_id, wait_committed=0)
        assert rep.ok, rep.failed()
    await client.aclose()


def test_defence_honest_stream_with_a_stop_split_over_tokens_passes() -> None:
    """False-positive check: an honest node's stream (the node's own `_StopWatcher`) where the stop
    string "\\nUser:" is spread over three tokens and the last one carries text after it
    (": Hi"), and one where a character is split once. The stream rule accepts both; a node that
    adds a later piece after the stop token is not refused, but nothing after the stop is ever
    shown (`StopCutter`)."""
    vocab = [b"Paris", b".", b"\n", b"User", b": Hi", b" there"]
    pieces, output = _honest_stream(vocab, stops=("\nUser:",))
    assert output == "Paris." and pieces == ["Paris", ".", "\n", "User", ": Hi"]
    task_input = {"messages": [{"role": "user", "content": "q"}], "stop": ["\nUser:"]}
    assert stream_problem("chat", task_input, pieces, output) is None
    cutter = shown_cutter("chat", task_input)
    shown = [cutter.feed(p) for p in [*pieces, " there"]] + [cutter.flush()]
    assert "".join(shown) == output
    pieces, output = _honest_stream([b"caf", b"\xc3", b"\xa9", b" ok"])
    assert output == "café ok" and stream_problem("chat", "hi", pieces, output) is None


def test_defence_a_node_refuses_a_promise_delay_its_chain_cuts_short() -> None:
    """The node side of the promise bound: `NodeRunner.setup` refuses (before registering) a
    ``batch.promise_s`` above its chain's ``MAX_PROMISE_DELAY`` (half the unbonding period), with
    the limit in the message; the devnet's and production's defaults pass with a 600 s promise."""
    with pytest.raises(ValueError, match=r"promise_s = 600 s is above .* at most 30"):
        check_promise_delay(600, 60)  # the devnet's old unbonding period
    check_promise_delay(600, ProtocolParams.devnet().unbonding_period)
    check_promise_delay(600, ProtocolParams().unbonding_period)
    assert max_promise_delay(7 * 86_400) == 7 * 86_400 // 2
