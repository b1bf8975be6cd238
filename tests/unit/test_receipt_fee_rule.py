"""The fee a receipt states is the signed ``maxFee``, everywhere it is checked (review 18).

A node charges the user the signed ``maxFee`` (docs/protocol.md). A receipt stating another fee
misstates what the user paid; when a fraud verdict's refund was sized by that field, a cheating node
wrote ``fee = 0`` into its faulty receipts and voided its victims' refunds at no cost (the contract
now refunds the signed ``maxFee``: contracts/test/Review18.t.sol). The validator, the user's client
and the explorer's "signed by its user" read the same rule: the fee is the ``maxFee``, not at most it.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak
from supernet.sdk.chain.eip712 import Domain, TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, output_hash, sign_receipt
from supernet.sdk.client.verify import VerificationReport, _check_request
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.validator.consistency import check_receipt
from supernet.validator.evidence import Check

DOMAIN = Domain(31337, "0x" + "5a" * 20)
NODE = Account.from_key(keccak(b"fee rule node"))
USER = Account.from_key(keccak(b"fee rule user"))
MAX_FEE = 10**15


def _entry(fee: int) -> ManifestEntry:
    request = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=bytes(32),
        agent_hash=bytes(32),
        input_hash=keccak(b"input"),
        max_fee=MAX_FEE,
        nonce=1,
        deadline=2**40,
    )
    receipt = Receipt(
        request_hash=hash_task_request(request, DOMAIN),
        user=USER.address,
        model_id=bytes(32),
        input_hash=request.input_hash,
        output_hash=output_hash("answer"),
        trace_hash=bytes(32),
        fee=fee,
    )
    return ManifestEntry(
        receipt=receipt,
        leaf=receipt.leaf(),
        signature=sign_receipt(receipt, NODE),
        trace_cid="bafy",
        agent="chat",
        request=request,
        request_signature=sign_task_request(request, DOMAIN, USER),
    )


@pytest.mark.parametrize("fee", [0, MAX_FEE - 1, MAX_FEE + 1])
def test_a_receipt_whose_fee_is_not_the_signed_max_fee_is_a_finding(fee: int) -> None:
    entry = _entry(fee)
    findings = check_receipt(entry, NODE.address, DOMAIN)
    assert [(f.check, f.message, f.expected, f.claimed) for f in findings] == [
        (Check.RECEIPT, "fee is not the signed maxFee", MAX_FEE, fee)
    ]
    assert not entry.signed_by_user(NODE.address, DOMAIN)  # the explorer counts it in no total
    report = VerificationReport(task_id="0x" + entry.receipt.request_hash.hex())
    _check_request(report, entry.request, entry.receipt, report.task_id, NODE.address, DOMAIN)
    assert [c.name for c in report.failed()] == ["request maxFee"]  # the user's client refuses it too


def test_the_honest_receipt_states_the_signed_max_fee() -> None:
    entry = _entry(MAX_FEE)
    assert check_receipt(entry, NODE.address, DOMAIN) == []
    assert entry.signed_by_user(NODE.address, DOMAIN)
    report = VerificationReport(task_id="0x" + entry.receipt.request_hash.hex())
    _check_request(report, entry.request, entry.receipt, report.task_id, NODE.address, DOMAIN)
    assert report.ok and report.checks
