"""CIDs, dag-cbor and the chunked-file format, checked against independent computations."""

from __future__ import annotations

import base64
import hashlib

import dag_cbor
import pytest
from multiformats import CID, multihash
from supernet.sdk.store import (
    CHUNK_SIZE,
    CIDMismatchError,
    InvalidBlockError,
    InvalidCIDError,
    compute_cid,
    file_cid,
    link,
    parse_cid,
    verify_block,
)
from supernet.sdk.store.cids import block_links, decode_dag, encode_dag
from supernet.sdk.store.files import decode_file_root, encode_file_root, split_chunks

RAW, DAG_CBOR = 0x55, 0x71


def handmade_cid(data: bytes, codec: int) -> str:
    """CIDv1 built by hand from the spec: <version><codec><sha2-256 multihash>, multibase 'b'."""
    raw = bytes([0x01, codec]) + bytes([0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 100, b"\x00" * CHUNK_SIZE])
@pytest.mark.parametrize(("codec", "code"), [("raw", RAW), ("dag-cbor", DAG_CBOR)])
def test_compute_cid_matches_the_spec_and_multiformats(data: bytes, codec: str, code: int) -> None:
    cid = compute_cid(data, codec)  # type: ignore[arg-type]
    assert cid == handmade_cid(data, code)
    assert cid == str(CID("base32", 1, codec, multihash.digest(data, "sha2-256")))


def test_known_vectors() -> None:
    # `echo -n hello | ipfs block put` and the empty dag-cbor map, as Kubo prints them.
    assert compute_cid(b"hello") == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
    assert compute_cid(b"\xa0", "dag-cbor") == "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"


def test_compute_cid_rejects_other_codecs() -> None:
    with pytest.raises(InvalidCIDError, match="unsupported codec"):
        compute_cid(b"x", "dag-pb")  # type: ignore[arg-type]


def test_parse_cid_normalises_to_cidv1_base32() -> None:
    cid = compute_cid(b"hello")
    base58 = CID.decode(cid).encode("base58btc")
    assert base58.startswith("z")
    assert str(parse_cid(base58)) == cid
    assert str(parse_cid(f"  {cid}\n")) == cid


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "not a CID"),
        ("hello", "not a CID"),
        ("0", "not a CID"),  # a lone multibase prefix once raised IndexError (a 500 on every CID route)
        ("z", "not a CID"),
        ("b", "not a CID"),
        ("bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4ye!", "not a CID"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "unsupported codec 'dag-pb'"),
        (str(CID("base32", 1, "raw", multihash.digest(b"x", "sha2-512"))), "unsupported hash"),
    ],
)
def test_parse_cid_rejects_bad_or_unsupported(value: str, match: str) -> None:
    with pytest.raises(InvalidCIDError, match=match):
        parse_cid(value)
    assert issubclass(InvalidCIDError, ValueError)


def test_verify_block_detects_any_change() -> None:
    cid = compute_cid(b"hello world")
    verify_block(cid, b"hello world")
    for forged in (b"hello worle", b"hello world ", b""):
        with pytest.raises(CIDMismatchError, match="corrupt"):
            verify_block(cid, forged)


def test_dag_cbor_links_round_trip_in_base32() -> None:
    child = compute_cid(b"child")
    obj = {"name": "x", "parts": [link(child), {"deep": link(child)}], "n": 3}
    data = encode_dag(obj)
    assert data == dag_cbor.encode(obj)  # canonical: the library's encoding, byte for byte
    decoded = decode_dag(data)
    assert str(decoded["parts"][0]) == child
    assert decoded["parts"][1]["deep"] == CID.decode(child)
    assert block_links(compute_cid(data, "dag-cbor"), data) == [child, child]
    assert block_links(compute_cid(b"raw"), b"raw") == []


def test_dag_cbor_errors_are_invalid_block() -> None:
    with pytest.raises(InvalidBlockError):
        decode_dag(b"\xff\xff")
    with pytest.raises(InvalidBlockError):
        encode_dag({"s": {1, 2}})


@pytest.mark.parametrize(
    ("size", "lengths"),
    [(0, []), (1, [1]), (CHUNK_SIZE, [CHUNK_SIZE]), (CHUNK_SIZE + 1, [CHUNK_SIZE, 1])],
)
def test_split_chunks_boundaries(size: int, lengths: list[int]) -> None:
    data = bytes(i % 251 for i in range(size))
    chunks = split_chunks(data)
    assert [len(c) for c in chunks] == lengths
    assert b"".join(chunks) == data


def test_file_root_follows_the_protocol() -> None:
    data = b"a" * CHUNK_SIZE + b"b" * 10
    chunk_cids = [compute_cid(b"a" * CHUNK_SIZE), compute_cid(b"b" * 10)]
    root = dag_cbor.decode(encode_file_root(len(data), chunk_cids))
    assert root == {"type": "supernet/file", "size": len(data), "chunks": [CID.decode(c) for c in chunk_cids]}
    expected = compute_cid(dag_cbor.encode(root), "dag-cbor")
    assert file_cid(data) == expected
    assert file_cid(b"a") != file_cid(b"b")
    # A one-chunk file is still wrapped in a root; it is not the chunk's own CID.
    assert file_cid(b"a").startswith("bafy") and file_cid(b"a") != compute_cid(b"a")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"type": "other", "size": 0, "chunks": []}, "not a supernet/file"),
        ([1, 2], "not a supernet/file"),
        ({"type": "supernet/file", "size": -1, "chunks": []}, "invalid size"),
        ({"type": "supernet/file", "size": 5, "chunks": "x"}, "no chunk list"),
        ({"type": "supernet/file", "size": 5, "chunks": []}, "lists 0 chunks, not 1"),
        ({"type": "supernet/file", "size": 1, "chunks": ["bafk"]}, "bad chunk link"),
    ],
)
def test_decode_file_root_rejects_malformed_roots(obj: object, match: str) -> None:
    with pytest.raises(InvalidBlockError, match=match):
        decode_file_root(dag_cbor.encode(obj))


def test_decode_file_root_rejects_dag_cbor_chunks() -> None:
    bad = {"type": "supernet/file", "size": 1, "chunks": [link(compute_cid(b"\xa0", "dag-cbor"))]}
    with pytest.raises(InvalidBlockError, match="not a link to a raw block"):
        decode_file_root(dag_cbor.encode(bad))
    as_text = {"type": "supernet/file", "size": 1, "chunks": [compute_cid(b"x")]}  # a string, not a link
    with pytest.raises(InvalidBlockError, match="not a link to a raw block"):
        decode_file_root(dag_cbor.encode(as_text))
