"""Choosing a node: every registered node probed at once, ranked, and the failures explained.

A node that is unreachable, answers garbage or does not serve the model is not silently dropped:
its reason is kept, so "no node serves this model" can say which nodes were tried and why each
failed. Reachable nodes are ranked by (slashes, price per token, measured latency, stake): a node
that was proven to cheat comes after every clean one, then the cheapest, then the fastest to
answer, then the best staked.

>>> ranked = rank(probes)                    # doctest: +SKIP
>>> [p.address for p in ranked if p.ok]      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from supernet.sdk.node_api import NodeInfo

PROBE_TIMEOUT_S = 5.0
"""Longest a node may take to answer ``GET /v1/node`` during discovery."""


@dataclass(frozen=True)
class Probe:
    """One registered node as discovery saw it."""

    address: str
    url: str
    price_per_token: int
    stake: int
    slash_count: int
    latency_s: float | None = None
    info: NodeInfo | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Reachable and serving what was asked."""
        return self.problem is None and self.info is not None

    def describe(self) -> str:
        """One line for error messages."""
        return f"{self.address} at {self.url or '(no endpoint)'}: {self.problem or 'ok'}"


async def probe(
    views: Iterable[Any],
    node_info: Callable[[str], Awaitable[NodeInfo]],
    serves: Callable[[NodeInfo], bool],
    per_node_s: float = PROBE_TIMEOUT_S,
) -> list[Probe]:
    """Ask every node (``ServiceManager.getNode`` views) for ``/v1/node`` concurrently."""

    async def one(view: Any) -> Probe:
        base = Probe(view.node, view.endpoint, view.price_per_token, view.stake, view.slash_count)
        started = time.monotonic()
        try:
            info = await asyncio.wait_for(node_info(view.endpoint), per_node_s)
        except TimeoutError:
            return _with(base, problem=f"no answer within {per_node_s:.0f} s")
        except Exception as exc:  # unreachable or broken: kept with its reason, never fatal
            return _with(base, problem=f"unreachable ({type(exc).__name__}: {exc})"[:200])
        latency = time.monotonic() - started
        if not serves(info):
            return _with(base, latency_s=latency, info=info, problem="does not serve this model")
        return _with(base, latency_s=latency, info=info)

    return list(await asyncio.gather(*(one(v) for v in views)))


def rank(probes: Iterable[Probe]) -> list[Probe]:
    """The usable probes, best first: fewest slashes, cheapest, fastest, best staked."""
    usable = [p for p in probes if p.ok]
    return sorted(usable, key=lambda p: (p.slash_count, p.price_per_token, p.latency_s or 0.0, -p.stake))


def _with(p: Probe, **changes: Any) -> Probe:
    return Probe(**{**p.__dict__, **changes})
