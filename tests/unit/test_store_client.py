"""Client-side behaviour that needs no store: Kubo error mapping, wrong servers, local checks.

The ``MockTransport`` servers here are not stand-ins for the store: they play servers that
are broken or lie (a web page, forged bytes), which no real store can be made to do.
"""

from __future__ import annotations

import json

import httpx
import pytest
from supernet.sdk.errors import SupernetError
from supernet.sdk.store import (
    BlockNotFoundError,
    BlockTooLargeError,
    CIDMismatchError,
    InvalidBlockError,
    InvalidCIDError,
    PinError,
    RequestTooLargeError,
    StoreClient,
    StoreError,
    StoreUnavailableError,
    compute_cid,
)
from supernet.sdk.store.rpc_errors import error_from_response, parse_answer


def kubo(message: str) -> str:
    return json.dumps({"Message": message, "Code": 0, "Type": "error"})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            500,
            kubo("block was not found locally (offline): ipld: could not find bafk..."),
            BlockNotFoundError,
        ),
        (500, kubo("pin: block was not found locally (offline): ipld: could not find x"), BlockNotFoundError),
        (500, kubo("not pinned or pinned indirectly"), PinError),
        (200, "pinned: recursive", PinError),
        (
            500,
            kubo("produced block is over 1MiB: big blocks can't be exchanged with other peers"),
            BlockTooLargeError,
        ),
        (413, kubo("request body of 9 bytes is over the server's 8-byte limit"), RequestTooLargeError),
        (400, kubo("invalid argument 'arg': not a CID: 'x'"), InvalidCIDError),
        (400, kubo("block/put expects a multipart/form-data body"), InvalidBlockError),
        (404, "404 page not found", StoreUnavailableError),
        (405, "", StoreUnavailableError),
        (500, kubo("context deadline exceeded"), StoreError),
    ],
)
def test_kubo_errors_map_to_typed_exceptions(status: int, body: str, expected: type[StoreError]) -> None:
    error = error_from_response(status, body, context="block/get", url="http://x")
    assert type(error) is expected
    assert isinstance(error, SupernetError)
    assert str(error).startswith("block/get")


def test_answers_must_be_kubo_shaped() -> None:
    assert parse_answer('{"Key": "b", "Size": 1}', context="c", url="u", required=("Key",)) == {
        "Key": "b",
        "Size": 1,
    }
    for body in ("<html>gateway</html>", "[1]", '{"Other": 1}'):
        with pytest.raises(StoreUnavailableError, match="not a Kubo RPC answer"):
            parse_answer(body, context="block/put", url="u", required=("Key",))


async def test_a_server_that_is_not_the_rpc_api_is_reported() -> None:
    # Something answering 200 with HTML (a web page, a misrouted proxy) is not a store.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    async with StoreClient("http://somewhere", transport=transport) as store:
        with pytest.raises(StoreUnavailableError, match="not a Kubo RPC answer"):
            await store.put_block(b"x")


async def test_local_checks_happen_before_any_request() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected, got {request.url}")

    async with StoreClient("http://unused", transport=httpx.MockTransport(refuse), max_block_size=4) as store:
        with pytest.raises(BlockTooLargeError):
            await store.put_block(b"12345")
        with pytest.raises(InvalidBlockError):
            await store.put_block(b"\xff", "dag-cbor")
        with pytest.raises(InvalidCIDError):
            await store.get_block("Qm-not-a-cid")
        with pytest.raises(InvalidCIDError, match="unsupported codec"):
            await store.put_block(b"x", "dag-pb")  # type: ignore[arg-type]


async def test_forged_block_from_the_wire_is_refused() -> None:
    # A store that answers block/get with other bytes than the CID names.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"forged"))
    async with StoreClient("http://liar", transport=transport) as store:
        with pytest.raises(CIDMismatchError, match="corrupt"):
            await store.get_block(compute_cid(b"genuine"))
        with pytest.raises(CIDMismatchError, match="no block is that large"):
            big = httpx.MockTransport(
                lambda request: httpx.Response(200, content=b"x" * (store.max_block_size + 1))
            )
            async with StoreClient("http://liar", transport=big) as huge:
                await huge.get_block(compute_cid(b"genuine"))
