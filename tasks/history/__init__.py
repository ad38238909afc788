"""The history store (Alembic) and what reads it: trends, the RTO forecast, stale drills, metrics."""
