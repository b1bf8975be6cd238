"""What a tool is, as an agent sees it in ``ctx.tools.available``.

>>> spec = ToolSpec("echo", "Echo the text.", {"type": "object"})
>>> spec.deterministic, spec.irreversible
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolSpec"]


@dataclass(frozen=True)
class ToolSpec:
    """What a tool is and how it may run.

    Attributes:
        name: Unique name agents call it by.
        description: One line for the LLM's tool list.
        parameters: JSON schema of the arguments object.
        deterministic: Same arguments, same result: validators re-run it.
        irreversible: Needs the task owner's signed EIP-712 confirmation.
        timeout_s: Wall-clock bound of one call.
        max_concurrency: Calls of this tool running at once, node-wide.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    deterministic: bool = True
    irreversible: bool = False
    timeout_s: float = 10.0
    max_concurrency: int = 4
