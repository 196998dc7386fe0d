"""package_parts: packages stored in ordered parts of at most 1 MiB, and documents.parts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Documents stored before keep their bytes in documents.package (parts stays NULL) and are
    # read from there: moving every stored blob now would rewrite the whole database at start-up.
    op.create_table(
        "package_parts",
        sa.Column("document", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["document"], ["documents.id"]),
        sa.PrimaryKeyConstraint("document", "seq"),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("parts")
    op.drop_table("package_parts")
