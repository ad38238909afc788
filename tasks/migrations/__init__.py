"""Alembic migrations of the history store (shipped as package data; run by drillbook.tasks.history.store.upgrade)."""
