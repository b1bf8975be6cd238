"""Choosing a node: every registered node probed at once, scored, and the failures explained.

A node that is unreachable, answers garbage or does not serve the model is not silently dropped:
its reason is kept, so "no node serves this model" can say which nodes were tried and why each
failed. Reachable nodes are ranked by one score (`score`, lower is better) of their task fee, their
measured latency and their on-chain record (slashes: fraud verdicts upheld against them; open
disputes: verdicts pending); stake only breaks ties. ``Probe.explain`` says why a node scored
what it did, so the client can say which node it chose and why.

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

LATENCY_REF_S = 1.0
"""Measured latency that counts as much as the node's whole price (see `score`)."""
SLASH_FACTOR = 10.0
"""Each upheld fraud verdict (slash) multiplies a node's score by this (see `score`)."""
DISPUTE_FACTOR = 2.0
"""Each dispute open against a node (verdict pending) multiplies its score by this."""


@dataclass(frozen=True)
class Score:
    """A node's score and its parts (`score`)."""

    total: float
    price: int
    latency_s: float
    slashes: int
    open_disputes: int

    def __str__(self) -> str:
        return (
            f"score {self.total:.4g} = (price {self.price} + 1) x (1 + {self.latency_s * 1000:.0f} ms / "
            f"{LATENCY_REF_S:g} s) x {SLASH_FACTOR:g}^{self.slashes} slashes x "
            f"{DISPUTE_FACTOR:g}^{self.open_disputes} open disputes"
        )


def score(price: int, latency_s: float, slashes: int, open_disputes: int = 0) -> Score:
    """A node's score, lower is better: what a token effectively costs with it.

    ``score = (price + 1) x (1 + latency_s / LATENCY_REF_S) x SLASH_FACTOR^slashes
    x DISPUTE_FACTOR^open_disputes``

    - ``price``: the fee in wei the client will sign for one task with the node, its advertised
      ``taskFee`` (`Probe.price`; ``+ 1`` so that free nodes still differ by latency and record).
    - ``latency_s``: how long the node took to answer ``GET /v1/node`` just now (measured here,
      not claimed by the node); 1 s of latency counts as much as doubling the price.
    - ``slashes``: the node's ``slashCount`` on chain (``ServiceManager.getNode``). A node is
      slashed only when a challenge against it is upheld: the validators' fraud verdict (or a
      failed availability challenge). Each one multiplies the score by 10: a node once proven to
      cheat must be more than ten times cheaper than a clean one to be chosen.
    - ``open_disputes``: the node's ``frozenCount`` on chain, the challenges against it whose
      verdict is pending. Each one doubles the score: suspicion, not proof.

    These are the verdict records the chain holds per node, read with one ``getNode`` call; the
    challenges a node *won* are not counted per node on chain (reading them would mean scanning
    every challenge), so a clean record is simply no slash and no open dispute. The product
    keeps the score free of units: only ratios of prices, latencies and the record matter.
    """
    total = (
        (price + 1)
        * (1.0 + latency_s / LATENCY_REF_S)
        * SLASH_FACTOR**slashes
        * DISPUTE_FACTOR**open_disputes
    )
    return Score(total, price, latency_s, slashes, open_disputes)


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
    frozen_count: int = 0  # disputes open against the node on chain

    @property
    def ok(self) -> bool:
        """Reachable and serving what was asked."""
        return self.problem is None and self.info is not None

    @property
    def price(self) -> int:
        """What the node is ranked on: the fee the client signs for one of its tasks (``taskFee``
        of ``GET /v1/node``, what the voucher pays), or, for a node not probed, its registered
        price per token. The registered price alone would let a node rank first at 1 wei per
        token and charge any ``taskFee``."""
        return self.info.taskFee if self.info is not None else self.price_per_token

    @property
    def score(self) -> Score:
        """This node's `score`."""
        return score(self.price, self.latency_s or 0.0, self.slash_count, self.frozen_count)

    def describe(self) -> str:
        """One line for error messages."""
        return f"{self.address} at {self.url or '(no endpoint)'}: {self.problem or 'ok'}"

    def explain(self) -> str:
        """One line saying why this node ranks where it does."""
        return f"{self.address} at {self.url}: {self.score}"


async def probe(
    views: Iterable[Any],
    node_info: Callable[[str], Awaitable[NodeInfo]],
    serves: Callable[[NodeInfo], bool],
    per_node_s: float = PROBE_TIMEOUT_S,
) -> list[Probe]:
    """Ask every node (``ServiceManager.getNode`` views) for ``/v1/node`` concurrently."""

    async def one(view: Any) -> Probe:
        base = Probe(
            view.node,
            view.endpoint,
            view.price_per_token,
            view.stake,
            view.slash_count,
            frozen_count=getattr(view, "frozen_count", 0),
        )
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
    """The usable probes, best first: lowest `score`, then best staked."""
    usable = [p for p in probes if p.ok]
    return sorted(usable, key=lambda p: (p.score.total, -p.stake))


def _with(p: Probe, **changes: Any) -> Probe:
    return Probe(**{**p.__dict__, **changes})


def with_problem(p: Probe, problem: str) -> Probe:
    """``p`` left out of the ranking, with why."""
    return _with(p, problem=problem)
