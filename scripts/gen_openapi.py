"""Write the node API's OpenAPI document to docs/openapi.json (checked by tests/unit/test_node_openapi.py)."""

from __future__ import annotations

import json
from pathlib import Path

from supernet.node.service.api import create_app

OUT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def render() -> str:
    """The document as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
