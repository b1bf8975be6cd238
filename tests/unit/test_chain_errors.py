"""Revert data decoding into the generated typed exceptions."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from supernet.sdk.chain import contract_errors
from supernet.sdk.chain.contract_errors import BY_SELECTOR, InsufficientStake, StaleVoucher
from supernet.sdk.chain.errors import (
    ChainError,
    ContractError,
    PanicError,
    RevertError,
    UnknownContractError,
    decode_revert,
)
from supernet.sdk.errors import SupernetError

SAMPLES = {
    "string": "s",
    "bool": True,
    "uint256": 7,
    "uint64": 9,
    "uint32": 2,
    "address": "0x" + "ab" * 20,
    "bytes32": b"\x01" * 32,
}


def test_every_generated_error_round_trips() -> None:
    assert BY_SELECTOR
    for selector, cls in BY_SELECTOR.items():
        assert keccak(text=cls.signature)[:4] == selector
        values = [SAMPLES[t] for t in cls.arg_types]
        exc = decode_revert(selector + encode(list(cls.arg_types), values), "X")
        assert type(exc) is cls and isinstance(exc, ContractError)
        assert list(exc.values) == list(cls.arg_names)
        assert exc.contract == "X" and cls.error_name in str(exc)


def test_decoded_arguments_are_attributes() -> None:
    data = InsufficientStake.selector + encode(["uint256", "uint256"], [1, 2])
    exc = decode_revert("0x" + data.hex(), "ServiceManager")
    assert isinstance(exc, InsufficientStake) and (exc.stake, exc.minimum) == (1, 2)
    user = "0x" + "cd" * 20
    exc2 = decode_revert(StaleVoucher.selector + encode(["address", "uint256", "uint256"], [user, 5, 5]))
    assert isinstance(exc2, StaleVoucher) and exc2.user.lower() == user and exc2.alreadyRedeemed == 5


def test_builtin_and_unknown_reverts() -> None:
    err = decode_revert(keccak(b"Error(string)")[:4] + encode(["string"], ["nope"]))
    assert isinstance(err, RevertError) and err.reason == "nope"
    panic = decode_revert(keccak(b"Panic(uint256)")[:4] + encode(["uint256"], [0x11]))
    assert isinstance(panic, PanicError) and panic.code == 0x11
    assert isinstance(decode_revert(b"\xde\xad\xbe\xef"), UnknownContractError)
    assert isinstance(decode_revert(None), UnknownContractError)
    truncated = InsufficientStake.selector + b"\x00" * 10
    assert isinstance(decode_revert(truncated), UnknownContractError)


def test_one_error_tree() -> None:
    assert issubclass(contract_errors.OperatorFrozen, ChainError)
    assert issubclass(ChainError, SupernetError)
    with pytest.raises(SupernetError):
        raise decode_revert(contract_errors.ZeroAmount.selector)
