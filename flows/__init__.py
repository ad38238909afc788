"""Prefect flows and the `drillbook` command line; they import tasks/, never the reverse."""
