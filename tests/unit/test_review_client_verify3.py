"""Third adversarial review of the user's client (`supernet.sdk.client.Client`: discovery and
failover, the voucher ladder, reading results, the token stream, `Client.verify`) against a
HOSTILE NODE, or a node and an ally.

Scope: what a node (or a server in front of one) can make the user's client do through its HTTP
answers alone: pay for what it did not give, sign something the user did not mean (vouchers
proved with another node's voucher, read grants for another node), hang, hold unbounded memory,
or stop using the network. Not repeated (earlier reviews, see their docstrings): the receipt,
trace, promise and stream-text checks (test_review_client_verify.py, test_review_client_verify2.py),
the promise bounds (test_review_promises.py, test_review_leaving_node.py), framing an honest node
(test_review_framing*.py), 5xx failover before and after payment (tests/integration/
test_client_failover.py).

Real parts: a real Anvil with the compiled contracts (``chain``: the nodes are registered and
staked on it, the user's deposits and the client's chain reads are real), the node service's real
app (admission, database, receipts, promises, read grants, SSE) served by uvicorn on real TCP
(`NodeService.run_forever`), the embedded content store, and the real `Client` with its real
`httpx` transport. FAKES, named: the node's kernel is the FAKE executor of tests/node_fixtures.py
(the model plays no part in what is checked here) and its chain the FAKE chain there (its
deposits are set to the user's on-chain deposit; the domain is the deployment's). The hostile
node is the real app behind `_front`, an ASGI wrapper that replaces one answer's bytes or their
pace (a node's own code is the node's to change).

Found:

1. MEDIUM — a node holds `Client.verify` (and every other read: `task`, `receipt`, discovery's
   `node_info` after the probe, `_sync_account`) for as long as it likes, whatever ``timeout``
   the client was given (`test_defence_a_node_dripping_its_answer_fails_verify_at_its_timeout`).
   `Client.__init__` passes ``timeout`` to ``httpx.AsyncClient``, whose timeouts are per network
   operation: a read times out only when no byte comes for ``timeout`` seconds. A node that sends
   its receipt one byte every 0.4 s keeps a ``timeout=2`` client in `verify` indefinitely (the test
   gives up after 8 s; the 1.5 KB document would take ~10 minutes, and a node can pad it forever).
   `supernet task verify` and `task submit` then never end; a script waiting on `verify` before
   its next step stalls (sdk/supernet/sdk/client/client.py, `Client.__init__` and `_get` /
   `receipt` / `task`). Fix by design: a deadline for the whole exchange (``asyncio.timeout``
   around each request and its body, or an httpx transport that enforces a total), as the
   content-store reads already have (`StoreClient`, "one deadline").
   FIXED: every request of the client (but the event stream's) goes through `Client._request`,
   which reads the answer whole within one ``asyncio.timeout`` of ``timeout`` (or the probe's),
   and a deadline passed is a `NodeUnreachableError` (a `ClientError`) naming the node and the
   deadline.
2. MEDIUM — a node's answer is read whole into memory, whatever its size
   (`test_defence_a_node_answering_a_huge_body_is_refused_past_the_bound`): `answer()` calls
   ``resp.json()`` on a body httpx has read completely (client.py `_get`, `receipt`, `task`;
   types.py `answer`).
   A receipt answer streamed without a length (chunked) of 48 MiB is taken in full, and nothing
   stops 48 GiB; honest answers are bounded by the protocol (an output fits a trace of
   `MAX_TRACE_BYTES` = 384 KiB; a receipt, proof and promise are a few KB). Fix: stream each
   answer (``http.stream``) and refuse past a bound of a few MiB (the drop-in already bounds its
   answers: `openai_compat.answer_facts` ``body_bound``).
   FIXED: `Client._request` streams each answer through `types.read_bounded`, refusing more than
   `MAX_ANSWER_BYTES` (4 MiB, past the largest honest answer: a task document whose output fits
   `MAX_TRACE_BYTES`) with a `ClientError` naming the node; an event stream's line or event is held
   to the same bound (`streaming.sse_events`).
3. MEDIUM — a node's token stream is followed without bound
   (`test_defence_a_token_stream_past_the_signed_budget_is_cut_at_the_budget`): `Client._follow`
   (and `TaskStream.__aiter__`) append every ``token`` event to ``streamed`` and show it, until the
   node ends the stream; the read timeout (60 s) is reset by every event or ping. The signed
   profile bounds what an honest stream can carry (at most ``max_llm_tokens`` tokens; the chat
   agent's text is its output, which fits `MAX_TRACE_BYTES`), yet 10,000 events of 50 characters
   (500 KB; FAKE_PROFILE allows 8,192 tokens in all, 512 in its one chat call) are all kept and
   shown before the mismatch is raised at the end; a node that pings or streams forever holds
   `submit_task` forever and grows its memory without end (the polling path, `wait`, at least gives
   up after 900 s). Fix: stop
   following (ClientError, task left to `verify`) past the profile's token budget or the trace
   cap's bytes, and bound the whole follow as `wait` is bounded.
   FIXED: `streaming.StreamBound` counts what `Client._follow` and `TaskStream` take: past the signed
   profile's ``max_llm_tokens`` pieces or `MAX_TRACE_BYTES` of text, or `FOLLOW_WITHIN_S` (wait's 900 s)
   of stream and polling together, the client stops with a `ClientError` naming the node, the task
   left to `verify`.
4. MEDIUM — one registered node that ranks first stops every discovering client
   (`test_defence_one_first_ranked_node_is_passed_over_by_every_discovering_client`).
   `_prepare_failover` passes a node over only for `_node_down` (a transport error or a ClientError
   with status >= 500); any other failure before the deposit aborts the whole `submit_task`, though
   nothing was paid and another node would serve. Three ways, each from a node that simply ranks
   first by asking less: (a) an HONEST node whose operator set a small budget (``max_new_tokens``
   8): discovery keeps it (`_unsignable` returns the probe when `agent_profile` raises, "refused,
   with why, when chosen"), and when chosen `agent_profile` raises a status-less `ClientError`
   ("runs agent 'chat' with less than this client signs for"), which is not "down": every user with
   the default ``min_limits`` gets that error and no task, network-wide, while that node is the
   cheapest; (b) ``/healthz`` answering 200 with a body that is not JSON (``resp.json()`` raises
   ``JSONDecodeError``, not a ClientError: client.py `_alive`, types.py `answer`); (c) ``/healthz``
   answering 503 with ``{"error": "draining"}``: `answer` does ``err.get("message")`` on a string
   and raises ``AttributeError`` (types.py `answer`), so a 5xx, which the design passes over, ends
   the submit instead. Fix: before any deposit or signature, every failure of a node (a refusal of
   a probe, an unusable profile, a malformed answer) passes it over with its reason in
   ``last_skipped`` (only the POST of the task itself can be the user's own fault); `answer` reads
   an error body defensively (a non-dict ``error`` is a message) and raises `ClientError` for a
   malformed success body; `_unsignable` leaves out a node whose profile is refused.
   FIXED: `Client._prepare_failover` passes a discovered node over on any `ClientError` before the
   deposit (at first but a well-formed 4xx; review 22 made that one the node's refusal too;
   a malformed body sets ``ClientError.malformed``),
   `answer` turns a non-JSON body or a non-object ``error`` into a `ClientError`, and `_unsignable`
   leaves out a node whose profile `agent_profile` refuses.
5. LOW — a server that names another node's address gets the user's read grant for that node
   (`test_defence_a_url_naming_another_nodes_address_gets_no_read_grant`).
   ``submit_task(node_url=URL)`` (``supernet task submit --node URL``) reads the address from the
   URL's ``/v1/node`` and requires only that it is an active node (`Client._registered`); the
   address's registered endpoint is never compared with the URL. A phishing server naming an
   honest node B is sent ``X-Supernet-Read`` signed for B (`_read_auth` signs for whatever address
   the URL names, before any task is sent) and reads the user's results, streams and audit logs on
   B for the grant's hour; it also gets a request and voucher signed for B, and lowers the client's
   ladder for B (`rebase` takes its billed 0). Fix: a URL that is not the address's registered
   endpoint is refused (or needs an explicit override), at least before a grant is signed for it.
   FIXED: `Client._read_auth` signs a grant only for a URL that is (normalised, `types.normal_url`)
   the endpoint the named address registered on chain, else a `ClientError` saying so, before any
   grant, request or voucher is signed.
6. LOW — `Client.verify` of a node that is down raises a bare ``httpx.ConnectError``
   (`test_defence_verify_of_a_node_that_is_down_names_the_node_and_the_omission_claim`), not a
   `ClientError` and not a report: `supernet task verify` (whose `_run` catches only
   `ClientError`) ends in a traceback instead of saying the node is unreachable, and a user whose
   node vanished after its promise fell due is not told that the omission claim is open (the kept
   promise is in the state; `claim_omission` needs no node). Fix: a `ClientError` naming the node,
   or a report from the kept promise ("commit promise kept" false once due).
   FIXED: `Client._request` wraps every transport error in a `NodeUnreachableError` (a
   `ClientError`), and `Client.verify` names the task's node and, with a kept promise, its
   ``commitBy`` and `supernet task omission`; the CLI prints it on one line.

Checked and holding:

- a node cannot raise the ladder of an account the client does not know with the user's own
  voucher to ANOTHER node (an ally's): `proven_cumulative` recovers the voucher for the node asked,
  so the billed total is unproven and nothing is signed or deposited
  (`test_defence_a_billed_total_proved_with_a_voucher_to_another_node_signs_nothing`);
- a node answering a ``lastNonce`` of 2**64 is refused before anything is signed (same test);
- a node whose event stream ends early cannot make the client take its word: the task's end is
  read again and its output checked against the signed receipt (before fix 3 the token-stream
  test showed the mismatch raised at the end, after everything was shown; it now stops at the
  budget, before the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_fixtures import NODE_STAKE, Actors
from eth_account.signers.local import LocalAccount
from node_fixtures import FAKE_MODEL_ID, FAKE_PROFILE, FakeChain, FakeExecutor
from supernet.node.service.config import NodeSettings
from supernet.node.service.identity import load_account
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil
from supernet.sdk.client import Client
from supernet.sdk.client.read_grant import READ_HEADER, ReadGrantAuth
from supernet.sdk.client.types import ClientError
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import MAX_TRACE_BYTES, Limits
from supernet.sdk.store.embedded import in_process_client

pytestmark = [pytest.mark.anvil]

CHEAP = 10**7  # wei per token of the node that ranks first
DEAR = 10**9  # the honest node's price per token


# ------------------------------------------------------------------------------------------------
# A node service on real TCP, behind a hostile front
# ------------------------------------------------------------------------------------------------


@dataclass
class Front:
    """What the hostile front does: ``on(path, method)`` -> a replacement ASGI handler or None
    (the real answer). ``grants`` holds every read grant header the client sent through it."""

    rules: dict[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)
    sent: int = 0  # bytes a replacement handler sent
    closing: bool = False


def _front(app: Any, front: Front) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if READ_HEADER.lower() in headers:
            front.grants.append(headers[READ_HEADER.lower()])
        for suffix, handler in front.rules.items():
            if scope["path"].endswith(suffix):
                await handler(app, scope, receive, send)
                return
        await app(scope, receive, send)

    return wrapped


async def _real_answer(app: Any, scope: Any, receive: Any) -> tuple[dict[str, Any], bytes]:
    """The real app's answer to this request: its start message and whole body."""
    start: dict[str, Any] = {}
    body = b""

    async def collect(message: Any) -> None:
        nonlocal body
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, collect)
    return start, body


