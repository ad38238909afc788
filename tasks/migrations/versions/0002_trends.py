"""What trends and forecasts need: restored bytes, the replica's LTX files, phase seconds, versions, the restore plan; alert state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Every new column is nullable: rows from before keep everything they had. Their
phase seconds are filled in from the summary each row already carries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def _new_columns() -> list[sa.Column]:
    return [
        sa.Column("restored_bytes", sa.BigInteger),
        sa.Column("ltx_files", sa.Integer),
        sa.Column("ltx_levels", sa.JSON),
        sa.Column("ltx_bytes", sa.BigInteger),
        sa.Column("phase_seconds", sa.JSON),
        sa.Column("drillbook_version", sa.String(32)),
        sa.Column("litestream_version", sa.String(32)),
        sa.Column("planned_rto_seconds", sa.Float),
        sa.Column("planned_bytes", sa.BigInteger),
    ]


def upgrade() -> None:
    for column in _new_columns():
        op.add_column("drillbook_drills", column)
    op.create_index("ix_drillbook_drills_database_started_at", "drillbook_drills", ["database", "started_at"])
    op.create_table(
        "drillbook_alerts",
        sa.Column("database", sa.String(64), primary_key=True),
        sa.Column("stale", sa.Boolean, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_pass_at", sa.DateTime(timezone=True)),
        sa.Column("notified_key", sa.String(128)),
    )
    drills = sa.table("drillbook_drills", sa.column("id", sa.Integer), sa.column("summary", sa.JSON), sa.column("phase_seconds", sa.JSON))
    bind = op.get_bind()
    updates = []
    for row_id, summary in bind.execute(sa.select(drills.c.id, drills.c.summary)):
        phases = (summary or {}).get("phases") or {}
        seconds = {name: phase.get("seconds") for name, phase in phases.items() if isinstance(phase, dict)}
        if seconds:
            updates.append({"row_id": row_id, "seconds": seconds})
    if updates:
        bind.execute(drills.update().where(drills.c.id == sa.bindparam("row_id")).values(phase_seconds=sa.bindparam("seconds")), updates)


def downgrade() -> None:
    op.drop_table("drillbook_alerts")
    op.drop_index("ix_drillbook_drills_database_started_at", "drillbook_drills")
    with op.batch_alter_table("drillbook_drills") as batch:
        for column in _new_columns():
            batch.drop_column(column.name)
