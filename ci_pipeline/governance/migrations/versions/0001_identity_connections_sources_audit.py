"""Principals and roles, connections and their grants, bindings, data sources, the audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    """Create the first set of tables."""
    op.create_table(
        "principals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        _when("created_at"),
    )
    op.create_table(
        "role_assignments",
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("granted_by", sa.String(200), nullable=False),
        _when("granted_at"),
        sa.CheckConstraint("role IN ('admin', 'contributor', 'viewer')", name="ck_role_assignments_role"),
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("secret_refs", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _when("created_at"),
        _when("updated_at"),
    )
    op.create_table(
        "connection_grants",
        sa.Column("connection_id", sa.Integer, sa.ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("principal_id", sa.Integer, sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("granted_by", sa.String(200), nullable=False),
        _when("granted_at"),
    )
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("connection_id", sa.Integer, sa.ForeignKey("connections.id", ondelete="SET NULL")),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("detached_from", sa.String(200)),
        _when("created_at"),
        sa.UniqueConstraint("kind", "name", name="uq_bindings_kind_name"),
        sa.CheckConstraint("kind IN ('export', 'enrichment')", name="ck_bindings_kind"),
    )
    op.create_table(
        "data_sources",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("principals.id"), nullable=False),
        _when("created_at"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _when("at"),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    """Drop them again (newest first, so foreign keys never dangle)."""
    for table in ("audit_log", "data_sources", "bindings", "connection_grants", "connections"):
        op.drop_table(table)
    op.drop_table("role_assignments")
    op.drop_table("principals")
