"""The replication watch's state (per database: stopped or not, since when, the replica's newest change, the alert's key);
a point-in-time drill's kind as a column, so "last PASS" and "last RTO" can leave point drills out.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every row recorded before keeps what it had; point drills among them get their kind from the summary they carry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drillbook_watch",
        sa.Column("database", sa.String(64), primary_key=True),
        sa.Column("stopped", sa.Boolean, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replica_newest_at", sa.DateTime(timezone=True)),
        sa.Column("notified_key", sa.String(160)),
    )
    op.add_column("drillbook_drills", sa.Column("point_kind", sa.String(16)))
    drills = sa.table("drillbook_drills", sa.column("id", sa.Integer), sa.column("summary", sa.JSON), sa.column("point_kind", sa.String))
    bind = op.get_bind()
    updates = []
    for row_id, summary in bind.execute(sa.select(drills.c.id, drills.c.summary)):
        point = (summary or {}).get("point") or {}
        if point:
            updates.append({"row_id": row_id, "kind": str(point.get("kind") or "at")[:16]})
    if updates:
        bind.execute(drills.update().where(drills.c.id == sa.bindparam("row_id")).values(point_kind=sa.bindparam("kind")), updates)


def downgrade() -> None:
    op.drop_column("drillbook_drills", "point_kind")
    op.drop_table("drillbook_watch")
