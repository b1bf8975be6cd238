"""Scheduling policies: which waiting LLM call runs next, and when a running one yields.

A policy orders *entries* (one per LLM call) and is told how many tokens each one was
served. The scheduler asks it three things: :meth:`Policy.pop` the next entry,
:meth:`Policy.should_preempt` a running entry whose time slice is up, and :meth:`Policy.charge`
tokens to an entry. Policies hold no locks and never await: the scheduler calls them from
the event loop only.

- :class:`FifoPolicy`: arrival order, each call runs to completion.
- :class:`RoundRobinPolicy`: arrival order; a call whose token slice is up yields to a
  waiting one and goes to the back of the queue.
- :class:`FairSharePolicy`: fee priority with fair share across users (weighted fair
  queueing): every user has a virtual time that grows by ``tokens / weight`` where the
  weight is the task's fee, so a user paying twice as much gets twice the tokens per unit of
  time, yet no user starves and one user's many calls do not crowd out another's few.
"""

from __future__ import annotations

from collections import deque
from typing import Literal, Protocol

PolicyName = Literal["fifo", "rr", "fair"]


class Schedulable(Protocol):
    """What a policy needs to know about a waiting or running LLM call."""

    @property
    def user(self) -> str: ...
    @property
    def fee(self) -> int: ...
    @property
    def seq(self) -> int: ...


class Policy(Protocol):
    """The ordering of LLM calls."""

    def push(self, entry: Schedulable) -> None:
        """Queue a new or preempted entry."""

    def pop(self) -> Schedulable:
        """Take the next entry to run (the queue is not empty)."""

    def remove(self, entry: Schedulable) -> bool:
        """Drop a waiting entry (its caller went away); False if it was not queued."""

    def __len__(self) -> int: ...

    def charge(self, entry: Schedulable, tokens: int) -> None:
        """Account ``tokens`` for ``entry``: one per token generated, plus the prompt tokens the
        engine computed for it (reported with its first token; prefix-cache hits not counted)."""

    def should_preempt(self, running: Schedulable) -> bool:
        """Whether ``running``, its slice used up, should yield to a waiting entry."""

    def release(self, entry: Schedulable) -> None:
        """``entry`` is finished (or abandoned) and will not be pushed again."""


class FifoPolicy:
    """First come, first served; never preempts."""

    def __init__(self) -> None:
        self._queue: deque[Schedulable] = deque()

    def push(self, entry: Schedulable) -> None:
        self._queue.append(entry)

    def pop(self) -> Schedulable:
        return self._queue.popleft()

    def remove(self, entry: Schedulable) -> bool:
        try:
            self._queue.remove(entry)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._queue)

    def charge(self, entry: Schedulable, tokens: int) -> None:
        return None

    def should_preempt(self, running: Schedulable) -> bool:
        return False

    def release(self, entry: Schedulable) -> None:
        return None


class RoundRobinPolicy(FifoPolicy):
    """Arrival order with a token time slice: a running call yields when anyone waits."""

    def should_preempt(self, running: Schedulable) -> bool:
        return bool(self._queue)


class FairSharePolicy:
    """Fee priority with fair share across users (weighted fair queueing over tokens).

    Args:
        min_weight: Floor of a task's weight, so free tasks (fee 0) still progress.
    """

    def __init__(self, min_weight: int = 1) -> None:
        self._waiting: list[Schedulable] = []
        self._vtime: dict[str, float] = {}
        self._outstanding: dict[str, int] = {}  # user -> calls pushed and not yet released
        self._seen: set[Schedulable] = set()  # entries pushed and not yet released
        self._min_weight = min_weight

    def _key(self, entry: Schedulable) -> tuple[float, int, int]:
        return (self._vtime.get(entry.user, 0.0), -entry.fee, entry.seq)

    def push(self, entry: Schedulable) -> None:
        user = entry.user
        if entry not in self._seen:
            self._seen.add(entry)
            if not self._outstanding.get(user):
                # A user coming back after idling starts at the busy users' floor: idling earns no credit.
                floor = min((self._vtime[u] for u, n in self._outstanding.items() if n), default=0.0)
                self._vtime[user] = max(self._vtime.get(user, 0.0), floor)
            self._outstanding[user] = self._outstanding.get(user, 0) + 1
        self._waiting.append(entry)

    def pop(self) -> Schedulable:
        best = min(self._waiting, key=self._key)
        self._waiting.remove(best)
        return best

    def remove(self, entry: Schedulable) -> bool:
        try:
            self._waiting.remove(entry)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._waiting)

    def charge(self, entry: Schedulable, tokens: int) -> None:
        weight = max(entry.fee, self._min_weight)
        self._vtime[entry.user] = self._vtime.get(entry.user, 0.0) + tokens / weight

    def should_preempt(self, running: Schedulable) -> bool:
        return any(self._key(w) < self._key(running) for w in self._waiting)

    def release(self, entry: Schedulable) -> None:
        if entry in self._seen:
            self._seen.discard(entry)
            self._outstanding[entry.user] -= 1
            if not self._outstanding[entry.user]:
                del self._outstanding[entry.user]
            if not self._outstanding:
                # An idle node: nobody owes anyone. Kept, the tokens a user had while nobody else
                # wanted the model became debt that put even its 100x offers behind the next
                # newcomer (tests/unit/test_review_chat_and_scheduling.py); and one entry per key
                # ever seen is memory that free keys grow without bound.
                self._vtime.clear()


def make_policy(name: PolicyName) -> Policy:
    """The policy called ``name``: ``"fifo"``, ``"rr"`` (round robin) or ``"fair"``."""
    if name == "fifo":
        return FifoPolicy()
    if name == "rr":
        return RoundRobinPolicy()
    if name == "fair":
        return FairSharePolicy()
    raise ValueError(f"unknown scheduling policy {name!r} (fifo, rr, fair)")