def _reply(status: int, body: bytes, content_type: bytes = b"application/json") -> Callable[..., Any]:
    async def handler(app: Any, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return handler


@dataclass
class Node:
    service: NodeService
    chain: FakeChain
    front: Front
    url: str
    serving: asyncio.Task[None]
    executor: FakeExecutor

    @property
    def address(self) -> str:
        return self.service.account.address


class SmallExecutor(FakeExecutor):
    """The FAKE executor with an honest but small budget: its chat agent answers at most 8 new
    tokens (an operator's choice; below the client's default ``min_limits`` of 16)."""

    PROFILE = AgentProfile.of(FAKE_PROFILE.agent, Limits(True, True, 32, 8192, 8, 64, 1 << 16), [])

    def agent_hash(self, agent: str) -> str | None:
        return self.PROFILE.hash() if agent == "chat" else None

    def agent_cards(self) -> list[dict[str, Any]]:
        card = {
            "id": "chat",
            "codeHash": self.PROFILE.agent.code_hash,
            "agentHash": self.PROFILE.hash(),
            "profile": self.PROFILE.to_json(),
        }
        return [card]


@contextlib.asynccontextmanager
async def _node(
    tmp: Path,
    net: Contracts,
    key: LocalAccount,
    users: list[LocalAccount],
    price: int,
    executor: FakeExecutor | None = None,
) -> AsyncIterator[Node]:
    """A node service keyed as ``key``, registered and staked on ``net`` (Anvil) at its own URL,
    serving on real TCP behind a `Front`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    fake_chain = FakeChain(domain=net.domain)
    for u in users:
        fake_chain.deposits[u.address] = 10**18
    store = in_process_client(tmp / "store")
    cfg = NodeSettings.load(
        None,
        data_dir=tmp / "node",
        identity={"private_key": "0x" + bytes(key.key).hex()},
        api={"port": port},
        pricing={"price_per_token_wei": price},
        batch={"max_size": 2, "max_age_s": 0.2},
    )
    executor = executor or FakeExecutor()
    service = NodeService(cfg, executor, load_account(cfg), store, fake_chain)
    await service.setup()
    front = Front()
    service.app = _front(service.app, front)
    model = bytes.fromhex(FAKE_MODEL_ID[2:])
    net.as_account(key).service_manager.register_node(url, [model], price, NODE_STAKE)
    serving = asyncio.create_task(service.run_forever())
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        await asyncio.sleep(0.05)
    try:
        yield Node(service, fake_chain, front, url, serving, executor)
    finally:
        front.closing = True
        front.rules.clear()
        service.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        await service.cleanup()
        await store.aclose()


class _Counting(httpx.AsyncBaseTransport):
    """The client's real HTTP transport, counting the body bytes it hands the client for the
    requests whose path ends with ``suffix`` (``taken``)."""

    def __init__(self, suffix: str) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=2)
        self.suffix, self.taken = suffix, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith(self.suffix):
            return response
        inner, counter = response.stream, self

        class Stream(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                assert isinstance(inner, httpx.AsyncByteStream)
                async for chunk in inner:
                    counter.taken += len(chunk)
                    yield chunk

            async def aclose(self) -> None:
                assert isinstance(inner, httpx.AsyncByteStream)
                await inner.aclose()

        response.stream = Stream()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _client(anvil: Anvil, net: Contracts, user: LocalAccount, tmp: Path, **kw: Any) -> Client:
    key = "0x" + bytes(user.key).hex()
    return Client.connect(anvil.url, net.deployment, key, state_dir=tmp / "user", **kw)


async def _paid_task(client: Client, node: Node, text: str = "hello there") -> str:
    result = await client.submit_task(text, node_url=node.url)
    assert result.output == f"echo: {text}"
    return result.task_id


# ------------------------------------------------------------------------------------------------
# 1. A node that drips its answer
# ------------------------------------------------------------------------------------------------


async def test_defence_a_node_dripping_its_answer_fails_verify_at_its_timeout(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """MEDIUM. Attack: the user's client has ``timeout=2`` s. The node answers ``GET
    /v1/tasks/{id}/receipt`` (its real, honest receipt document) one byte every 0.4 s. httpx's
    timeouts are per read, each byte resets it, so `Client.verify` neither answered nor failed.

    Holds (FIXED): `verify` ends within a few times its timeout (here 8 s), with a `ClientError`
    naming the node and the deadline: one deadline bounds each request and its whole answer."""
    user = actors.users[0]
    async with _node(tmp_path / "n", chain, actors.node, [user], DEAR) as node:
        client = _client(anvil, chain, user, tmp_path, timeout=2.0)
        try:
            task_id = await _paid_task(client, node)

            async def drip(app: Any, scope: Any, receive: Any, send: Any) -> None:
                start, body = await _real_answer(app, scope, receive)
                await send(start)
                for i in range(len(body)):
                    if node.front.closing:
                        return
                    await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": True})
                    node.front.sent += 1
                    await asyncio.sleep(0.4)
                await send({"type": "http.response.body", "body": b""})

            node.front.rules["/receipt"] = drip
            started = time.monotonic()
            outcome = "no answer"
            try:
                report = await asyncio.wait_for(client.verify(task_id, wait_committed=0), 8.0)
                outcome = f"a report (ok {report.ok}, pending {report.pending})"
            except TimeoutError:
                outcome = "still reading when cancelled"
            except (ClientError, httpx.HTTPError) as exc:
                outcome = f"an error: {type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - started
        finally:
            await client.aclose()
    assert outcome != "still reading when cancelled", (
        f"Client(timeout=2).verify was {outcome} after {elapsed:.1f} s: the node sent its receipt "
        f"{node.front.sent} bytes at 0.4 s a byte, and httpx's per-read timeout restarts at each byte"
    )
    assert outcome.startswith("an error: NodeUnreachableError"), outcome  # a ClientError
    assert node.url in outcome and "within 2 s" in outcome, outcome  # the node and the deadline


# ------------------------------------------------------------------------------------------------
# 2. A node that answers a huge body
# ------------------------------------------------------------------------------------------------


async def test_defence_a_node_answering_a_huge_body_is_refused_past_the_bound(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """MEDIUM. Attack: the node answers ``GET /v1/tasks/{id}/receipt`` with 200, JSON, no length
    (chunked), 48 MiB: a JSON object with one padding string. The client read every byte into
    memory and only then parsed (``resp.json()``), whatever the size; nothing bounded it.

    Holds (FIXED): the client stops reading an answer far past any honest one (an output fits a
    384 KiB trace; a receipt document is a few KB): here, less than 16 MiB taken, and a
    `ClientError` naming the node. What the client took is counted where its HTTP transport hands
    the body over (`_Counting`): what the node's server pushed is that plus the kernel's socket
    buffers, which on loopback grow to tens of MiB whatever the client reads (tcp_rmem)."""
    user = actors.users[0]
    chunk = b"x" * (1 << 20)
    total_mib = 48
    async with _node(tmp_path / "n", chain, actors.node, [user], DEAR) as node:
        client = _client(anvil, chain, user, tmp_path)
        counting = _Counting("/receipt")
        try:
            task_id = await _paid_task(client, node)
            await client.http.aclose()
            client.http = httpx.AsyncClient(transport=counting)

            async def huge(app: Any, scope: Any, receive: Any, send: Any) -> None:
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b'{"pad": "', "more_body": True})
                for _ in range(total_mib):
                    if node.front.closing:
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    node.front.sent += len(chunk)
                await send({"type": "http.response.body", "body": b'"}'})

            node.front.rules["/receipt"] = huge
            outcome = "a report"
            try:
                await asyncio.wait_for(client.verify(task_id, wait_committed=0), 15.0)
            except TimeoutError:
                outcome = "no answer within 15 s"
            except (ClientError, httpx.HTTPError) as exc:
                outcome = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            await client.aclose()
    taken = counting.taken >> 20
    assert taken < 16, (
        f"the client took {taken} MiB of one receipt answer before it ended ({outcome}; the node's "
        f"server pushed {node.front.sent >> 20} MiB): a node's answer is read whole into memory"
    )
    assert outcome.startswith("ClientError") and node.url in outcome and "bytes" in outcome, outcome


# ------------------------------------------------------------------------------------------------
# 3. A token stream past the signed budget
# ------------------------------------------------------------------------------------------------


async def test_defence_a_token_stream_past_the_signed_budget_is_cut_at_the_budget(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """MEDIUM. Attack: the node runs the task (its real receipt commits ``echo: ...``) but answers
    ``GET /v1/tasks/{id}/events`` with 10,000 ``token`` events of 50 characters each (500 KB),
    then ends the stream without ``done``. The signed profile lets the task generate at most
    ``max_llm_tokens`` tokens (FAKE_PROFILE: 8,192; its one chat call at most 512) and its output
    must fit a trace of `MAX_TRACE_BYTES`; nothing in `Client._follow` counted: every event was kept
    in ``streamed`` and shown through ``on_token`` until the node stopped. (The mismatch with the
    receipt is raised only at the end: a node that never ends held the client and grew its
    memory for ever.)

    Holds (FIXED): the client stops following once the stream has carried more than the signed
    budget allows (tokens, or bytes past the trace cap), with a `ClientError` naming the node."""
    user = actors.users[0]
    events, width = 10_000, 50
    limits = FAKE_PROFILE.limits
    async with _node(tmp_path / "n", chain, actors.node, [user], DEAR) as node:
        client = _client(anvil, chain, user, tmp_path)

        async def endless(app: Any, scope: Any, receive: Any, send: Any) -> None:
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            piece = json.dumps({"text": "x" * width})
            batch = f"event: token\r\ndata: {piece}\r\n\r\n".encode() * 100
            for _ in range(events // 100):
                if node.front.closing:
                    return
                await send({"type": "http.response.body", "body": batch, "more_body": True})
                node.front.sent += 100
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b""})

        node.front.rules["/events"] = endless
        shown: list[str] = []
        outcome = "returned"
        try:
            follow = client.submit_task("hello there", node_url=node.url, on_token=shown.append)
            await asyncio.wait_for(follow, 15)
        except TimeoutError:
            outcome = "still following after 15 s"
        except ClientError as exc:
            outcome = f"ClientError: {str(exc)[:200]}"
        finally:
            await client.aclose()
    pieces, size = len(shown), len("".join(shown).encode())
    assert pieces <= limits.max_llm_tokens and size <= MAX_TRACE_BYTES, (
        f"the client showed {pieces} pieces ({size} bytes) of one task whose signed profile allows "
        f"{limits.max_llm_tokens} tokens and whose output fits {MAX_TRACE_BYTES} bytes; then: {outcome}"
    )
    assert outcome.startswith("ClientError") and node.address in outcome, outcome


# ------------------------------------------------------------------------------------------------
# 4. One first-ranked node stops every discovering client
# ------------------------------------------------------------------------------------------------


async def test_defence_one_first_ranked_node_is_passed_over_by_every_discovering_client(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """MEDIUM. Setup: two registered nodes serving the same model; node A asks less (ranks first),
    node B is honest. A is honest too, with a small budget (its chat agent's ``max_new_tokens`` is
    8, below the client's default ``min_limits`` of 16). The user submits without a node URL.

    (a) A as it is: `discover` kept it (its profile was "refused when chosen"), it was chosen, and
        `agent_profile` raised a ClientError without a status: not "down", so no failover;
    (b) A's ``/healthz`` answers 200 with ``ok`` (not JSON): ``JSONDecodeError`` escaped;
    (c) A's ``/healthz`` answers 503 ``{"error": "draining"}``: ``AttributeError`` in `answer`.

    Holds (FIXED): each time, nothing was deposited to A or signed for it, and B serves the task,
    with A's reason given: (a) discovery for the agent leaves A out (``last_discovery``, its
    profile below ``min_limits``: `discover()` without an agent still ranks it first), (b) and (c)
    A is passed over before any deposit (``last_skipped``). In (b) and (c) the client's
    ``min_limits`` take A's 8 tokens, so that A's profile is signable and its ``/healthz`` is what
    fails (with the default, discovery leaves A out before any ``/healthz``, as in (a))."""
    user = actors.users[0]
    small = SmallExecutor()
    async with (
        _node(tmp_path / "a", chain, actors.node, [user], CHEAP, small) as a,
        _node(tmp_path / "b", chain, actors.node2, [user], DEAR) as b,
    ):
        variants: dict[str, Callable[..., Any] | None] = {
            "(a) small budget": None,
            "(b) healthz not JSON": _reply(200, b"ok", b"text/plain"),
            "(c) healthz 503 with a string error": _reply(503, b'{"error": "draining"}'),
        }
        outcomes: dict[str, str] = {}
        for i, (name, healthz) in enumerate(variants.items()):
            a.front.rules.clear()
            if healthz is not None:
                a.front.rules["/healthz"] = healthz
            least = {} if healthz is None else {"min_limits": {"max_llm_calls": 1, "max_new_tokens": 8}}
            client = _client(anvil, chain, user, tmp_path / f"v{i}", **least)
            try:
                ranked = await client.discover()
                assert [n.address for n in ranked][:1] == [a.address], "A must rank first"
                result = await client.submit_task(f"question {i}")
                served = "B" if result.node.lower() == b.address.lower() else result.node
                left_out = [p.problem for p in client.last_discovery if p.address == a.address and p.problem]
                skipped = [s for s in client.last_skipped if a.address in s]
                why = (skipped or left_out or ["A's reason is nowhere"])[0]
                outcomes[name] = f"served by {served}; A: {why}"
            except Exception as exc:  # what escapes is the finding
                outcomes[name] = f"{type(exc).__name__}: {str(exc)[:110]}"
            finally:
                await client.aclose()
        deposited_to_a = chain.payments.channel(user.address, a.address).deposited
    assert deposited_to_a == 0
    assert all(o.startswith("served by B") for o in outcomes.values()), (
        "a node ranked first makes every discovering client fail instead of being passed over:\n"
        + "\n".join(f"  {k}: {v}" for k, v in outcomes.items())
    )
    assert "max_new_tokens 8 < 16" in outcomes["(a) small budget"], outcomes
    assert "not JSON" in outcomes["(b) healthz not JSON"], outcomes
    assert "503 draining" in outcomes["(c) healthz 503 with a string error"], outcomes


# ------------------------------------------------------------------------------------------------
# 5. A URL naming another node's address
# ------------------------------------------------------------------------------------------------


async def test_defence_a_url_naming_another_nodes_address_gets_no_read_grant(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """LOW. Setup: the user ran a task on the honest node B. Attack: a server (here node A's
    endpoint, any URL would do) answers ``/v1/node`` with B's own answer (B's address, an active
    node) and the user is led to ``submit_task(node_url=A)`` (a phishing link, a wrong config).
    `_registered` accepts B's address; `_sync_account` sent A a read grant signed for B; A replayed
    it on B and read the user's earlier result there.

    Holds (FIXED): nothing signed for B goes to a URL that is not B's registered endpoint (checked
    on chain before any grant): the submit is a `ClientError` saying so, and A gets no grant."""
    user = actors.users[0]
    async with (
        _node(tmp_path / "a", chain, actors.node, [user], DEAR) as a,
        _node(tmp_path / "b", chain, actors.node2, [user], DEAR) as b,
    ):
        client = _client(anvil, chain, user, tmp_path)
        try:
            secret = "my private question"
            task_id = await _paid_task(client, b, secret)
            async with httpx.AsyncClient() as h:
                b_info = (await h.get(b.url + "/v1/node")).content
            a.front.rules["/v1/node"] = _reply(200, b_info)
            with pytest.raises(ClientError, match=r"is not the endpoint node .* registered on chain"):
                await client.submit_task("hi", node_url=a.url)
        finally:
            await client.aclose()
        leaked = None
        async with httpx.AsyncClient() as h:
            for grant in a.front.grants:
                got = await h.get(f"{b.url}/v1/tasks/{task_id}", headers={READ_HEADER: grant})
                if got.status_code == 200:
                    leaked = got.json().get("output")
                    break
    assert leaked is None, (
        f"the server at A's URL, naming B's address, was sent {len(a.front.grants)} read grant(s) signed "
        f"for B, and B answers it the user's task: {leaked!r}"
    )
    assert a.front.grants == [] and a.executor.runs == []  # no grant, no task went to A


# ------------------------------------------------------------------------------------------------
# 6. verify of a node that is down
# ------------------------------------------------------------------------------------------------


async def test_defence_verify_of_a_node_that_is_down_names_the_node_and_the_omission_claim(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """LOW. The user ran a task (its promise kept), then the node went away (its port closed).
    `Client.verify` raised ``httpx.ConnectError`` from `receipt`: not a `ClientError` (so
    `supernet task verify` printed a traceback, its `_run` catching only ClientError) and not a
    report that could say the kept promise's claim is open.

    Holds (FIXED): a `ClientError` naming the node, and (the promise kept) the omission claim and
    the command that makes it."""
    user = actors.users[0]
    async with _node(tmp_path / "n", chain, actors.node, [user], DEAR) as node:
        client = _client(anvil, chain, user, tmp_path, timeout=5.0)
        task_id = await _paid_task(client, node)
        assert client.state.tasks[task_id].promise is not None  # kept at submit: a claim needs it
    # the node's service is stopped: nothing listens on its URL any more
    try:
        raised: BaseException | None = None
        try:
            await client.verify(task_id, wait_committed=0)
        except Exception as exc:
            raised = exc
    finally:
        await client.aclose()
    assert raised is None or isinstance(raised, ClientError), (
        f"verify of a node that is down raised {type(raised).__name__}: {raised}"
    )
    assert raised is not None and node.address in str(raised) and node.url in str(raised), raised
    assert f"supernet task omission {task_id}" in str(raised), raised


# ------------------------------------------------------------------------------------------------
# Defences
# ------------------------------------------------------------------------------------------------


async def test_defence_a_billed_total_proved_with_a_voucher_to_another_node_signs_nothing(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """Attack (a node and its ally): the user paid node B (an ally of A) a task; B holds the user's
    voucher. Node A, new to the user's state, answers ``GET /v1/accounts/{user}`` with ``billed``
    equal to that voucher's amount and B's voucher as its "proof", hoping the client signs its first
    voucher to A on top (and deposits for it). Then A answers a ``lastNonce`` of 2**64, hoping to
    use up the user's nonces with it.

    Holds: `proven_cumulative` recovers the voucher for A, so it proves nothing; the chain shows no
    redemption by A; `rebase` refuses an unknown account's unproven total, and a nonce at or past
    2**64: a ClientError each time, no deposit to A on chain, nothing sent to A's task route."""
    user = actors.users[0]
    async with (
        _node(tmp_path / "a", chain, actors.node, [user], DEAR) as a,
        _node(tmp_path / "b", chain, actors.node2, [user], DEAR) as b,
    ):
        client = _client(anvil, chain, user, tmp_path)
        try:
            await _paid_task(client, b)
            auth = ReadGrantAuth(user, b.address, chain.domain)
            async with httpx.AsyncClient() as h:
                b_account = (await h.get(f"{b.url}/v1/accounts/{user.address}", auth=auth)).json()
            assert b_account["voucher"] is not None and int(b_account["billed"]) > 0
            forged = {**b_account, "user": user.address, "lastNonce": 7}
            a.front.rules[f"/v1/accounts/{user.address}"] = _reply(200, json.dumps(forged).encode())
            with pytest.raises(ClientError, match="billed"):
                await client.submit_task("hi", node_url=a.url)
            nonce = {**forged, "billed": "0", "voucher": None, "lastNonce": 2**64}
            a.front.rules[f"/v1/accounts/{user.address}"] = _reply(200, json.dumps(nonce).encode())
            with pytest.raises(ClientError, match="nonce"):
                await client.submit_task("hi", node_url=a.url)
        finally:
            await client.aclose()
        assert chain.payments.channel(user.address, a.address).deposited == 0
        assert a.executor.runs == []  # no task reached A
