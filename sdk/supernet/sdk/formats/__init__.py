"""The wire formats, defined once: traces, batch manifests, evidence (and receipts, requests).

Every document a node writes and a validator or client reads is a typed, versioned class here with
``to_dag()`` / ``from_dag()``. Reading is strict: a document has exactly its format's fields, each
of its type, or `FormatError` names the one that is not. Receipts and signed requests are the
chain types `supernet.sdk.chain.receipts.Receipt` and `supernet.sdk.chain.eip712.TaskRequest`
(``to_json`` / ``from_json``), which the formats embed.

- `supernet.sdk.formats.trace` — ``supernet/trace/v1`` (`Trace`, typed events, `Witness`)
- `supernet.sdk.formats.manifest` — ``supernet/batch`` v1 (`BatchManifest`, `ManifestEntry`)
- `supernet.sdk.formats.evidence` — ``supernet/evidence/v1`` (`Evidence`, `EvidenceFinding`)
"""

from supernet.sdk.formats.evidence import EVIDENCE_TYPE, Evidence, EvidenceFinding
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.manifest import MANIFEST_TYPE, BatchManifest, ManifestEntry
from supernet.sdk.formats.trace import (
    MAX_TRACE_BYTES,
    MAX_TRACE_EVENTS,
    TRACE_TYPE,
    Trace,
    event_from_dag,
    trace_from_block,
)

__all__ = [
    "EVIDENCE_TYPE",
    "MANIFEST_TYPE",
    "MAX_TRACE_BYTES",
    "MAX_TRACE_EVENTS",
    "TRACE_TYPE",
    "BatchManifest",
    "Evidence",
    "EvidenceFinding",
    "FormatError",
    "ManifestEntry",
    "Trace",
    "event_from_dag",
    "trace_from_block",
]
