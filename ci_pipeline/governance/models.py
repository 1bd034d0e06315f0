"""The tables of the environment metadata store (SQLAlchemy 2 declarative models).

The schema itself is created and changed only by the versioned migrations in ``migrations/versions``; a test
compares these models with the migrated database so the two never drift apart.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, CheckConstraint, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: The three roles, most powerful first.
ROLES = ("admin", "contributor", "viewer")
#: What a binding is: an export writing through a connection, or an enrichment reading through one.
BINDING_KINDS = ("export", "enrichment")


def utcnow() -> dt.datetime:
    """The current time in UTC, second precision (what the audit log and the listings show)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Base(DeclarativeBase):
    """Declarative base of every governance table."""


class Principal(Base):
    """A person or service principal the environment knows by name. A principal without a role has no rights."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RoleAssignment(Base):
    """The one role a principal holds in this environment."""

    __tablename__ = "role_assignments"
    __table_args__ = (CheckConstraint("role IN ('admin', 'contributor', 'viewer')", name="ck_role_assignments_role"),)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Connection(Base):
    """A way out of (or into) the platform: a Dataverse environment, a storage account, a provider, a webhook.

    ``fields`` holds the non-secret settings (URLs, ids); ``secret_refs`` only references (``env:``,
    ``keyvault://``, ``file:``), never a secret value.
    """

    __tablename__ = "connections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    fields: Mapped[dict] = mapped_column(JSON)
    secret_refs: Mapped[dict] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ConnectionGrant(Base):
    """A connection shared with a contributor, who may then bind exports and enrichments to it."""

    __tablename__ = "connection_grants"
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Binding(Base):
    """An export or enrichment that uses a connection. Detached ones keep their row, inactive, with no connection."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("kind", "name", name="uq_bindings_kind_name"),
        CheckConstraint("kind IN ('export', 'enrichment')", name="ck_bindings_kind"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    active: Mapped[bool] = mapped_column(Boolean)
    #: The connection it was detached from, so the listing can say why it is inactive.
    detached_from: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class DataSource(Base):
    """A configured data source and its owner, who (with the admins) alone may edit, refresh or delete it."""

    __tablename__ = "data_sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("principals.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Consent(Base):
    """Who agreed, when, to which version of the text, that a connection sends data outside the platform."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The connection while it exists; the name it had when consent was given stays after it is removed.
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    connection_name: Mapped[str] = mapped_column(String(200))
    principal: Mapped[str] = mapped_column(String(200))
    text_version: Mapped[str] = mapped_column(String(20))
    #: SHA-256 of the exact text agreed to, so a later edit of a version's wording shows.
    text_sha256: Mapped[str] = mapped_column(String(64))
    agreed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class DataverseAttachment(Base):
    """The one Dataverse environment this pipeline environment publishes to (``slot`` is always 1)."""

    __tablename__ = "dataverse_attachment"
    __table_args__ = (CheckConstraint("slot = 1", name="ck_dataverse_attachment_slot"),)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: An attached connection cannot be deleted (RESTRICT): it is in use until detached.
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="RESTRICT"))
    org_url: Mapped[str] = mapped_column(String(500))
    attached_by: Mapped[str] = mapped_column(String(200))
    attached_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Environment(Base):
    """This pipeline environment's id (``slot`` is always 1), written into the sink's attachment marker."""

    __tablename__ = "environment"
    __table_args__ = (CheckConstraint("slot = 1", name="ck_environment_slot"),)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class CapacityReport(Base):
    """One storage entitlement report of a Dataverse environment (the sink), as the publish step computed it."""

    __tablename__ = "capacity_reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The Dataverse environment's URL (or the embedded sink's file), the report's subject.
    target: Mapped[str] = mapped_column(String(500), index=True)
    #: The governed connection the sink used, when it used one.
    connection_name: Mapped[str | None] = mapped_column(String(200))
    report: Mapped[dict] = mapped_column(JSON)
    recorded_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One change or refused attempt. Append-only; each row's hash covers its content and the previous hash."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    #: Up to two names ("connection -> user") or a URL.
    target: Mapped[str] = mapped_column(String(500))
    #: ``ok`` for a change, ``refused`` for an attempt the rules stopped.
    outcome: Mapped[str] = mapped_column(String(20))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    #: A second writer that read the same head cannot fork the chain: its insert fails.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
