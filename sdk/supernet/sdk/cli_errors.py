"""The common mistakes, as one line with the fix instead of a traceback (the `supernet` root).

Anything else is a bug and keeps its traceback (``--verbose`` adds debug logs). Every line is
shown through `supernet.sdk.display.shown` (one line, control characters escaped): errors carry
text other parties wrote (a node's error message, a JSON-RPC endpoint's, a file's).
"""

from __future__ import annotations

import httpx
from pydantic import ValidationError
from supernet.sdk.chain.deployment import DeploymentError
from supernet.sdk.client.types import ClientError
from supernet.sdk.display import shown
from supernet.sdk.errors import SupernetError

_CLIENT_HINTS = {
    402: "top up the channel: `supernet account deposit NODE AMOUNT`",
    404: "check the task id (and the node it ran on: --node URL)",
    401: "reading a task needs the key of the user who paid for it",
    403: "this task belongs to another user",
}


def explain(exc: BaseException) -> str | None:
    """One line saying what went wrong and what to do, or None for an unexpected error (control
    characters in it, such as a node's terminal escapes, shown escaped)."""
    line = _explain(exc)
    return None if line is None else shown(line, one_line=True)


def _explain(exc: BaseException) -> str | None:
    if isinstance(exc, DeploymentError):
        return f"{exc} — pass --deployment or set SUPERNET_DEPLOYMENT (`supernet devnet up` writes one)"
    if isinstance(exc, httpx.ConnectError | httpx.TimeoutException):
        url = exc.request.url if exc.request is not None else "the service"
        return f"cannot reach {url}: is the node (or store) running and is the URL right?"
    if _is_chain_unreachable(exc):
        return (
            f"cannot reach the chain's JSON-RPC ({exc.__class__.__name__}): is it running? "
            "`supernet devnet up` starts a local one; else check --rpc / SUPERNET_RPC_URL"
        )
    rpc = _rpc_refusal(exc)
    if rpc is not None:
        return rpc
    if isinstance(exc, ClientError):
        hint = _CLIENT_HINTS.get(exc.status or 0)
        return f"{exc}" + (f" — {hint}" if hint else "")
    if isinstance(exc, SupernetError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return f"invalid {exc.title} configuration: {settings_problems(exc)}"
    return None


def settings_problems(exc: ValidationError) -> str:
    """Each rejected setting as ``where: why``, without the value given (it may be a key)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def _is_chain_unreachable(exc: BaseException) -> bool:
    """web3's HTTP provider (requests) refusing or timing out, whatever wraps it."""
    try:
        import requests
    except ImportError:  # pragma: no cover - web3 depends on it
        return False
    from web3.exceptions import ProviderConnectionError

    return isinstance(exc, requests.ConnectionError | requests.Timeout | ProviderConnectionError)


def _rpc_refusal(exc: BaseException) -> str | None:
    """web3's errors of a JSON-RPC endpoint's answers (no ValueError in web3 8): an error response
    (a refused transaction, a method it lacks), an answer web3 refuses (another chain id than the
    transaction's, a malformed result), or no receipt in time."""
    from web3.exceptions import BadResponseFormat, TimeExhausted, Web3RPCError, Web3ValidationError

    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return _one_line(f"the chain's JSON-RPC refused the request: {message or exc.message}") + (
            " (check --rpc / SUPERNET_RPC_URL)"
        )
    if isinstance(exc, Web3ValidationError | BadResponseFormat):
        return _one_line(f"the chain's JSON-RPC gave an answer web3 refuses: {exc}") + (
            " (check --rpc / SUPERNET_RPC_URL)"
        )
    if isinstance(exc, TimeExhausted):
        return _one_line(f"the chain did not confirm in time: {exc}") + " (look the transaction up later)"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
