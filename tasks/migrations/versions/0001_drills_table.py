"""The drills table as drillbook first shipped it (one row per drill).

Revision ID: 0001
Revises:
Create Date: 2026-11-25

A history.db written before migrations existed already has this table (made by
`create_all`) and no version table: this revision then creates nothing and the
database is simply marked as being at 0001, so the next revisions upgrade it in
place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("drillbook_drills"):
        return
    op.create_table(
        "drillbook_drills",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("drill_id", sa.String(32), nullable=False),
        sa.Column("database", sa.String(64), nullable=False),
        sa.Column("release", sa.String(128)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("failure_mode", sa.String(64)),
        sa.Column("rto_seconds", sa.Float),
        sa.Column("rto_target_seconds", sa.Float, nullable=False),
        sa.Column("rpo_seconds", sa.Float),
        sa.Column("rpo_target_seconds", sa.Float, nullable=False),
        sa.Column("restored_txid", sa.String(32)),
        sa.Column("evidence", sa.String(1024)),
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_index("ix_drillbook_drills_drill_id", "drillbook_drills", ["drill_id"], unique=True)
    op.create_index("ix_drillbook_drills_database", "drillbook_drills", ["database"])
    op.create_index("ix_drillbook_drills_started_at", "drillbook_drills", ["started_at"])


def downgrade() -> None:
    op.drop_table("drillbook_drills")
