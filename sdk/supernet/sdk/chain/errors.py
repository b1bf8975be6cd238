"""Errors of the chain layer: one base per kind, and revert data decoded into typed exceptions.

Every custom error of the contracts has a generated subclass of `ContractError` in
`supernet.sdk.chain.contract_errors` (written by ``scripts/gen_bindings.py`` from the ABIs, never
by hand); `decode_revert` maps revert data to it by its 4-byte selector and decodes its
arguments, which become attributes of the exception.

>>> from eth_abi import encode
>>> from eth_utils import keccak, to_checksum_address
>>> exc = decode_revert(keccak(b"Error(string)")[:4] + encode(["string"], ["nope"]))
>>> type(exc).__name__, exc.reason
('RevertError', 'nope')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from supernet.sdk.errors import SupernetError


class ChainError(SupernetError):
    """Root of the chain layer's errors (RPC, transactions, reverts, bindings)."""


class BindingsError(ChainError, RuntimeError):
    """The generated ABIs are missing or do not match what the code expects."""


class InsufficientFundsError(ChainError):
    """The signing account cannot pay for a transaction's gas and value."""


class TransactionFailed(ChainError):
    """A transaction was mined with status 0 and no revert data could be recovered."""

    def __init__(self, message: str, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


class ContractError(ChainError):
    """A contract call reverted; subclasses are the contracts' custom errors.

    Attributes:
        values: the decoded error arguments by name (also set as attributes).
        data: the raw revert data.
        contract: name of the contract that was called, when known.
    """

    error_name: ClassVar[str] = ""
    signature: ClassVar[str] = ""
    selector: ClassVar[bytes] = b""
    arg_names: ClassVar[tuple[str, ...]] = ()
    arg_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *values: Any, data: bytes = b"", contract: str | None = None) -> None:
        self.values: dict[str, Any] = dict(zip(self.arg_names, values, strict=False))
        self.data = data
        self.contract = contract
        for name, value in self.values.items():
            if name and not hasattr(ContractError, name):
                setattr(self, name, value)
        super().__init__(self._describe())

    def _describe(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        where = f"{self.contract}: " if self.contract else ""
        return f"{where}{self.error_name or type(self).__name__}({args})"


def _fmt(v: Any) -> str:
    return "0x" + v.hex() if isinstance(v, bytes) else repr(v)


class RevertError(ContractError):
    """``revert("reason")`` / ``require(cond, "reason")``: Solidity's ``Error(string)``."""

    error_name = "Error"
    signature = "Error(string)"
    selector = keccak(b"Error(string)")[:4]
    arg_names = ("reason",)
    arg_types = ("string",)
    reason: str


class PanicError(ContractError):
    """A Solidity ``Panic(uint256)`` (assert, overflow, division by zero ...)."""

    error_name = "Panic"
    signature = "Panic(uint256)"
    selector = keccak(b"Panic(uint256)")[:4]
    arg_names = ("code",)
    arg_types = ("uint256",)
    code: int


class UnknownContractError(ContractError):
    """Revert data whose selector no known ABI declares (or an empty revert)."""

    def _describe(self) -> str:
        where = f"{self.contract}: " if self.contract else ""
        return f"{where}reverted with unknown data 0x{self.data.hex()}"


def _registry() -> Mapping[bytes, type[ContractError]]:
    from supernet.sdk.chain.contract_errors import BY_SELECTOR

    return {RevertError.selector: RevertError, PanicError.selector: PanicError, **BY_SELECTOR}


def error_class(selector: bytes) -> type[ContractError] | None:
    """The exception class of a 4-byte error selector, or None."""
    return _registry().get(bytes(selector))


def decode_revert(data: bytes | str | None, contract: str | None = None) -> ContractError:
    """Turn revert data into the matching typed exception (not raised).

    Args:
        data: the revert data (bytes or 0x-hex); None or empty for a bare ``revert()``.
        contract: the called contract's name, for the message.

    Returns:
        An instance of the generated subclass with decoded arguments, or an
        `UnknownContractError` carrying the raw data.
    """
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data or b"")
    cls = error_class(raw[:4]) if len(raw) >= 4 else None
    if cls is None:
        return UnknownContractError(data=raw, contract=contract)
    try:
        values = decode(list(cls.arg_types), raw[4:]) if cls.arg_types else ()
    except DecodingError:
        return UnknownContractError(data=raw, contract=contract)
    values = tuple(
        to_checksum_address(v) if t == "address" else v for v, t in zip(values, cls.arg_types, strict=True)
    )
    return cls(*values, data=raw, contract=contract)
