"""Deployment file, protocol parameters and receipt encoding (no chain needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak
from supernet.sdk.chain import Deployment, DeploymentError, ProtocolParams
from supernet.sdk.chain.receipts import (
    Receipt,
    input_hash,
    recover_receipt_signer,
    sign_receipt,
    trace_cid,
    trace_hash,
)
from supernet.sdk.store.cids import compute_cid
from supernet.sdk.store.errors import InvalidCIDError

ADDRS = {n: "0x" + f"{i + 1:02x}" * 20 for i, n in enumerate(["ServiceManager", "Payments"])}


def test_deployment_round_trip(tmp_path: Path) -> None:
    dep = Deployment(31337, 5, ADDRS, ProtocolParams.devnet().to_dict(), deployer=ADDRS["Payments"])
    loaded = Deployment.load(dep.save(tmp_path / "sub" / "deployment.json"))
    assert loaded == dep
    assert ProtocolParams.from_dict(loaded.params) == ProtocolParams.devnet()
    assert loaded.domain.verifying_contract == dep.address("Payments")
    with pytest.raises(DeploymentError):
        dep.address("TaskManager")


def test_bad_deployment_files(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError):
        Deployment.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": 1, "chainId": 1}')
    with pytest.raises(DeploymentError):
        Deployment.load(tmp_path / "bad.json")
    with pytest.raises(DeploymentError):
        Deployment.from_json({"format": 99})


def test_receipt_encoding_and_signature() -> None:
    r = Receipt(b"\x01" * 32, "0x" + "ab" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, 77)
    types = ["bytes32", "address", "bytes32", "bytes32", "bytes32", "bytes32", "uint256"]
    assert r.encode() == encode(types, list(r.as_tuple())) and len(r.encode()) == 7 * 32
    assert r.leaf() == keccak(keccak(r.encode()))
    assert Receipt.decode(r.encode()) == Receipt(*r.as_tuple())
    assert Receipt.from_json(r.to_json()) == Receipt(*r.as_tuple())
    node = Account.from_key("0x" + "33" * 32)
    assert recover_receipt_signer(r, sign_receipt(r, node)) == node.address


def test_content_hashes() -> None:
    assert input_hash("hé") == hashlib.sha256('"hé"'.encode()).digest()  # a JSON string, typed
    assert input_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').digest()
    block = b"\xa1atbtrace"  # a dag-cbor map
    cid = compute_cid(block, "dag-cbor")
    assert trace_hash(cid) == hashlib.sha256(block).digest()  # what the contract recomputes
    assert trace_cid(trace_hash(cid)) == cid
    with pytest.raises(InvalidCIDError):
        trace_hash(compute_cid(block, "raw"))  # a trace is a dag-cbor block
    with pytest.raises(InvalidCIDError):
        trace_hash("bafy")
