"""The append-only audit log: every change and every refused attempt, hash-chained so tampering shows.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own content (its id, time, actor, action,
target, outcome, before and after). Changing, deleting or reordering a row breaks the chain at that row;
:func:`verify_chain` reports the first row whose link or hash does not hold. Removing rows from the end cannot be
seen from inside the database: keep the head hash ``audit verify`` prints somewhere else to compare later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ci_pipeline.governance.models import AuditEntry, utcnow
from ci_pipeline.redact import redact, redact_value

#: The ``prev_hash`` of the first row.
GENESIS = "0" * 64


def _canonical(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _naive_utc(at: dt.datetime) -> str:
    # SQLite hands datetimes back without a zone; hashing the naive UTC form gives the same text on every backend.
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="seconds")


def row_hash(entry: AuditEntry) -> str:
    """The hash ``entry`` must carry, given its content and its ``prev_hash``."""
    content = [
        entry.id,
        _naive_utc(entry.at),
        entry.actor,
        entry.action,
        entry.target,
        entry.outcome,
        entry.before,
        entry.after,
    ]
    payload = entry.prev_hash + "\n" + json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(
    session: Session, actor: str, action: str, target: str, *, before=None, after=None, outcome: str = "ok"
) -> AuditEntry:
    """Add one row at the head of the chain, inside the caller's transaction (so it commits with the change).

    The target and the states are redacted first: a row can never be removed, and a target or a reason can quote
    what a user typed (a connection "name" that is a URL with its password, an error quoting a secret).
    """
    if session.get_bind().dialect.name == "postgresql":
        # Two writers must not read the same head; SQLite serialises writers already (BEGIN IMMEDIATE).
        session.execute(text("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE"))
    head = session.execute(select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).first()
    entry = AuditEntry(
        id=(head.id + 1) if head else 1,
        at=utcnow(),
        actor=actor,
        action=action,
        target=redact(target),
        outcome=outcome,
        before=_canonical(redact_value(before)),
        after=_canonical(redact_value(after)),
        prev_hash=head.hash if head else GENESIS,
    )
    entry.hash = row_hash(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :func:`verify_chain`: rows checked, the head hash, and the first broken row if any."""

    rows: int
    head: str
    broken_id: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when every row links to the one before and its hash matches its content."""
        return self.broken_id is None


def verify_chain(session: Session) -> ChainReport:
    """Walk the log in id order and report the first row whose link or hash does not hold."""
    previous, count = GENESIS, 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(1000):
        count += 1
        if entry.prev_hash != previous:
            return ChainReport(count, previous, entry.id, "its prev_hash is not the hash of the row before it")
        if row_hash(entry) != entry.hash:
            return ChainReport(count, previous, entry.id, "its content does not match its hash")
        previous = entry.hash
    return ChainReport(count, previous)
