"""The node's chain port on the SDK's typed contract wrappers (``supernet.sdk.chain``).

web3's HTTP client is synchronous, so every call runs in a worker thread; one lock orders
this node's transactions (their nonces). ``commitBatch`` is split into send and wait, so the
batcher can persist the transaction hash in between and find the transaction after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from supernet.node.service.ports import SignedVoucher
from supernet.sdk.chain import Contracts, Voucher
from supernet.sdk.chain.bindings import reverts_as
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.chain.payments import Channel
from web3.exceptions import TimeExhausted, TransactionNotFound

log = logging.getLogger(__name__)

GAS_HEADROOM = 1.3
"""Gas limit over the estimate for ``commitBatch`` (its cost depends on the stake lock's state)."""


class Web3Chain:
    """:class:`~supernet.node.service.ports.ChainPort` on a real chain."""

    def __init__(self, contracts: Contracts, account: LocalAccount, price_per_token: int = 0) -> None:
        self.contracts = contracts.as_account(account)
        self.account = account
        self.price_per_token = price_per_token
        self._tx_lock = asyncio.Lock()
        self._max_redeem_batch: int | None = None

    @property
    def domain(self) -> Domain:
        """The deployment's EIP-712 domain."""
        return self.contracts.domain

    async def channel(self, user: str) -> Channel:
        """The payment channel from ``user`` to this node."""
        return await asyncio.to_thread(self.contracts.payments.channel, user, self.account.address)

    async def redeemed(self, user: str) -> int:
        """Cumulative wei this node redeemed from ``user``."""
        return (await self.channel(user)).redeemed

    async def gas_price(self) -> int:
        """The chain's current gas price in wei."""
        return int(await asyncio.to_thread(lambda: self.contracts.w3.eth.gas_price))

    async def max_redeem_batch(self) -> int:
        """The contract's ``MAX_REDEEM_BATCH``."""
        if self._max_redeem_batch is None:
            self._max_redeem_batch = await asyncio.to_thread(self.contracts.payments.max_redeem_batch)
        return self._max_redeem_batch

    async def send_commit(self, root: bytes, count: int, manifest_cid: str) -> str:
        """Sign and send ``commitBatch`` (a revert is raised before sending, by gas estimation)."""
        tm = self.contracts.task_manager
        w3 = self.contracts.w3

        def send() -> str:
            fn = tm.contract.functions.commitBatch(root, count, manifest_cid)
            with reverts_as(tm.name):  # a revert surfaces here, before anything is sent
                tx = fn.build_transaction(
                    {
                        "from": self.account.address,
                        "nonce": w3.eth.get_transaction_count(self.account.address, "pending"),
                        "chainId": w3.eth.chain_id,
                    }
                )
            tx["gas"] = int(tx["gas"] * GAS_HEADROOM)  # the estimate is exact for one state only
            signed = self.account.sign_transaction(cast(Any, tx))  # TxParams is a TypedDict
            return "0x" + bytes(w3.eth.send_raw_transaction(signed.raw_transaction)).hex()

        async with self._tx_lock:
            return await asyncio.to_thread(send)

    async def wait_commit(self, tx_hash: str) -> int | None:
        """The batch id from the mined commit; None if the chain dropped it or it reverted."""
        tm = self.contracts.task_manager
        w3 = self.contracts.w3

        def wait() -> int | None:
            try:
                w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
            try:
                receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.1)  # type: ignore[arg-type]
            except TimeExhausted:
                return None
            if receipt["status"] != 1:  # mined but reverted: the batcher sends a fresh one
                log.warning("commitBatch %s reverted in block %s", tx_hash, receipt["blockNumber"])
                return None
            return int(tm.events(receipt, "BatchCommitted")[0]["args"]["batchId"])

        return await asyncio.to_thread(wait)

    async def find_commit(self, root: bytes) -> int | None:
        """The id of a ``BatchCommitted`` of this node with ``root`` since the deployment, if any:
        a commit that landed while its transaction hash was never recorded (a crash between send
        and record) or after the wait for it gave up."""
        tm = self.contracts.task_manager

        def find() -> int | None:
            logs = tm.contract.events.BatchCommitted().get_logs(
                from_block=self.contracts.deployment.deploy_block,
                argument_filters={"node": self.account.address},
            )
            ids = [int(e["args"]["batchId"]) for e in logs if bytes(e["args"]["root"]) == root]
            return ids[0] if ids else None

        return await asyncio.to_thread(find)

    async def redeem(self, vouchers: Sequence[SignedVoucher]) -> str:
        """``Payments.redeem`` of all ``vouchers`` in one transaction."""
        node = self.account.address
        typed = [Voucher(user=v.user, node=node, cumulative_amount=v.cumulative_amount) for v in vouchers]
        sigs = [v.signature for v in vouchers]
        async with self._tx_lock:
            result = await asyncio.to_thread(self.contracts.payments.redeem, typed, sigs)
        return result.tx_hash

    async def ensure_registered(self, endpoint: str, model_ids: Sequence[str], stake_wei: int) -> None:
        """Register with ``stake_wei`` (at least the minimum), or top the stake up and sync the
        endpoint, models and price of an existing registration."""
        sm = self.contracts.service_manager
        ids = [bytes.fromhex(m[2:]) for m in model_ids]

        def sync() -> None:
            op = sm.get_operator(self.account.address)
            if not op.registered:
                stake = max(stake_wei - op.stake, sm.min_node_stake() - op.stake, 0)
                sm.register_node(endpoint, ids, self.price_per_token, stake)
                log.info("registered node %s at %s with stake %d", self.account.address, endpoint, stake)
                return
            view = sm.get_node(self.account.address)
            if op.stake < stake_wei:
                sm.add_stake(stake_wei - op.stake)
            if view.endpoint != endpoint:
                sm.update_endpoint(endpoint)
            if view.model_ids != ids:
                sm.update_models(ids)
            if view.price_per_token != self.price_per_token:
                sm.update_price(self.price_per_token)

        async with self._tx_lock:
            await asyncio.to_thread(sync)
