"""The audit trail: one row per admin action that changes money or delivery state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from paywatch.store.models import AuditLog


def audit(session: Session, now: datetime, actor: str, action: str, subject: str, **details: Any) -> None:
    """Record ``actor`` doing ``action`` to ``subject`` in the caller's transaction."""
    session.add(AuditLog(at=now, actor=actor, action=action, subject=subject, details=details))
