"""attachments: each unclassified edoc's attachments, with the span of their base64 text

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table and nothing else: documents stored before it have no rows here and their
    # attachments are read from the parsed package, as they always were.
    op.create_table(
        "attachments",
        sa.Column("document", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("content_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("span_offset", sa.Integer(), nullable=True),
        sa.Column("span_length", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["document"], ["documents.id"]),
        sa.PrimaryKeyConstraint("document", "position"),
    )


def downgrade() -> None:
    op.drop_table("attachments")
