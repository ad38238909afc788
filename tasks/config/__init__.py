"""The catalogue: which databases drillbook drills, and what "recoverable" means for each.

One TOML file (``drillbook.toml`` by default) validated into one typed model.
Credentials never live here: litestream and boto3 read the standard AWS
environment variables and profiles.
"""

from drillbook.tasks.config.catalogue import Catalogue, Settings, SlackSettings
from drillbook.tasks.config.entry import DatabaseEntry
from drillbook.tasks.config.fields import (
    CATALOGUE_ENV,
    DEFAULT_CATALOGUE,
    DURATION_HINT,
    Duration,
    RestorePoints,
    SmokeCheck,
    check_release,
    parse_duration,
)
from drillbook.tasks.config.load import catalogue_path, load_catalogue

__all__ = [
    "CATALOGUE_ENV",
    "DEFAULT_CATALOGUE",
    "DURATION_HINT",
    "Catalogue",
    "DatabaseEntry",
    "Duration",
    "RestorePoints",
    "Settings",
    "SlackSettings",
    "SmokeCheck",
    "catalogue_path",
    "check_release",
    "load_catalogue",
    "parse_duration",
]
