"""Log lines for people (text) or for log pipelines (one JSON object per line).

``supernet --log-format json ...`` (or ``SUPERNET_LOG_FORMAT=json``) makes every process — node,
validator, explorer, store — write records a collector (Loki, Elasticsearch, CloudWatch) can parse
without regular expressions: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and
``exc`` when an exception is attached.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: int, fmt: str = "text") -> None:
    """Set up the root logger once for the process (``fmt``: ``text`` or ``json``)."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
