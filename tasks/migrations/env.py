"""Alembic environment for the history store.

drillbook runs the migrations itself (drillbook.tasks.history.store.upgrade) on a
connection it opened, passed in `config.attributes["connection"]`; there is no
alembic.ini. The migration scripts use `op.*` only, never the live model, so an
old revision means the same thing forever.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="drillbook_alembic_version", render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
