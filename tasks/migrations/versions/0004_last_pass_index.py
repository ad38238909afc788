"""An index for "when did each database last pass": verdict, point kind, database, start.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

`last_passes` (stale status, metrics, the page) groups the passing drills of the newest position by database. With only
the (database, started_at) index it read every row of the table; on a history of 1,000,000 drills this index answers it
from the index alone (tests/test_history_scale.py holds every history query to an index). Nothing recorded changes.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "ix_drillbook_drills_last_pass"


def upgrade() -> None:
    op.create_index(INDEX, "drillbook_drills", ["verdict", "point_kind", "database", "started_at"])


def downgrade() -> None:
    op.drop_index(INDEX, "drillbook_drills")
