"""Parsing ids from URLs: a malformed one is a 400 saying what shape is expected, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from supernet.explorer.app import ExplorerState

_TASK = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")


def number(value: str, what: str) -> int:
    """A batch or challenge number (decimal, ≥ 1 fits the chain's ids)."""
    if not value.isdecimal() or len(value) > 18:
        raise HTTPException(400, f"{what} must be a number, not {value[:80]!r}")
    return int(value)


def task_id(value: str) -> str:
    """A task id: the request hash, 0x and 64 hex digits (lower-cased)."""
    if not _TASK.fullmatch(value):
        raise HTTPException(400, f"a task id is 0x followed by 64 hex digits, not {value[:80]!r}")
    return value.lower()


def address(value: str) -> str:
    """An Ethereum address, checksummed."""
    if not _ADDR.fullmatch(value):
        raise HTTPException(400, f"an address is 0x followed by 40 hex digits, not {value[:80]!r}")
    return to_checksum_address(value)


def get_state(request: Request) -> ExplorerState:
    """The app's `ExplorerState`."""
    state: ExplorerState = request.app.state.explorer
    return state


def session(request: Request) -> Iterator[Session]:
    """A read session on the index for one request."""
    with Session(get_state(request).engine) as s:
        yield s


State = Annotated[ExplorerState, Depends(get_state)]
DB = Annotated[Session, Depends(session)]
