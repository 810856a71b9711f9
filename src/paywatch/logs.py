"""Logging set-up: plain text by default, one JSON object per line with ``PAYWATCH_LOG_JSON=1``.

Pass context with ``extra={"invoice_id": ..., "network": ..., "tx_hash": ...}``; those keys are
emitted as JSON fields (and appended to text lines).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import IO

from paywatch.redact import ScrubFilter

CONTEXT_KEYS = ("invoice_id", "network", "tx_hash", "block", "store_id", "webhook_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the context keys as fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines with the context keys appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in CONTEXT_KEYS if hasattr(record, k))
        return f"{line} [{context}]" if context else line


def configure(*, json_lines: bool, level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """One handler on the root logger (stderr unless ``stream``), scrubbing RPC secrets from every
    record (:class:`paywatch.redact.ScrubFilter`), ours and the libraries' alike."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "web3", "urllib3", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
