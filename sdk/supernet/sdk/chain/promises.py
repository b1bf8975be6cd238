"""When a node's promise to commit a receipt is worth something: a claim can still slash it.

A `ReceiptPromise` is enforced by an omission claim (`OmissionManager.challengeOmission`), which
opens when the promise falls due (earlier for a leaving node: `claim_window`) and freezes the
node's stake. Nothing locks stake for
a receipt that was never committed, so a promise due after the node's stake can leave is no
promise: the node fakes a task, is paid, signs ``commitBy`` beyond its unbonding, deregisters and
withdraws before any claim can open (contracts/test/Review3.t.sol). Two rules close it:

- on chain, a promise falls due at `claim_due`: ``commitBy``, or the user's signed request
  ``deadline`` plus ``MAX_PROMISE_DELAY`` (half the unbonding period) if that is earlier; its claim
  may be opened in `claim_window`: from then (or, for a node that is leaving, from a challenge
  window before its stake may drop below one slash: ``stakeLeavesAt``) until a challenge window
  after the due time; a node refuses to start with a ``promise_s`` above `max_promise_delay`;
- the user's client accepts a promise only if it falls due by `promise_horizon` (a node already
  unbonding backs only promises due before its stake leaves).

>>> max_promise_delay(7 * 86_400)
302400
>>> claim_due(10**12, 1_000, 7 * 86_400)
303400
>>> claim_window(10**12, 1_000, 7 * 86_400, 86_400, stake_leaves_at=200_000)
(113600, 389800)
"""

from __future__ import annotations

from supernet.sdk.chain.registry import Operator, Role

DAY = 86_400


def claim_margin(unbonding_period: int) -> int:
    """Time a user keeps, after a promise fell due, to open its claim before the stake could leave:
    a tenth of the unbonding period, at most a day."""
    return min(unbonding_period // 10, DAY)


def max_promise_delay(unbonding_period: int) -> int:
    """``OmissionManager.MAX_PROMISE_DELAY``: how long after its request's deadline a promise may
    fall due (half the unbonding period); also the longest ``promise_s`` a node may use."""
    return unbonding_period // 2


def claim_due(commit_by: int, request_deadline: int, unbonding_period: int) -> int:
    """When a promise falls due (``OmissionManager._checkPromise``): the time an answer's batch must
    have been committed by, and the claim window's reference."""
    if request_deadline < 2**64 - 1:
        return min(commit_by, request_deadline + max_promise_delay(unbonding_period))
    return commit_by


def claim_window(
    commit_by: int,
    request_deadline: int,
    unbonding_period: int,
    challenge_window: int,
    stake_leaves_at: int = 0,
) -> tuple[int, int]:
    """``(opens, closes)``: when the chain accepts the promise's omission claim (``opens <= now <
    closes``). It opens at `claim_due`, or ``challenge_window`` before ``stake_leaves_at`` if that
    is earlier (``ServiceManager.stakeLeavesAt(node, SLASH_AMOUNT)``, 0: not leaving), and closes
    ``challenge_window`` after `claim_due` (never, for a due time past uint64)."""
    due = claim_due(commit_by, request_deadline, unbonding_period)
    opens = due
    if stake_leaves_at > challenge_window:
        opens = min(opens, stake_leaves_at - challenge_window)
    closes = due + challenge_window if due < 2**64 - 1 else 2**256 - 1
    return opens, closes


def stake_leaves_at(operator: Operator, keep: int, min_node_stake: int) -> int:
    """``ServiceManager.stakeLeavesAt(operator, keep)`` from its `Operator` record: 0 while it is an
    active node (registered, at least ``min_node_stake``: it can still commit), its active stake is
    at least ``keep`` or nothing is unbonding, else when its unbonding stake may be withdrawn (the
    later of ``unbondingReadyAt`` and its lock)."""
    active = operator.registered and operator.role == Role.NODE and operator.stake >= min_node_stake
    if active or operator.stake >= keep or operator.unbonding == 0:
        return 0
    return max(operator.unbonding_ready_at, operator.locked_until)


def promise_horizon(
    now: int,
    operator: Operator,
    unbonding_period: int,
    slash_amount: int,
    challenge_window: int | None = None,
) -> int:
    """The latest ``commitBy`` whose claim, opened then, still finds ``slash_amount`` of the node's
    stake (less `claim_margin`).

    Active stake cannot leave before ``now + unbonding_period`` (unbonding starts with a request);
    stake already unbonding leaves at its ``unbondingReadyAt`` (or lock); a node without enough of
    either backs no promise (the horizon is then in the past). A leaving node's claims open on
    chain ``challenge_window`` before its stake leaves (`claim_window`), a window a claim is
    always given: with the window known, the margin before a leaving node's exit is at most it."""
    margin = claim_margin(unbonding_period)
    if operator.stake >= slash_amount:
        return now + unbonding_period - margin
    if operator.stake + operator.unbonding >= slash_amount:
        until = max(operator.unbonding_ready_at, operator.locked_until)
        return until - (margin if challenge_window is None else min(margin, challenge_window))
    return now - 1


def answerable_promise_delay(batch_retention: int, challenge_window: int, vote_window: int) -> int:
    """The longest promise whose omission claim the node can still answer from its batch.

    An answer shows the receipt in a batch still in its slot (``isCommitted``), and a node reuses
    a slot ``BATCH_RETENTION`` after its commit. A claim opens at ``commitBy`` at the latest, can
    be opened for ``CHALLENGE_WINDOW`` after it and answered for ``VOTE_WINDOW`` after that; the
    batch was committed no earlier than the task's end, ``commitBy - promise_s``. So the batch
    outlives every claim exactly when ``promise_s <= BATCH_RETENTION - CHALLENGE_WINDOW -
    VOTE_WINDOW`` (the CHALLENGE_WINDOW with the TaskManager's retention).
    """
    return batch_retention - challenge_window - vote_window


def check_promise_delay(promise_s: int, unbonding_period: int, answerable: int | None = None) -> None:
    """Refuse a node's ``batch.promise_s`` its chain would cut short.

    Args:
        promise_s: the node's promise delay.
        unbonding_period: the ServiceManager's UNBONDING_PERIOD.
        answerable: `answerable_promise_delay` of the TaskManager (None: not checked).

    Raises:
        ValueError: ``promise_s`` is above `max_promise_delay` (users' claims would open before the
            node's promised time, and clients would judge its promises unbacked), or above
            ``answerable`` (a user could wait for the batch's slot to be reused, then claim a
            promise the node kept: the honest node could not show its batch and be slashed).
    """
    limit = max_promise_delay(unbonding_period)
    if promise_s > limit:
        raise ValueError(
            f"batch.promise_s = {promise_s} s is above this chain's MAX_PROMISE_DELAY ({limit} s, half "
            f"its UNBONDING_PERIOD of {unbonding_period} s): a promise must fall due while the node's "
            f"stake is still there; set batch.promise_s to at most {limit}"
        )
    if answerable is not None and promise_s > answerable:
        raise ValueError(
            f"batch.promise_s = {promise_s} s is above {answerable} s (BATCH_RETENTION - CHALLENGE_WINDOW "
            "- VOTE_WINDOW): a claim on a promise kept could come after the batch's slot is reused, and "
            f"the node could no longer show its receipt; set batch.promise_s to at most {answerable}"
        )
