"""The context manager: snapshots of preempted generations, kept until they resume.

When the scheduler preempts a generation (its token slice is up and another call waits),
the engine hands back a ``SequenceSnapshot`` (tokens so far, sampling state, KV cache). The
context manager holds it under the call's request id until the scheduler resubmits the call
with ``resume=snapshot``, so the generation continues exactly where it stopped: the same
tokens as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContextStats:
    """Counters of the context manager."""

    saved: int
    restored: int
    held: int


class ContextManager:
    """Snapshot store keyed by request id (one live snapshot per generation)."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Any] = {}
        self._saved = 0
        self._restored = 0

    def save(self, request_id: str, snapshot: Any) -> None:
        """Keep ``snapshot`` of the preempted generation ``request_id``.

        Raises:
            ValueError: A snapshot of that generation is already held (it was never resumed).
        """
        if request_id in self._snapshots:
            raise ValueError(f"generation {request_id} already has a snapshot")
        self._snapshots[request_id] = snapshot
        self._saved += 1

    def take(self, request_id: str) -> Any | None:
        """Remove and return the snapshot of ``request_id`` (``None`` for a fresh generation)."""
        snapshot = self._snapshots.pop(request_id, None)
        if snapshot is not None:
            self._restored += 1
        return snapshot

    def discard(self, request_id: str) -> None:
        """Drop a snapshot whose caller went away."""
        self._snapshots.pop(request_id, None)

    def stats(self) -> ContextStats:
        """Counters: snapshots saved, restored and held now."""
        return ContextStats(saved=self._saved, restored=self._restored, held=len(self._snapshots))
