"""The order in which a validator's pending batches take their turns (`Validator._check_batches`).

A turn checks one group of a batch's sampled receipts. Turns go by node, then by batch: every
node with a pending batch takes a turn before any node takes a second, and every pending batch of
a node before any of them a second. What arrives (a batch, a node, or one forgotten because it had
nothing pending) joins the *back* of its rotation: arriving, however often, never buys a turn ahead
of those waiting. So a node's flood, in one batch or many, delays its own later batch (its cheat)
by one group per flood batch, and another node's batches by one group per round of the nodes; a
stream of new batches cannot hold a node's earlier batch at one group (a batch never served went
first, and a node served last step counted as never served:
``tests/unit/test_review_session_changes7.py``).

>>> from supernet.validator.db import BatchRow
>>> def row(batch_id, node):
...     return BatchRow(batch_id, node, b"", 8, 0, "", "pending")
>>> pending = {1: row(1, "0xa"), 2: row(2, "0xa"), 3: row(3, "0xb")}
>>> order = TurnOrder()
>>> order.admit(pending.values())
>>> turns = []
>>> for _ in range(4):
...     batch = order.next(pending)
...     order.served(batch)
...     turns.append(batch.batch_id)
>>> turns  # node a, node b, node a's second batch, node b again
[1, 3, 2, 3]
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Mapping

from supernet.validator.db import BatchRow


class TurnOrder:
    """Who is served next: per node and per batch, the time of its last turn (or of its arrival)."""

    def __init__(self) -> None:
        self._clock = itertools.count()
        self._node_at: dict[str, int] = {}
        self._batch_at: dict[int, int] = {}
        self.samples: dict[int, tuple[bytes, list[int]]] = {}
        """This validator's seed and sampled indexes of each batch served, kept while it is pending:
        a batch opened for one group each turn is not sampled (and cross-checked on chain) again
        each time, unless its seed changed (a reorg replaced the seed block: `Validator._open_batch`)."""
        self._undone: set[int] = set()

    def admit(self, batches: Iterable[BatchRow]) -> None:
        """Put the batches not seen before at the back of their node's rotation, and their nodes,
        if not seen before, at the back of the nodes' (oldest batch first in both)."""
        for batch in sorted(batches, key=lambda b: b.batch_id):
            node = batch.node.lower()
            if node not in self._node_at:
                self._node_at[node] = next(self._clock)
            if batch.batch_id not in self._batch_at:
                self._batch_at[batch.batch_id] = next(self._clock)

    def next(self, pending: Mapping[int, BatchRow], skip: Collection[int] = ()) -> BatchRow | None:
        """The admitted batch whose turn it is, of ``pending`` less ``skip`` (None: none left): of
        the node served longest ago, the batch served longest ago."""

        def waited(b: BatchRow) -> tuple[int, int]:
            return self._node_at[b.node.lower()], self._batch_at[b.batch_id]

        return min((b for i, b in pending.items() if i not in skip), key=waited, default=None)

    def served(self, batch: BatchRow) -> None:
        """``batch`` took a turn that did work: it and its node go to the back."""
        self._node_at[batch.node.lower()] = self._batch_at[batch.batch_id] = next(self._clock)

    @property
    def batches(self) -> frozenset[int]:
        """The batches admitted and not forgotten."""
        return frozenset(self._batch_at)

    def forget(self, batch_ids: Iterable[int]) -> None:
        """Forget batches a reorg undid (their samples were drawn from an orphaned commit): one
        re-included joins the back, and the turns in progress drop them (`take_undone`)."""
        for batch_id in batch_ids:
            self._batch_at.pop(batch_id, None)
            self.samples.pop(batch_id, None)
            self._undone.add(batch_id)

    def take_undone(self) -> set[int]:
        """The batches `forget` was given since the last call."""
        undone, self._undone = self._undone, set()
        return undone

    def keep(self, pending: Collection[int], nodes: Collection[str]) -> None:
        """Forget the batches no longer ``pending`` and the nodes with nothing pending: should they
        come back, they join the back (so forgetting never moves anyone ahead)."""
        for batch_id in [i for i in self._batch_at if i not in pending]:
            del self._batch_at[batch_id]
            self.samples.pop(batch_id, None)
        for node in [n for n in self._node_at if n not in nodes]:
            del self._node_at[node]
