"""`supernet.sdk.client.verify.check_receipt` on receipts a node got wrong: a failed check, never a crash."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.eip712 import Domain, ReceiptPromise, sign_receipt_promise
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.client.verify import VerificationReport, check_receipt
from supernet.sdk.store.cids import compute_cid, encode_dag


def _doc(signature: str | None = None) -> tuple[dict[str, object], str, str]:
    doc, user, node = _doc_and_node(signature)
    return doc, user, node.address


def _doc_and_node(signature: str | None = None) -> tuple[dict[str, object], str, LocalAccount]:
    node, user = Account.create(), Account.create()
    cid = compute_cid(encode_dag({"trace": 1}), "dag-cbor")
    receipt = Receipt(
        request_hash=hashlib.sha256(b"request").digest(),
        user=user.address,
        model_id=bytes(32),
        input_hash=input_hash("hi"),
        output_hash=output_hash("hello"),
        trace_hash=trace_hash(cid),
        fee=10**12,
    )
    sig = signature or "0x" + sign_receipt(receipt, node).hex()
    doc = {
        "receipt": receipt.to_json(),
        "leaf": "0x" + receipt.leaf().hex(),
        "signature": sig,
        "traceCid": cid,
        "batch": None,
    }
    return doc, user.address, node


def _check(doc: dict[str, object], user: str, node: str, **extra: Any) -> VerificationReport:
    return check_receipt(
        doc,
        task_id="0x" + hashlib.sha256(b"request").hexdigest(),
        user=user,
        node=node,
        task_input="hi",
        output="hello",
        onchain_batch=lambda _: ("0x" + "00" * 20, b"", 0),
        trace_loaded=None,
        **extra,
    )


def _report(doc: dict[str, object], user: str, node: str) -> dict[str, bool]:
    return {c.name: c.ok for c in _check(doc, user, node).checks}


def test_an_honest_receipt_passes_its_signature_and_hash_checks() -> None:
    checks = _report(*_doc())
    assert checks["node signature"] and checks["leaf"] and checks["input hash"] and checks["output hash"]


@pytest.mark.parametrize("garbage", ["0x" + "ff" * 65, "0x" + "00" * 65, "0x1234", "0xzz"])
def test_a_garbage_node_signature_is_a_failed_check_not_a_crash(garbage: str) -> None:
    doc, user, node = _doc(garbage)
    checks = _report(doc, user, node)
    assert checks["node signature"] is False and checks["leaf"] is True


def test_a_receipt_not_yet_committed_is_pending_not_failed() -> None:
    rep = _check(*_doc())
    assert not rep.ok and rep.pending  # everything else checks out: wait for the commit
    rep = _check(*_doc("0x" + "ff" * 65))
    assert not rep.ok and not rep.pending  # a bad signature is a failure, committed or not


DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)


def _promise(doc: dict[str, object], signer: LocalAccount, commit_by: int) -> None:
    receipt = Receipt.from_json(doc["receipt"])  # type: ignore[arg-type]
    promise = ReceiptPromise(receipt.request_hash, receipt.leaf(), commit_by)
    doc["promise"] = {
        "commitBy": commit_by,
        "signature": "0x" + sign_receipt_promise(promise, DOMAIN, signer).hex(),
    }


def _check_at(doc: dict[str, object], user: str, node: str, now: int) -> VerificationReport:
    return _check(doc, user, node, domain=DOMAIN, now=now)


def test_the_nodes_promise_to_commit_is_checked() -> None:
    """A receipt comes with the node's signed promise to commit it by a time (without it, a receipt
    the node leaves out of its batches could not be claimed): missing or signed by anyone else is a
    failed check; a kept one is pending until the commit; past `commitBy` uncommitted, it fails
    with the way to claim the omission."""
    doc, user, node = _doc_and_node()
    rep = _check_at(doc, user, node.address, 1000)
    assert {c.name: c.ok for c in rep.checks}["commit promise"] is False and not rep.pending
    _promise(doc, Account.create(), 2000)  # a promise someone else signed
    assert {c.name: c.ok for c in _check_at(doc, user, node.address, 1000).checks}["commit promise"] is False
    _promise(doc, node, 2000)
    rep = _check_at(doc, user, node.address, 1000)
    assert rep.pending, [c for c in rep.failed()]
    late = _check_at(doc, user, node.address, 2000)
    assert not late.ok and not late.pending
    assert [c.name for c in late.failed()] == ["commit promise kept"]
    assert "supernet task omission" in late.failed()[0].detail


def test_a_trace_over_the_protocol_cap_fails_the_trace_format_check() -> None:
    """A node could commit a trace no availability answer can post (over MAX_TRACE_BYTES): the
    user's verify says so, as validators do. Control: a trace within the cap passes it."""
    from supernet.sdk.formats.trace import MAX_TRACE_BYTES, example_dag

    doc, user, node = _doc()
    big = {**example_dag(), "input": "p" * MAX_TRACE_BYTES}
    [fmt] = [c for c in _check(doc, user, node, trace_doc=big).checks if c.name == "trace format"]
    assert not fmt.ok and "over the protocol's" in str(fmt.detail)
    [fmt] = [c for c in _check(doc, user, node, trace_doc=example_dag()).checks if c.name == "trace format"]
    assert fmt.ok
