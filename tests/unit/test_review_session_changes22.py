"""Adversarial review of the second batch of this session's changes (4a631c4..HEAD, code only):
the user's client (`Client._request`'s one deadline, `read_bounded`, the hand-written SSE parser
`streaming.sse_events`, `StreamBound`, failover before payment in `Client._prepare_failover`, read
grants only at the registered endpoint), the kernel (`json_query`'s integer bound), and the
explorer's `format.eth`.

Real parts: a real Anvil with the compiled contracts, nodes registered and staked on it, the node
service's real app on real TCP (the helpers of tests/unit/test_review_client_verify3.py: its
FAKE executor and FAKE chain, named there), the real `Client`; the SSE parser, `json_query` and
`format.eth` are pure functions and run as they are.

Found:

1. MEDIUM, FIXED (before the deposit any failure, a 4xx included, passes the node over) — one
   first-ranked node still stopped every discovering client, by answering a probe with a well-formed
   4xx (`test_defence_a_first_ranked_node_refusing_its_healthz_no_longer_stops_discovering_clients`).
   `Client._prepare_failover` (sdk/supernet/sdk/client/client.py, ``except ClientError`` /
   ``_refusal``) raises any well-formed 4xx as "the request's own refusal", but before the deposit
   the requests to the node are ``GET /healthz`` and ``GET /v1/accounts/{user}``: neither carries
   anything of the user's task, so a 4xx there is the node's own choice, never "the same on any
   node". A node that asks the least (ranks first) and answers ``/healthz`` with ``403
   {"error": {...}}`` makes every `submit_task` without a URL fail, network-wide, while an honest
   node would serve (nothing is paid: a denial of service, the fix-4 finding of
   test_review_client_verify3.py again through the one door left open). Fix by design: before the
   deposit, only the task's own POST can be the user's refusal; any failure of a probe or an
   account read passes the node over (``last_skipped``), whatever its status.
2. LOW, FIXED (a CR held back at the end of the stream ends its line) — `sse_events` dropped the
   last event of a stream whose lines end with a lone CR
   (`test_defence_a_cr_only_stream_keeps_its_last_event_at_the_end_of_the_stream`). The parser holds
   back a trailing ``\\r`` (maybe the first half of a CRLF) and, when the stream ends, never reads
   it as the line end it then is (WHATWG: CR alone ends a line): ``data: x\\r\\r`` then EOF yields
   nothing (sdk/supernet/sdk/client/streaming.py, `sse_events`, ``held``). Today's node (sse-starlette,
   CRLF) is not hit; a CR-only server loses its ``done`` event (the client then polls, so the
   output is still read, but ``complete`` is false and the stream check is skipped). Fix: at the
   end of the input, treat a held CR as a line end (process ``rest`` once more).

Checked and holding:

- the SSE parser: CRLF split across chunks at the CR, LF and CR-only line ends, comments and
  pings, several ``data`` lines joined by LF, an event never terminated is not dispatched, a line
  or an event's data over the bound is refused as ``malformed``
  (`test_defence_sse_parser_splits_lines_as_whatwg_and_bounds_them`);
- a URL that is the registered endpoint spelt differently (upper-case scheme and host, an explicit
  default port, a trailing slash) is the same endpoint, and a URL differing in scheme, host, port
  or path is not (`test_defence_normal_url_equates_spellings_and_keeps_targets_apart`);
- `json_query`'s integer bound: its own words at 1,001 digits whatever the process's
  ``sys.set_int_max_str_digits`` (a node and a validator agree), negative numbers bounded by their
  digits, exponent forms are floats (no integer), path indexes bounded
  (`test_defence_json_query_integer_bound_is_the_tools_own`);
- (known limit) that agreement needs the process's ``sys.set_int_max_str_digits`` at 0 or at
  least 1,000: CPython lets a process go as low as 640, and there a 1,000-digit integer is CPython's
  ``ValueError`` in CPython's words, not the tool's, so a node or validator that lowered it words
  another error (now `test_defence_json_query_agrees_at_the_lowest_int_digit_limit`: the bound is 640, FIXED);
- `format.eth` renders any uint256 exactly, rounding half to even, signs and unit boundaries
  (`test_defence_explorer_eth_is_exact_at_every_size`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chain_fixtures import Actors
from supernet.node.kernel.errors import ToolError
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil
from supernet.sdk.client.streaming import sse_events
from supernet.sdk.client.types import ClientError, normal_url
from test_review_client_verify3 import CHEAP, DEAR, _client, _node, _reply

# ------------------------------------------------------------------------------------------------
# 1. A first-ranked node refusing a probe with a well-formed 4xx
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_first_ranked_node_refusing_its_healthz_no_longer_stops_discovering_clients(
    tmp_path: Path, anvil: Anvil, chain: Contracts, actors: Actors
) -> None:
    """MEDIUM. Setup: two registered nodes serving the same model; A asks less (ranks first), B is
    honest. Attack: A answers ``GET /healthz`` (or ``GET /v1/accounts/{user}``) with a well-formed
    ``403 {"error": {...}}``. Nothing of the user's task is in those requests: the refusal is A's
    alone, yet `_prepare_failover` raises it as the request's own refusal (`_refusal`), so every
    submit without a URL fails while B would serve.

    Safe: nothing deposited to A, and B serves each task with A in ``last_skipped``."""
    user = actors.users[0]
    refusal = _reply(403, b'{"error": {"code": "forbidden", "message": "not today"}}')
    async with (
        _node(tmp_path / "a", chain, actors.node, [user], CHEAP) as a,
        _node(tmp_path / "b", chain, actors.node2, [user], DEAR) as b,
    ):
        outcomes: dict[str, str] = {}
        for i, path in enumerate(("/healthz", f"/v1/accounts/{user.address}")):
            a.front.rules.clear()
            a.front.rules[path] = refusal
            client = _client(anvil, chain, user, tmp_path / f"v{i}")
            try:
                ranked = await client.discover(agent="chat")
                assert [n.address for n in ranked][:1] == [a.address], "A must rank first"
                result = await client.submit_task(f"question {i}")
                served = "B" if result.node.lower() == b.address.lower() else result.node
                outcomes[path] = f"served by {served}; skipped {client.last_skipped}"
            except Exception as exc:  # what escapes is the finding
                outcomes[path] = f"{type(exc).__name__}: {str(exc)[:160]}"
            finally:
                await client.aclose()
        deposited_to_a = chain.payments.channel(user.address, a.address).deposited
    assert deposited_to_a == 0
    assert all(o.startswith("served by B") for o in outcomes.values()), (
        "a first-ranked node answering a probe with a well-formed 4xx stops every discovering client:\n"
        + "\n".join(f"  {k}: {v}" for k, v in outcomes.items())
    )


# ------------------------------------------------------------------------------------------------
# 2. The SSE parser
# ------------------------------------------------------------------------------------------------


async def _chunks(*parts: str) -> AsyncIterator[str]:
    for part in parts:
        yield part


async def _events(*parts: str, bound: int = 1000) -> list[tuple[str, str]]:
    return [e async for e in sse_events(_chunks(*parts), "test", bound)]


async def test_defence_a_cr_only_stream_keeps_its_last_event_at_the_end_of_the_stream() -> None:
    """LOW. A server ending its lines with CR alone (allowed: WHATWG, "lines end with CR, LF or
    CRLF", as the parser's docstring says) sends its last event and closes the stream. The parser
    held the final CR back as the maybe-first-half of a CRLF and, at the end of the input, never
    read it as a line end: the event (a ``done``) is lost."""
    got = await _events('event: done\rdata: {"id": 1}\r\r')
    assert got == [("done", '{"id": 1}')], f"a CR-only stream's last event was dropped: {got}"


async def test_defence_sse_parser_splits_lines_as_whatwg_and_bounds_them() -> None:
    """Holds: every line end, split anywhere across chunks; comments; multi-line data; an
    unterminated event not dispatched; a line or data over the bound refused (malformed)."""
    whole = 'event: token\r\ndata: {"text": "a"}\r\n\r\n: ping\r\n\r\nevent: done\r\ndata: {}\r\n\r\n'
    want = [("token", '{"text": "a"}'), ("done", "{}")]
    for cut in range(1, len(whole)):  # every split point, the CR|LF ones included
        assert await _events(whole[:cut], whole[cut:]) == want, cut
    assert await _events(*whole) == want  # one character a chunk
    assert await _events(whole.replace("\r\n", "\n")) == want
    assert await _events("data: a\ndata: b\n\n") == [("message", "a\nb")]
    assert await _events("data:x\n\ndata\n\n") == [("message", "x"), ("message", "")]
    assert await _events("event: done\ndata: {}\n") == []  # never terminated: not dispatched
    with pytest.raises(ClientError) as line:
        await _events("data: " + "x" * 600, "x" * 600)
    assert line.value.malformed
    with pytest.raises(ClientError) as data:
        await _events(*["data: " + "y" * 90 + "\n" for _ in range(20)])
    assert data.value.malformed


# ------------------------------------------------------------------------------------------------
# 3. The registered endpoint's spellings
# ------------------------------------------------------------------------------------------------


def test_defence_normal_url_equates_spellings_and_keeps_targets_apart() -> None:
    """Holds: spellings of one endpoint compare equal (an honest node at its registered URL is
    never refused for case, a default port or a trailing slash); other targets do not."""
    same = [
        ("http://node.example:8000", "HTTP://Node.Example:8000/"),
        ("https://node.example", "https://node.example:443"),
        ("http://[::1]:8000", "http://[::1]:8000/"),
        ("http://node.example/api", "http://node.example:80/api/"),
    ]
    for registered, used in same:
        assert normal_url(registered) == normal_url(used), (registered, used)
    apart = [
        ("https://node.example", "http://node.example:443"),
        ("http://node.example:8000", "http://node.example:8001"),
        ("http://node.example/api", "http://node.example/API"),
        ("http://node.example", "http://node.example.evil.com"),
        ("http://[::1]:8000", "http://[::2]:8000"),
        ("http://node.example:8000", "http://node.example:8000@evil.com"),
    ]
    for registered, used in apart:
        assert normal_url(registered) != normal_url(used), (registered, used)


# ------------------------------------------------------------------------------------------------
# 4. json_query's integer bound
# ------------------------------------------------------------------------------------------------


def test_defence_json_query_integer_bound_is_the_tools_own() -> None:
    """Holds: the tool words its own limit, the same whatever the process's int digit limit (a
    node's and a validator's re-run agree); negative numbers and path indexes are bounded by their
    digits; exponent forms are floats."""
    from supernet.node.kernel.builtin_tools import MAX_JSON_INT_DIGITS, _json_query

    ok = "9" * MAX_JSON_INT_DIGITS
    big = "9" * (MAX_JSON_INT_DIGITS + 1)
    before = sys.get_int_max_str_digits()
    words: list[str] = []
    try:
        for limit in (0, 640, 1000, 4300):
            sys.set_int_max_str_digits(limit)
            assert _json_query({"json": f"[-{ok}]", "path": "[0]"}) < 0  # the bound's digits: read
            with pytest.raises(Exception) as neg:
                _json_query({"json": f"[-{big}]"})
            with pytest.raises(Exception) as index:
                _json_query({"json": "[1, 2]", "path": f"[{big}]"})
            words.append(
                f"{type(neg.value).__name__}: {neg.value} | {type(index.value).__name__}: {index.value}"
            )
    finally:
        sys.set_int_max_str_digits(before)
    assert len(set(words)) == 1, words
    assert f"more than {MAX_JSON_INT_DIGITS} digits" in words[0], words
    assert _json_query({"json": "[1e400, -1E-2]", "path": "[1]"}) == -0.01


# ------------------------------------------------------------------------------------------------
# 5. format.eth
# ------------------------------------------------------------------------------------------------


def test_defence_explorer_eth_is_exact_at_every_size() -> None:
    """Holds: integer arithmetic, half to even, each unit's boundary, any uint256."""
    from supernet.explorer.format import eth

    assert eth(2**256 - 1) == "115792089237316195423570985008687907853269984665640564039457.584008 ETH"
    assert eth(10**18) == "1 ETH"
    assert eth(1_500_000_500_000) == "0.000002 ETH"  # 0.0000015005: six places, rounded up
    assert eth(2_500_000_000_000) == "0.000002 ETH"  # exactly half: to even
    assert eth(3_500_000_000_000) == "0.000004 ETH"
    assert eth(10**12 - 1) == "1,000.000 gwei"
    assert eth(5 * 10**9) == "5 gwei"
    assert eth(1_500_000) == "0.002 gwei"  # 0.0015 gwei, exactly half: to even
    assert eth(2_500_000) == "0.002 gwei"
    assert eth(2_500_001) == "0.003 gwei"
    assert eth(999_999) == "999,999 wei"
    assert eth(-(10**18)) == "-1 ETH"
    assert eth(0) == eth(None) == "0 ETH"


def test_defence_json_query_agrees_at_the_lowest_int_digit_limit() -> None:
    """Was a known limit (LOW): `MAX_JSON_INT_DIGITS` was 1,000, under CPython's default 4,300 but not
    under its lowest setting (640): a process that lowered the limit (a dependency may) read a
    1,000-digit integer with CPython's ``ValueError``. FIXED: the bound is 640 digits, so every
    interpreter reads what the tool lets through, and refuses the rest in the tool's words."""
    from supernet.node.kernel.builtin_tools import MAX_JSON_INT_DIGITS, _json_query

    assert MAX_JSON_INT_DIGITS == 640
    doc = {"json": "[" + "9" * MAX_JSON_INT_DIGITS + "]", "path": "[0]"}
    longer = {"json": "[" + "9" * (MAX_JSON_INT_DIGITS + 1) + "]", "path": "[0]"}
    before = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(640)
        assert _json_query(doc) == int("9" * MAX_JSON_INT_DIGITS)
        with pytest.raises(ToolError, match="more than 640 digits"):
            _json_query(longer)
    finally:
        sys.set_int_max_str_digits(before)
    assert _json_query(doc) > 0
