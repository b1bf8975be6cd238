"""The user's client: pick a node, pay, submit a task, stream the answer, verify the receipt.

>>> from supernet.sdk.client import Client
>>> async with Client.connect("http://127.0.0.1:8545", "deployment.json", key) as client:  # doctest: +SKIP
...     result = await client.submit_task("What is 2+2?", on_token=print)
...     report = await client.verify(result.task_id)
...     assert report.ok

It never imports torch: only the chain bindings, the store client and httpx.
"""

from supernet.sdk.client.client import Client
from supernet.sdk.client.read_grant import ReadGrantAuth, sign_read_grant
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.streaming import TaskStream
from supernet.sdk.client.sync import SyncClient
from supernet.sdk.client.types import ClientError, NodeChoice, PreparedTask, RefundClaimed, TaskResult
from supernet.sdk.client.verify import Check, VerificationError, VerificationReport

__all__ = [
    "Check",
    "Client",
    "ClientError",
    "ClientState",
    "NodeChoice",
    "PreparedTask",
    "ReadGrantAuth",
    "RefundClaimed",
    "SyncClient",
    "TaskResult",
    "TaskStream",
    "VerificationError",
    "VerificationReport",
    "sign_read_grant",
]
