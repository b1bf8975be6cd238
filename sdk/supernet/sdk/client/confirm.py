"""The task user's consent to an irreversible action of its running task (docs/protocol.md).

When an agent calls an irreversible tool, the node pauses the call and sends a
``confirmation_required`` event on the task's stream: ``{"taskId", "actionHash", "tool", "args",
"occurrence", "typedData"}`` (``occurrence``: which call of this tool with these arguments in the
task, from 0; a signature allows that one call, never a retry or a repeat). The user signs the
EIP-712 ``Confirmation(requestHash = task id, actionHash)`` and posts it to
``POST /v1/tasks/{id}/confirmations``; the call goes on.

>>> body = confirmation_body(task_id, event_data, domain, account)  # doctest: +SKIP
>>> # {"actionHash": "0x…", "signature": "0x…"}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.eip712 import Confirmation, Domain, sign_confirmation
from supernet.sdk.chain.receipts import action_hash


def confirmation_body(
    task_id: str,
    action: str | Mapping[str, Any],
    domain: Domain,
    account: LocalAccount,
    *,
    repeat: bool = False,
) -> dict[str, str]:
    """The ``POST /v1/tasks/{id}/confirmations`` body confirming ``action`` of task ``task_id``.

    Args:
        task_id: The task id (``requestHash``, ``0x`` hex).
        action: The ``confirmation_required`` event's data (its ``tool``, ``args`` and
            ``occurrence`` are hashed here, so what is signed is the call shown, never a hash the
            node chose), or an ``actionHash`` the caller computed itself.
        domain: The protocol's EIP-712 domain (the deployment's).
        account: The task's user.
        repeat: Also sign a repeat: an ``occurrence`` above 0, the task's second (or later) call
            of this very tool with these very arguments. Off by default, so a consent is given to
            a repeat only knowingly: a node could show an event for a future occurrence while the
            first one waits, and keep that signature for a call it provokes later (a "failed"
            answer that makes the agent pay again; `tests/unit/test_review_occurrences.py`).

    Raises:
        ValueError: the event's ``actionHash`` is not the hash of its ``tool`` and ``args``, or it
            is a repeat and ``repeat`` is not set.
    """
    if isinstance(action, str):
        digest = bytes.fromhex(action.removeprefix("0x"))
    else:
        occurrence = action.get("occurrence", 0)
        if not isinstance(occurrence, int) or isinstance(occurrence, bool) or occurrence < 0:
            raise ValueError(f"the event's occurrence {occurrence!r} is not a call number")
        if occurrence > 0 and not repeat:
            raise ValueError(
                f"this is call {occurrence + 1} of {action['tool']} with these arguments in the task: "
                "sign a repeat only knowingly (repeat=True)"
            )
        digest = action_hash(str(action["tool"]), action["args"], occurrence)
        claimed = action.get("actionHash")
        if claimed is not None and str(claimed).lower() != "0x" + digest.hex():
            raise ValueError(f"the event's actionHash {claimed} is not the hash of its tool and args")
    if len(digest) != 32:
        raise ValueError("an actionHash is 32 bytes")
    conf = Confirmation(bytes.fromhex(task_id.removeprefix("0x")), digest)
    signature = sign_confirmation(conf, domain, account)
    return {"actionHash": "0x" + digest.hex(), "signature": "0x" + signature.hex()}
