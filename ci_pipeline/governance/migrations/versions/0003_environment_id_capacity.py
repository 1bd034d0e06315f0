"""The environment's own id (written into the Dataverse sink's attachment marker) and capacity reports.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the environment identity row and the capacity reports per Dataverse environment."""
    op.create_table(
        "environment",
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("environment_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("slot = 1", name="ck_environment_slot"),
    )
    op.create_table(
        "capacity_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("target", sa.String(500), nullable=False, index=True),
        sa.Column("connection_name", sa.String(200)),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("capacity_reports")
    op.drop_table("environment")
