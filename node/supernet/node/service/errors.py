"""One error tree for the node service; the API maps each class to one HTTP status.

Every error a request can cause is a :class:`NodeError` with an HTTP ``status`` and a short
machine-readable ``code``; the FastAPI exception handler turns it into
``{"error": {"code": ..., "message": ...}}``. Errors carry extra fields (``detail``) that a
client can act on, e.g. the voucher amount the node expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class NodeError(Exception):
    """Root of every error the node service raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class BadRequestError(NodeError, ValueError):
    """The request is malformed or inconsistent with itself."""

    status = 400
    code = "bad_request"


class InputSchemaError(BadRequestError):
    """The input does not match the agent's input JSON schema (``GET /v1/node`` ``agentCards``)."""

    code = "input_schema_mismatch"


class InputHashMismatchError(BadRequestError):
    """``inputHash`` does not match the input that was sent."""

    code = "input_hash_mismatch"


class InputNotCanonicalError(BadRequestError):
    """The input has no RFC 8785 canonical form (NaN, Infinity, an integer past 2**53, a lone
    surrogate): it could not be hashed and recorded the same way, so it is refused."""

    code = "input_not_canonical"


class WrongNodeError(BadRequestError):
    """The request is addressed to another node (or another model)."""

    code = "wrong_node"


class ModelNotServedError(WrongNodeError):
    """The request names a model this node does not serve; ``models`` lists those it does."""

    code = "model_not_served"

    @classmethod
    def naming(cls, model: str, served: Mapping[str, str]) -> ModelNotServedError:
        """The error for ``model``, given the served models as name -> ``0x`` id."""
        listed = ", ".join(f"{name} ({model_id})" for name, model_id in served.items())
        return cls(
            f"model {model} is not served by this node; it serves {listed}",
            models=[{"name": name, "modelId": model_id} for name, model_id in served.items()],
        )


class DeadlinePassedError(BadRequestError):
    """The signed deadline has passed."""

    code = "deadline_passed"


class BadSignatureError(NodeError):
    """A signature does not recover to the claimed user."""

    status = 401
    code = "bad_signature"


class UnauthorizedError(NodeError):
    """Reading a task needs its user's read grant (``X-Supernet-Read``), missing or invalid here."""

    status = 401
    code = "unauthorized"


class PaymentError(NodeError):
    """The fee, voucher or deposit does not cover the task."""

    status = 402
    code = "payment_required"


class ForbiddenError(NodeError, PermissionError):
    """The node's policy refuses this request (e.g. an agent it does not run)."""

    status = 403
    code = "forbidden"


class NotFoundError(NodeError, LookupError):
    """No such task, or no receipt yet."""

    status = 404
    code = "not_found"


class ReplayError(NodeError):
    """The nonce was already used (or is not above the last one seen)."""

    status = 409
    code = "replay"


class FeeInFlightError(NodeError):
    """Another of the user's tasks is still unfinished at another fee: the tasks in flight at once
    share one fee (`Authenticator._guard`), so that some voucher always equals the done fees."""

    status = 409
    code = "fee_in_flight"


class TooManyTasksError(NodeError):
    """The user has as many unfinished tasks here as one user may (`[api] max_unfinished_per_user`):
    send more once some end. Beyond the worker's per-user slots a task only waits, and one whose
    deadline passes while it waits is refused unbilled: without this bound one deposit queued tasks
    (and stored their inputs) without end (a review, tests/unit/test_review_node_hardening2.py)."""

    status = 429
    code = "too_many_tasks"


class TooLargeError(NodeError):
    """The request body is over the configured limit."""

    status = 413
    code = "too_large"


class StillRunningError(NodeError):
    """A waiting answer (the chat endpoint's) outlived ``api.max_stream_s``: the task goes on and
    the client polls ``GET /v1/tasks/{taskId}`` (a connection is a resource no peer may hold for
    as long as it likes)."""

    status = 504
    code = "still_running"


class UnavailableError(NodeError):
    """The node cannot take work now (shutting down, not ready)."""

    status = 503
    code = "unavailable"


class CommitsAtRiskError(UnavailableError):
    """The node's batch commits keep failing (its wallet cannot pay, or a receipt has waited past
    its batch's time; `Batcher.commit_risk`): a new task's signed promise to commit its receipt
    could not be kept, so none is taken until a commit lands. Not worth an immediate retry."""

    code = "commits_at_risk"


class BusyError(UnavailableError):
    """Admission is shedding load (its payment checks are all in flight, or the chain could not be
    read): nothing was stored or billed, so the same signed request may be sent again as it is
    after ``Retry-After`` seconds (the SDK's client does, a few times)."""

    code = "busy"
    retry_after_s: ClassVar[int] = 1
