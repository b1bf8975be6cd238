"""Entry point of ``supernet node`` (registered in node/pyproject.toml)."""

from supernet.node.service.cli import app

__all__ = ["app"]
