"""push notifications: notify_endpoints (an agency's HTTPS endpoint) and notifications (the queue)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import gateway.infra.sql.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Two new tables and nothing else: existing rows need no rewrite.
    op.create_table(
        "notify_endpoints",
        sa.Column("agency", sqlmodel.sql.sqltypes.AutoString(length=35), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("registered_at", gateway.infra.sql.tables.UTCDateTime(length=32), nullable=False),
        sa.PrimaryKeyConstraint("agency"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("recipient", sqlmodel.sql.sqltypes.AutoString(length=35), nullable=False),
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", gateway.infra.sql.tables.UTCDateTime(length=32), nullable=False),
        sa.Column("next_attempt_at", gateway.infra.sql.tables.UTCDateTime(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["document"], ["documents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("document", "recipient", name="uq_notifications_document_recipient"),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_claim", ["priority", "id"], unique=False)
        batch_op.create_index("ix_notifications_recipient", ["recipient"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_recipient")
        batch_op.drop_index("ix_notifications_claim")
    op.drop_table("notifications")
    op.drop_table("notify_endpoints")
