"""Reading one's own results: the ``X-Supernet-Read`` header (docs/protocol.md, "Reading results").

A task's status and output, its token stream and its receipt belong to the user who paid for it.
The node serves them only with a `ReadGrant` the task's user signed for that node, sent as

    X-Supernet-Read: <user address>:<expiry, unix seconds>:<0x signature>

The grant lives at most `MAX_READ_GRANT_S`: anyone who sees a grant (a log, a proxy) can read
that user's tasks on that node until it expires, so it is short-lived and renewed by the client.

>>> import httpx
>>> auth = ReadGrantAuth(account, node_address, domain)            # doctest: +SKIP
>>> httpx.get(f"{url}/v1/tasks/{task_id}", auth=auth).json()       # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import is_hex_address, to_checksum_address
from supernet.sdk.chain.eip712 import Domain, ReadGrant, recover_typed, sign_typed

READ_HEADER = "X-Supernet-Read"
MAX_READ_GRANT_S = 3600
"""Longest a grant may live (seconds past the node's clock, plus `CLOCK_SKEW_S`)."""
CLOCK_SKEW_S = 60
RENEW_BEFORE_S = 300
"""A client signs a new grant when the current one has less than this left."""


class ReadGrantError(ValueError):
    """A read grant header that is malformed, expired, too long-lived, or not the user's."""


@dataclass(frozen=True)
class SignedReadGrant:
    """A grant and its signature."""

    grant: ReadGrant
    signature: bytes

    def header(self) -> str:
        """The ``X-Supernet-Read`` value."""
        return f"{to_checksum_address(self.grant.user)}:{self.grant.expiry}:0x{self.signature.hex()}"


def sign_read_grant(
    account: LocalAccount,
    node: str,
    domain: Domain,
    lifetime_s: int = MAX_READ_GRANT_S,
    now: float | None = None,
) -> SignedReadGrant:
    """A grant for ``account``'s tasks on ``node``, valid ``lifetime_s`` seconds from ``now``."""
    expiry = int(time.time() if now is None else now) + min(lifetime_s, MAX_READ_GRANT_S)
    grant = ReadGrant(user=account.address, node=node, expiry=expiry)
    return SignedReadGrant(grant, sign_typed(grant, domain, account))


def verify_read_grant(header: str, node: str, domain: Domain, now: float | None = None) -> str:
    """The checksum address of the user whose valid grant for ``node`` ``header`` carries.

    Raises:
        ReadGrantError: malformed, expired, living longer than `MAX_READ_GRANT_S`, or not signed
            by the user it names (which includes a grant made for another node or chain).
    """
    parts = header.strip().split(":")
    if len(parts) != 3:
        raise ReadGrantError(f"{READ_HEADER} must be <user>:<expiry>:<signature>")
    user, expiry_text, signature_hex = parts
    if not is_hex_address(user):
        raise ReadGrantError(f"{READ_HEADER}: {user!r} is not an address")
    # ASCII digits only: ``str.isdigit`` is true for "²", which ``int`` then refuses with a ValueError
    if not (expiry_text.isascii() and expiry_text.isdigit()) or len(expiry_text) > 20:
        raise ReadGrantError(f"{READ_HEADER}: expiry must be unix seconds, not {expiry_text!r}")
    sig = signature_hex.removeprefix("0x")
    if len(sig) != 130 or any(c not in "0123456789abcdefABCDEF" for c in sig):
        raise ReadGrantError(f"{READ_HEADER}: the signature must be 65 bytes of 0x hex")
    clock = time.time() if now is None else now
    expiry = int(expiry_text)
    if expiry <= clock:
        raise ReadGrantError(f"{READ_HEADER}: the grant expired at {expiry}; sign a new one")
    if expiry > clock + MAX_READ_GRANT_S + CLOCK_SKEW_S:
        raise ReadGrantError(f"{READ_HEADER}: a grant may live at most {MAX_READ_GRANT_S} s")
    grant = ReadGrant(user=user, node=node, expiry=expiry)
    try:
        signer = recover_typed(grant, domain, bytes.fromhex(sig))
    except Exception as exc:  # eth-keys raises several types for malformed signatures
        raise ReadGrantError(f"{READ_HEADER}: the signature is malformed: {exc}") from None
    if signer != to_checksum_address(user):
        raise ReadGrantError(
            f"{READ_HEADER}: the grant is not signed by {to_checksum_address(user)} for this node"
        )
    return signer


class ReadGrantAuth(httpx.Auth):
    """An ``httpx.Auth`` adding the user's read grant for one node, renewed before it expires."""

    def __init__(
        self, account: LocalAccount, node: str, domain: Domain, clock: Callable[[], float] = time.time
    ) -> None:
        self.account, self.node, self.domain, self._clock = account, node, domain, clock
        self._current: SignedReadGrant | None = None

    def header(self) -> str:
        """The current grant's header value (a new grant when it has under `RENEW_BEFORE_S` left)."""
        now = self._clock()
        if self._current is None or self._current.grant.expiry - now < RENEW_BEFORE_S:
            self._current = sign_read_grant(self.account, self.node, self.domain, now=now)
        return self._current.header()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[READ_HEADER] = self.header()
        yield request
