"""The sampling seeds' randomness (``SeedBeacon``) and the block-header proofs it takes.

A batch's seed is ``keccak256(abi.encode(value, batchId))`` with ``value`` the beacon's value of
the seed block ``commitBlock + SEED_DELAY_BLOCKS``. Under the default source, `Source.PREVRANDAO`,
that value is the block's RANDAO mix (its ``mixHash``), which the block's builder does not set:
the EVM reads it only inside that block, so a validator proves it afterwards by passing the
block's RLP header to ``seal`` (`SeedBeacon.seal` here builds the header from the RPC's block and
checks its hash before sending). docs/protocol.md, "Seeds".

>>> beacon = contracts.task_manager.seed_beacon                        # doctest: +SKIP
>>> beacon.randomness(seed_block)                                      # doctest: +SKIP
(b'', False)
>>> beacon.seal(seed_block).value.hex()                                # doctest: +SKIP
'5f2c…'
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from functools import cached_property
from typing import Any

import rlp
from eth_utils import keccak
from supernet.sdk.chain.bindings import Binding, TxResult
from supernet.sdk.chain.errors import ChainError
from web3 import Web3

_SEALED_SLOT = 0
"""The storage slot of SeedBeacon's ``_sealed`` mapping (its only state variable; the rest are
immutables): `SeedBeacon.sealed` reads a seal there (tests/unit/test_log_ranges.py pins it)."""

HEADER_FIELDS = (
    "parentHash",
    "sha3Uncles",
    "miner",
    "stateRoot",
    "transactionsRoot",
    "receiptsRoot",
    "logsBloom",
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "extraData",
    "mixHash",
    "nonce",
)
"""The fields every post-merge Ethereum header starts with, in RLP order (mixHash is index 13)."""

LATER_FIELDS = (
    "baseFeePerGas",  # London
    "withdrawalsRoot",  # Shanghai
    "blobGasUsed",  # Cancun
    "excessBlobGas",
    "parentBeaconBlockRoot",
    "requestsHash",  # Prague
)
"""Fields forks appended, in order: a header holds a prefix of them."""

_INTEGERS = {"difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas"}
_INTEGERS |= {"blobGasUsed", "excessBlobGas"}


class Source(IntEnum):
    """Where a SeedBeacon's values come from (``SeedBeacon.SOURCE``)."""

    BLOCKHASH = 0
    PREVRANDAO = 1


class HeaderError(ChainError):
    """A block's header cannot be rebuilt so that it hashes to the block's hash (a chain whose
    headers hold fields this encoder does not know)."""


def header_rlp(block: Mapping[str, Any]) -> bytes:
    """The RLP encoding of a block's header, as the chain hashed it.

    Raises:
        HeaderError: the encoding does not hash to ``block["hash"]``.
    """
    names = list(HEADER_FIELDS)
    for name in LATER_FIELDS:
        if block.get(name) is None:
            break
        names.append(name)
    fields = dict(block)
    if "extraData" not in fields and "proofOfAuthorityData" in fields:  # web3's PoA middleware renames it
        fields["extraData"] = fields["proofOfAuthorityData"]
    try:
        encoded = rlp.encode([_field(name, fields[name]) for name in names])
    except KeyError as exc:
        raise HeaderError(f"block {block.get('number')} lacks header field {exc}") from None
    if keccak(encoded) != bytes(block["hash"]):
        raise HeaderError(
            f"block {block.get('number')}: the header rebuilt from fields {names[0]} .. {names[-1]} does "
            f"not hash to the block's hash (a header field this encoder does not know?)"
        )
    return bytes(encoded)


def _field(name: str, value: Any) -> bytes:
    if name in _INTEGERS:
        number = int(value)
        return number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return bytes(value)


class SeedBeacon(Binding):
    """One random value per block number: the seeds' source (see the module's notes)."""

    NAME = "SeedBeacon"

    @cached_property
    def source(self) -> Source:
        """Where this beacon's values come from (immutable: read once)."""
        return Source(int(self.call("SOURCE")))

    def value_from_header(self, block_number: int) -> bytes | None:
        """The value `seal` would store for a mined block, computed from the RPC's block (its
        header rebuilt and checked against its hash) without a transaction: what a validator
        samples by before anyone sealed; None while the block is not mined.

        Raises:
            HeaderError: the RPC's block does not rebuild to its hash.
        """
        if int(self.w3.eth.block_number) <= block_number:
            return None
        block = self.w3.eth.get_block(block_number)
        if self.source is Source.BLOCKHASH:
            return bytes(block["hash"])
        header_rlp(block)  # the fields are the ones the hash covers
        mix = bytes(block["mixHash"])
        if not any(mix):  # as `seal` (NoRandomness): a zero mix is no randomness, and known to all
            raise HeaderError(f"block {block_number} carries no RANDAO mix: deploy with SOURCE=Blockhash")
        return mix

    def randomness(self, block_number: int) -> tuple[bytes, bool]:
        """``(value, known)`` of a block: unknown while it may still become known (the block not
        mined, or under `Source.PREVRANDAO` not sealed yet); known and zero once it is gone."""
        value, known = self.call("randomness", block_number)
        return bytes(value), bool(known)

    def sealed(self, block_number: int) -> bool:
        """Whether a seal stored the block's value (its ``Sealed`` event). Under `Source.BLOCKHASH`
        `randomness` says known either way while `blockhash` reaches the block: only a seal keeps
        the value past that. Read from the contract's storage (``_sealed[blockNumber]``, slot 0:
        SeedBeacon's only state variable), not from its ``Sealed`` log: a log query from the block
        to the head is refused once the block is older than a hosted RPC's range cap, and a seal
        check is part of every challenge (tests/unit/test_review_capped_rpc.py)."""
        slot = Web3.solidity_keccak(["uint256", "uint256"], [block_number, _SEALED_SLOT])
        value = self.w3.eth.get_storage_at(self.contract.address, int.from_bytes(slot, "big"))
        return any(value)  # a stored value is a block hash or mix: never zero

    def seal(self, block_number: int) -> TxResult:
        """Store a mined block's value for good (under `Source.PREVRANDAO`, proven by its header,
        fetched from the RPC and checked against the block's hash here first); ``value`` is it.

        Raises:
            HeaderError: the RPC's block does not rebuild to its hash.
            ContractError: ``BlockNotMined``, ``BlockHashGone``, ``BlockAlreadySealed`` ...
        """
        header = b""
        if self.source is Source.PREVRANDAO:
            header = header_rlp(self.w3.eth.get_block(block_number))
        tx = self.transact("seal", block_number, header)
        return TxResult(tx.receipt, bytes(self.events(tx, "Sealed")[0]["args"]["value"]))
