"""The history store (Alembic) and what reads it back: stale drills, alert state, the watch's state, metrics. The look ahead (forecast, plan, trends) is tasks/forecast.py and tasks/lookahead.py."""
