"""The embedded server speaks the Kubo RPC subset: shapes of answers and errors, limits, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.store import MAX_BLOCK_SIZE, StoreClient, StoreUnavailableError, compute_cid, file_cid
from supernet.sdk.store.cli import app as store_cli
from supernet.sdk.store.embedded import EmbeddedStore, create_app, serve_in_thread
from typer.testing import CliRunner


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    url, stop = serve_in_thread(EmbeddedStore(tmp_path / "store", fsync=False))
    yield url
    stop()


@pytest.fixture
async def rpc(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(EmbeddedStore(tmp_path / "store", fsync=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://store/api/v0/") as client:
        yield client


def assert_kubo_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"Message", "Code", "Type"} and body["Type"] == "error"
    assert body["Code"] == (1 if status < 500 else 0)
    assert fragment in body["Message"]


async def test_block_put_get_stat_shapes(rpc: httpx.AsyncClient) -> None:
    put = await rpc.post(
        "block/put", params={"cid-codec": "raw", "mhtype": "sha2-256"}, files={"x": b"hello"}
    )
    assert put.json() == {"Key": compute_cid(b"hello"), "Size": 5}
    got = await rpc.post("block/get", params={"arg": put.json()["Key"]})
    assert got.content == b"hello"
    stat = await rpc.post("block/stat", params={"arg": put.json()["Key"]})
    assert stat.json() == {"Key": compute_cid(b"hello"), "Size": 5}
    dag = await rpc.post("block/put", params={"cid-codec": "dag-cbor", "pin": "true"}, files={"f": b"\xa0"})
    assert dag.json()["Key"] == compute_cid(b"\xa0", "dag-cbor")
    pins = await rpc.post("pin/ls", params={"type": "recursive"})
    assert pins.json() == {"Keys": {dag.json()["Key"]: {"Type": "recursive"}}}


async def test_bad_requests_get_kubo_errors(rpc: httpx.AsyncClient) -> None:
    assert_kubo_error(await rpc.post("block/get"), 400, "'arg'")
    assert_kubo_error(await rpc.post("block/get", params={"arg": "zzz"}), 400, "not a CID")
    assert_kubo_error(
        await rpc.post("block/put", params={"cid-codec": "dag-pb"}, files={"f": b"x"}), 400, "dag-pb"
    )
    assert_kubo_error(
        await rpc.post("block/put", params={"mhtype": "sha2-512"}, files={"f": b"x"}), 400, "sha2-256"
    )
    assert_kubo_error(await rpc.post("block/put", content=b"raw body"), 400, "multipart/form-data")
    assert_kubo_error(await rpc.post("block/put", data={"field": "text"}, files={}), 400, "multipart")
    assert_kubo_error(await rpc.post("pin/ls", params={"type": "some"}), 400, "invalid pin type")
    missing = compute_cid(b"missing")
    assert_kubo_error(await rpc.post("block/get", params={"arg": missing}), 500, f"could not find {missing}")
    wrong = await rpc.get("version")
    assert wrong.status_code == 405 and wrong.headers.get("allow") == "POST"  # Kubo's RPC is POST only
    assert (await rpc.post("nothing/here")).status_code == 404


async def test_block_rm_reports_per_block_errors(rpc: httpx.AsyncClient) -> None:
    cid = (await rpc.post("block/put", params={"pin": "true"}, files={"f": b"keep"})).json()["Key"]
    other = (await rpc.post("block/put", files={"f": b"drop"})).json()["Key"]
    answer = await rpc.post("block/rm", params=[("arg", cid), ("arg", other)])
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines[0]["Hash"] == cid and "pinned" in lines[0]["Error"]
    assert lines[1] == {"Hash": other}
    gone = compute_cid(b"never")
    forced = await rpc.post("block/rm", params={"arg": gone, "force": "true"})
    assert forced.text == ""


async def test_block_over_the_limit_is_413(rpc: httpx.AsyncClient) -> None:
    big = b"x" * (MAX_BLOCK_SIZE + 1)
    assert_kubo_error(await rpc.post("block/put", files={"f": big}), 413, "over the 1048576-byte limit")


async def test_streamed_body_over_the_limit_is_413(rpc: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
        for _ in range(5):
            yield b"\0" * MAX_BLOCK_SIZE

    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_kubo_error(await rpc.post("block/put", content=body(), headers=headers), 413, "request body")


async def test_declared_body_over_the_limit_is_413_over_real_http(served: str) -> None:
    async with httpx.AsyncClient(base_url=served) as client:
        response = await client.post("/api/v0/block/put", files={"f": os.urandom(3 * MAX_BLOCK_SIZE)})
    assert_kubo_error(response, 413, "over the server's 2097152-byte limit")


async def test_client_errors_for_wrong_addresses(served: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with StoreClient(f"http://127.0.0.1:{closed}", timeout=2) as store:
        with pytest.raises(StoreUnavailableError, match=r"unreachable.*supernet store serve"):
            await store.put_block(b"x")
        with pytest.raises(ConnectionError):  # the stdlib type is mixed in
            await store.get_block(compute_cid(b"x"))
    async with StoreClient(f"{served}/not-the-api") as store:
        with pytest.raises(StoreUnavailableError, match="does not serve this Kubo RPC endpoint"):
            await store.version()


async def test_url_comes_from_the_environment(served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERNET_STORE_URL", served)
    async with StoreClient() as store:
        assert store.url == served
        assert await store.get_block(await store.put_block(b"env")) == b"env"


def test_cli_add_and_cat(served: str, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    runner = CliRunner()
    added = runner.invoke(store_cli, ["add", str(tmp_path / "in.bin"), "--url", served])
    assert added.exit_code == 0, added.output
    assert added.output.strip() == file_cid(data)
    shown = runner.invoke(store_cli, ["cat", file_cid(data)], env={"SUPERNET_STORE_URL": served})
    assert shown.exit_code == 0
    assert shown.stdout_bytes == data


async def test_cli_serve_runs_the_store(tmp_path: Path) -> None:
    port = free_port()
    args = ["-m", "supernet.sdk.store.cli", "serve", "--path", str(tmp_path / "s"), "--port", str(port)]
    server = await asyncio.create_subprocess_exec(sys.executable, *args, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with StoreClient(f"http://127.0.0.1:{port}", timeout=2) as store:
            for _ in range(200):  # wait up to ~20 s for the process to listen
                try:
                    await store.version()
                    break
                except StoreUnavailableError:
                    assert server.returncode is None, "supernet store serve exited"
                    await asyncio.sleep(0.1)
            cid = await store.add_file(b"served by the CLI", pin=True)
            assert await store.pin_ls() == {cid: "recursive"}
    finally:
        server.terminate()
        await server.wait()
    assert cid == file_cid(b"served by the CLI")
    assert EmbeddedStore(tmp_path / "s").pins("recursive") == {cid: "recursive"}  # persisted by the process
