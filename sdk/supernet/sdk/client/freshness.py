"""Whether a node showed a task the user's latest memory and files: the check only the user can make.

Validators prove that every root a task starts from was written by the user's own committed tasks
(docs/validator.md, "Where a task's roots come from"), but not that it is the *latest*: a node
could show a task an older state of the user's memory, or none at all. The user knows more: which
of its tasks had finished before it sent the next one. So the client remembers, per node and
namespace, the last root of the most recently finished task it verified, and a later task must
start from that root or from one written on top of it (another device of the same user may have
written in between). Roots link their previous root (``prev``), so "on top of" is a walk down
that chain.

>>> namespace_roots(trace)                                   # doctest: +SKIP
{('files', '0xab…/notes'): ('bafy…first', 'bafy…last')}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from supernet.sdk.formats.trace import ROOT_READS, ROOT_WRITES, Trace
from supernet.sdk.store.cids import canonical_cid

MAX_WALK = 256
"""Roots walked down from a task's first root looking for the one the user saw last. A longer
chain cannot be told from a rollback to an old root that has that many ancestors, so it fails
the check (an honest node gets there only after that many writes by the user's other devices
while this task was being sent)."""


def namespace_roots(trace: Trace) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """``(area, namespace) -> (first root, last root)`` of every memory (``"memory"``) and file
    (``"files"``) namespace the task used: the root its first access found and the one it left."""
    out: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    for ev in trace.events:
        for area in ROOT_WRITES:
            if isinstance(ev, ROOT_WRITES[area] + ROOT_READS[area]):
                used: Any = ev  # a root event of ``area``: its namespace and root
                found = used.prev_root if isinstance(ev, ROOT_WRITES[area]) else used.root
                key = (area, used.namespace)
                out[key] = (out[key][0] if key in out else found, used.root)
    return out


async def descends(
    root: str | None, ancestor: str | None, get_dag: Callable[[str], Awaitable[Any]]
) -> bool | None:
    """Whether ``root`` is ``ancestor`` or was written on top of it (None: more than `MAX_WALK`
    roots down, not judged). Every root descends from the empty one (``None``)."""
    if ancestor is None:
        return True
    wanted, current = canonical_cid(ancestor), root
    for _ in range(MAX_WALK):
        if current is None:
            return False
        if canonical_cid(current) == wanted:
            return True
        block = await get_dag(current)
        prev = block.get("prev") if isinstance(block, dict) else None
        current = None if prev is None else str(prev)
    return None


@dataclass
class SeenRoot:
    """The last root of a namespace the client saw: left by ``task``, whose result came at
    ``done_seq`` (the client state's logical clock, `ClientState.tick`)."""

    root: str | None
    task: str
    done_seq: int


async def check_latest(
    seen: dict[str, SeenRoot],
    node: str,
    task_id: str,
    sent_seq: int | None,
    done_seq: int | None,
    trace: Trace,
    get_dag: Callable[[str], Awaitable[Any]],
) -> tuple[bool, str] | None:
    """Check a task's first roots against the last ones this client saw before it sent the task,
    then remember the roots the task left (``seen`` is updated in place).

    Args:
        seen: ``"<node>:<area>:<namespace>"`` -> the last root seen (the client's state).
        node: the node's address; ``task_id``: the task; ``sent_seq`` / ``done_seq``: when this
            client sent it and received its result (None: unknown, no check / not remembered).
        trace: the task's trace.
        get_dag: reads a root block (the content store).

    Returns:
        (ok, detail), or None when the task used no memory or files.
    """
    roots = namespace_roots(trace)
    if not roots:
        return None
    stale, unjudged = [], []
    for (area, namespace), (first, _) in sorted(roots.items()):
        before = seen.get(f"{node.lower()}:{area}:{namespace}")
        if before is None or sent_seq is None or before.done_seq >= sent_seq or before.task == task_id:
            continue  # nothing finished before this task was sent
        fresh = await descends(first, before.root, get_dag)
        if fresh is None:
            unjudged.append(f"{area} of {namespace}")
        elif not fresh:
            stale.append(
                f"{area} of {namespace}: started from {first}, not from {before.root} (left by task "
                f"{before.task}, finished before this one was sent) or a root written on top of it"
            )
    for (area, namespace), (_, last) in roots.items():
        key = f"{node.lower()}:{area}:{namespace}"
        if done_seq is not None and (key not in seen or seen[key].done_seq < done_seq):
            seen[key] = SeenRoot(last, task_id, done_seq)
    # not judged is not fresh: a rollback to a root with MAX_WALK ancestors looks the same
    stale += [
        f"{name}: the root this client saw last is not among the {MAX_WALK} roots below the task's "
        "first one (not judged; a rollback to an old root looks like this)"
        for name in unjudged
    ]
    if stale:
        return False, "; ".join(stale)
    return True, f"{len(roots)} namespace(s)"
