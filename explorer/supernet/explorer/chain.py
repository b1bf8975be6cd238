"""Reading the protocol's events off the chain, decoded once into plain `ChainLog` records.

One ``eth_getLogs`` over the four contracts per block range, in ranges the RPC accepts (a hosted RPC
refuses a query over more blocks than its cap: `supernet.sdk.chain.logs.LogRanges` narrows a
refused range and widens it again); each log is decoded with the ABI
its topic belongs to (`supernet.sdk.chain.bindings.load_abi`, generated from forge's artifacts)
and its arguments made JSON-plain (bytes as ``0x`` hex, addresses checksummed, integers kept),
so the same record goes into the database and, in the benchmark, comes from a generator.

>>> reader = ChainReader(make_web3(url), Deployment.load(path))   # doctest: +SKIP
>>> last, logs = reader.scan(dep.deploy_block, reader.head())     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import event_abi_to_log_topic
from supernet.sdk.chain.bindings import load_abi
from supernet.sdk.chain.deployment import CONTRACT_NAMES, Deployment
from supernet.sdk.chain.logs import LogRanges, block_logs
from web3 import Web3
from web3._utils.events import get_event_data
from web3.types import FilterParams


@dataclass(frozen=True)
class ChainLog:
    """One protocol event, decoded: where it was logged and its arguments (JSON-plain)."""

    block: int
    log_index: int
    tx_hash: str
    contract: str
    name: str
    args: Mapping[str, Any]
    block_hash: str = ""  # of the branch the log was read from (the indexer checks it)


def plain(value: Any) -> Any:
    """A decoded ABI value as JSON data: bytes as 0x-hex, tuples/structs as lists/dicts."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class WrongChain(RuntimeError):
    """The RPC answers for another chain than the deployment's: its contracts at the same
    addresses (the deployer's address and nonce) are not this deployment's."""


class ChainReader:
    """Logs, heads and block hashes of one deployment, over a `Web3` client.

    Args:
        w3: a connected client.
        deployment: the contracts' addresses.
        ranges: the widths of log queries the RPC accepts, as learned (default: a new `LogRanges`).
    """

    def __init__(self, w3: Web3, deployment: Deployment, ranges: LogRanges | None = None) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.ranges = ranges or LogRanges()
        self._addresses = [Web3.to_checksum_address(deployment.address(n)) for n in CONTRACT_NAMES]
        # the SDK's client caches the chain id (per thread, pinned once connected): the check of
        # a URL that moved needs the RPC's answer of the moment, from a client that caches nothing
        uri = getattr(w3.provider, "endpoint_uri", None)
        self._id_client = Web3(Web3.HTTPProvider(str(uri), request_kwargs={"timeout": 30})) if uri else w3
        self._names = {deployment.address(n).lower(): n for n in CONTRACT_NAMES}
        # by (address, topic): two contracts declare events of one signature (TaskManager's and
        # OmissionManager's `Withdrawn`), and a log is its emitter's
        self._decoders: dict[tuple[str, bytes], tuple[str, dict[str, Any]]] = {}
        for name in CONTRACT_NAMES:
            address = deployment.address(name).lower()
            for item in load_abi(name):
                if item["type"] == "event" and not item.get("anonymous"):
                    topic = bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
                    self._decoders[(address, topic)] = (name, item)

    def check_chain(self) -> None:
        """Refuse an RPC of another chain than the deployment's (asked on every scan: an RPC URL
        can be moved, or fail over, while the explorer runs).

        Raises:
            WrongChain: its chain id is not the deployment's.
        """
        chain_id = int(self._id_client.eth.chain_id)
        if chain_id != self.deployment.chain_id:
            raise WrongChain(
                f"the RPC answers for chain {chain_id}, the deployment is on chain "
                f"{self.deployment.chain_id}: refusing to index another chain's contracts"
            )

    def head(self) -> int:
        """The latest block number."""
        return int(self.w3.eth.block_number)

    def block(self, number: int) -> tuple[str, int]:
        """``(hash, timestamp)`` of block ``number``."""
        b = self.w3.eth.get_block(number)
        return "0x" + bytes(b["hash"]).hex(), int(b["timestamp"])

    def gas_used(self, tx_hash: str) -> int:
        """Gas the transaction used (its receipt)."""
        return int(self.w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])  # type: ignore[arg-type]

    def scan(self, from_block: int, to_block: int) -> tuple[int, list[ChainLog]]:
        """The protocol events from ``from_block`` to ``to_block``, in chain order, read in ranges
        the RPC accepts (`LogRanges.scan` over `logs`), as far as they can be read: (the last block
        read, ``from_block - 1`` if none; its events). A block whose query fails ends the scan
        there (logged), for a follower to go on from at its next step."""
        return self.ranges.scan(self.logs, from_block, to_block, self._block_logs)

    def _block_logs(self, block: int) -> list[ChainLog]:
        """A block whose log query the RPC refused alone (too many logs: anyone may emit a flood of
        cheap events in one block), read from its receipts (`supernet.sdk.chain.logs.block_logs`)."""
        return self._decode(block_logs(self.w3, block, self._addresses))

    def logs(self, from_block: int, to_block: int) -> list[ChainLog]:
        """Every protocol event in ``[from_block, to_block]``, in chain order: ONE ``eth_getLogs``
        over the deployment's contracts, refused by an RPC capping ranges narrower than it (read
        wider ranges with `scan`)."""
        query: FilterParams = {"address": self._addresses, "fromBlock": from_block, "toBlock": to_block}
        return self._decode(self.w3.eth.get_logs(query))

    def _decode(self, raw: Sequence[Any]) -> list[ChainLog]:
        """The protocol events among ``raw`` logs, decoded, in chain order."""
        out: list[ChainLog] = []
        for log in raw:
            if not log["topics"]:
                continue
            found = self._decoders.get((str(log["address"]).lower(), bytes(log["topics"][0])))
            if found is None:
                continue
            contract, abi = found
            ev = get_event_data(self.w3.codec, abi, log)
            out.append(
                ChainLog(
                    block=int(ev["blockNumber"]),
                    log_index=int(ev["logIndex"]),
                    tx_hash="0x" + bytes(ev["transactionHash"]).hex(),
                    contract=contract,
                    name=str(ev["event"]),
                    args=plain(dict(ev["args"])),
                    block_hash="0x" + bytes(log["blockHash"]).hex(),
                )
            )
        out.sort(key=lambda e: (e.block, e.log_index))
        return out
