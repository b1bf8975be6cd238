"""Wires a real node from its settings: key, content store, chain, kernel and LLM engine.

>>> service = await build_node(NodeSettings.load(Path("node.toml")))  # doctest: +SKIP
>>> await service.serve()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from supernet.node.faults import FaultInjector
from supernet.node.kernel.chain_read import CHAIN_READ_GAS
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.decoys import decoy_faults
from supernet.node.service.identity import load_account
from supernet.node.service.metrics import METRICS
from supernet.node.service.runner import NodeService, open_bound
from supernet.sdk.chain import Contracts, Deployment
from supernet.sdk.chain.rpc_checks import call_gas_shortfall
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import serve_in_thread

log = logging.getLogger(__name__)


@dataclass
class Resources:
    """What :func:`build_node` opened, closed by :meth:`close` after the service stops."""

    closers: list[Callable[[], object]] = field(default_factory=list)

    async def close(self) -> None:
        """Close everything in reverse order."""
        for close in reversed(self.closers):
            result = close()
            if hasattr(result, "__await__"):
                await result


async def build_node(
    settings: NodeSettings, faults: FaultInjector | None = None
) -> tuple[NodeService, Resources]:
    """Build the node service with its real parts (the model loads here: seconds to a minute).

    Returns:
        The service (call ``serve()``), and the resources to close afterwards.
    """
    from supernet.node.service.kernel_executor import KernelExecutor  # torch: only in the node

    res = Resources()
    account = load_account(settings)
    store_url = settings.store.url
    if store_url is None:
        store_dir = settings.store_dir()
        store_dir.mkdir(parents=True, exist_ok=True)
        store_url, stop = serve_in_thread(store_dir, port=settings.store.embedded_port)
        res.closers.append(stop)
        log.info("embedded content store in %s at %s", store_dir, store_url)
    store = StoreClient(store_url)
    res.closers.append(store.aclose)
    chain = None
    if settings.chain.enabled:
        assert settings.chain.rpc_url is not None and settings.chain.deployment is not None
        # the chain id checked and pinned, the answer floor the deployment file's; every
        # transaction a duty (its stake at risk) within [chain] max_priority_fee_gwei
        contracts = Contracts.connect(
            settings.chain.rpc_url,
            Deployment.load(settings.chain.deployment),
            account,
            tip_ceiling=settings.chain.tip_ceiling(),
            duty=True,
        )
        chain = Web3Chain(contracts, account, settings.pricing.price_per_token_wei)
        # agents' chain_read calls run with the protocol's gas: a lower cap fails the reads that
        # need more ("the chain cannot be read now", which validators accept), so only warned
        shortfall = await asyncio.to_thread(call_gas_shortfall, contracts.w3, CHAIN_READ_GAS)
        if shortfall is not None:
            log.warning("chain_read: %s", shortfall)
    # a database promised to another chain (or to a chain, in dev mode) stops the start here,
    # before the model loads (`NodeService.setup` binds it again)
    open_bound(settings.data_dir / "node.sqlite3", chain.domain if chain is not None else None).close()
    if faults is None and chain is not None and settings.decoys.enabled:
        faults = decoy_faults(bytes(account.key))  # no fault of its own: it only corrupts the node's decoys
    if faults is not None:
        injector = faults
        METRICS.watch_faults(lambda: len(injector.fired))
    executor = await KernelExecutor.create(settings, store, faults)
    res.closers.append(executor.close)
    service = NodeService(
        settings,
        executor,
        account,
        store,
        chain,
        store_url=settings.store.public_url,  # None: the read-only /v1/store of the public API
        faults=faults,
    )
    log.info(
        "node %s: model %s, agents %s", account.address, list(executor.model_ids()), settings.engine.agents
    )
    return service, res
