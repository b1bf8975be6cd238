"""EIP-712 signing: round trips, and digests checked against an independent encoding."""

from __future__ import annotations

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak
from supernet.sdk.chain.eip712 import (
    Confirmation,
    Domain,
    TaskRequest,
    Voucher,
    hash_task_request,
    hash_voucher,
    recover_confirmation,
    recover_task_request,
    recover_voucher,
    sign_confirmation,
    sign_task_request,
    sign_voucher,
)

USER = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(chain_id=31337, verifying_contract="0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0")
REQ = TaskRequest(
    user=USER.address,
    node="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    model_id=b"\x01" * 32,
    agent_hash=b"\x02" * 32,
    input_hash=b"\x03" * 32,
    max_fee=10**15,
    nonce=3,
    deadline=1_900_000_000,
)


def _domain_separator(d: Domain) -> bytes:
    typehash = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    fields = [typehash, keccak(b"Supernet"), keccak(b"1"), d.chain_id, d.verifying_contract]
    return keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"], fields))


def test_digests_match_an_independent_encoding() -> None:
    v = Voucher(USER.address, REQ.node, 123)
    th = keccak(b"Voucher(address user,address node,uint256 cumulativeAmount)")
    struct = keccak(encode(["bytes32", "address", "address", "uint256"], [th, v.user, v.node, 123]))
    assert hash_voucher(v, DOMAIN) == keccak(b"\x19\x01" + _domain_separator(DOMAIN) + struct)

    th = keccak(
        b"TaskRequest(address user,address node,bytes32 modelId,bytes32 agentHash,bytes32 inputHash,"
        b"uint256 maxFee,uint256 nonce,uint256 deadline)"
    )
    types = [
        "bytes32",
        "address",
        "address",
        "bytes32",
        "bytes32",
        "bytes32",
        "uint256",
        "uint256",
        "uint256",
    ]
    struct = keccak(encode(types, [th, *REQ.message().values()]))
    assert hash_task_request(REQ, DOMAIN) == keccak(b"\x19\x01" + _domain_separator(DOMAIN) + struct)


def test_round_trips() -> None:
    assert recover_task_request(REQ, DOMAIN, sign_task_request(REQ, DOMAIN, USER)) == USER.address
    v = Voucher(USER.address, REQ.node, 10**18)
    sig = sign_voucher(v, DOMAIN, USER)
    assert len(sig) == 65 and recover_voucher(v, DOMAIN, sig) == USER.address
    c = Confirmation(hash_task_request(REQ, DOMAIN), b"\x09" * 32)
    assert recover_confirmation(c, DOMAIN, sign_confirmation(c, DOMAIN, USER)) == USER.address


def test_any_change_breaks_the_signature() -> None:
    v = Voucher(USER.address, REQ.node, 10**18)
    sig = sign_voucher(v, DOMAIN, USER)
    assert recover_voucher(Voucher(USER.address, REQ.node, 10**18 + 1), DOMAIN, sig) != USER.address
    other_chain = Domain(chain_id=1, verifying_contract=DOMAIN.verifying_contract)
    assert recover_voucher(v, other_chain, sig) != USER.address
    assert recover_voucher(v, DOMAIN, sign_voucher(v, DOMAIN, OTHER)) == OTHER.address
