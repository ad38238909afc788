"""Reading the catalogue file: every problem a ConfigError naming file, entry and field."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drillbook.tasks.config.catalogue import Catalogue
from drillbook.tasks.config.fields import CATALOGUE_ENV, DEFAULT_CATALOGUE
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.storage import litestream_variables, secret_variables
from drillbook.tasks.text import remember_secret, url_credentials_problem, url_secrets


def catalogue_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(CATALOGUE_ENV) or DEFAULT_CATALOGUE)


def _describe_location(data: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str | None, str]:
    """('orders' or 'database[2]', 'rto_target') from a pydantic error location."""
    if len(loc) >= 2 and loc[0] in ("database", "directories") and isinstance(loc[1], int):
        entries = data.get(loc[0]) or []
        entry_name = None
        if loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            entry_name = entries[loc[1]].get("name")
        entry = f"{loc[0]}[{loc[1]}]" + (f" {entry_name!r}" if entry_name else "")
        field = ".".join(str(p) for p in loc[2:]) or "(entry)"
        return entry, field
    return None, ".".join(str(p) for p in loc) or "(file)"


def _check_guards(catalogue: Catalogue, source: Path) -> None:
    scratch = catalogue.scratch_dir.resolve()
    for index, entry in enumerate(catalogue.database):
        if not entry.live_path:
            continue
        live = Path(entry.live_path).expanduser().resolve()
        if live == scratch or live.is_relative_to(scratch):
            raise ConfigError(
                f"{source}: database[{index}] {entry.name!r}: field live_path: {live} lies inside the scratch_dir {scratch}; "
                "drillbook creates and deletes files there. Point [drillbook] scratch_dir somewhere else.",
                path=str(source),
                entry=entry.name,
                field="live_path",
            )


_loaded: dict[tuple[str, str, str, str], Catalogue] = {}
_LOADED_KEPT = 8


def _checked_environment() -> str:
    """A digest of the variables the replica URL checks read (the backends declare them), never the values themselves."""
    items = sorted((k, os.environ[k]) for k in litestream_variables() if k in os.environ)
    return hashlib.sha256(repr(items).encode()).hexdigest()


def load_catalogue(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """Read and validate a catalogue; every problem is a ConfigError naming file, entry and field.

    Parsed once per process and content: a command that validates the catalogue and then
    starts a flow on the same file (the flow run is the deployment boundary, so it takes
    the path) gets a copy of the model already validated, not a second parse.
    """
    source = catalogue_path(path)
    try:
        raw = source.read_bytes()
    except OSError:
        raw = None  # reported below, by the same read
    if raw is not None:
        # The scratch default follows TMPDIR, and the backends' URL checks read their credential variables.
        key = (str(source.resolve()), hashlib.sha256(raw).hexdigest(), tempfile.gettempdir(), _checked_environment())
        if key in _loaded:
            catalogue = _loaded[key].model_copy(deep=True)
        else:
            catalogue = _parse_catalogue(source, raw)
            if len(_loaded) >= _LOADED_KEPT:
                _loaded.pop(next(iter(_loaded)))
            _loaded[key] = catalogue.model_copy(deep=True)
    else:
        catalogue = _parse_catalogue(source, None, given=path)
    _check_secrets(catalogue, source)  # outside the cache: ${VAR}s in a URL are read now, not at the first parse
    return catalogue


_SECRET_VARIABLE = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCOUNT_KEY|SAS_TOKEN|SESSION_KEY")


def _check_secrets(catalogue: Catalogue, source: Path) -> None:
    """Every secret a configured URL or Slack variable holds is masked in all output; a URL read two ways is refused.

    The history URL is checked after ${VAR} expansion, where a generated password lands; the message names the field
    and how to encode, never a character of the secret.
    """
    urls = [("[drillbook] field history_url", catalogue.history_url if catalogue.drillbook.history_url else None)]
    urls += [(f"database {entry.name!r}: field replica", entry.replica) for entry in catalogue.database]
    urls += [(f"directories {entry.name!r}: field replica", entry.replica) for entry in catalogue.directories]
    urls += [(f"database {entry.name!r}: field promote.replica", entry.promote.replica) for entry in catalogue.database if entry.promote]
    for where, url in urls:
        if not url:
            continue
        for secret in url_secrets(url):
            remember_secret(secret)
        problem = url_credentials_problem(url)
        if problem:
            field = where.rpartition("field ")[2]
            raise ConfigError(f"{source}: {where}: {problem}", path=str(source), field=field)
    for variable, value in os.environ.items():  # the backends' credentials come from the environment (README, 'Replica backends')
        if _SECRET_VARIABLE.search(variable) and not variable.endswith(("_FILE", "_PATH", "_ID")):
            remember_secret(value)
    for variable in secret_variables():  # and each backend names its secret ones, whatever they are called
        remember_secret(os.environ.get(variable))
    if catalogue.slack is not None:
        for variable in (catalogue.slack.token_env, catalogue.slack.webhook_url_env):
            if variable:
                remember_secret(os.environ.get(variable))


def not_found_message(source: Path, given: str | os.PathLike[str] | None) -> str:
    """Where drillbook looked and why there: --config, $DRILLBOOK_CONFIG, or the default in the current directory."""
    resolved = source.expanduser().absolute()
    if given:
        shown = f"{source}" if source.is_absolute() else f"{source} ({resolved})"
        return f"{shown}: catalogue not found. Create it (see README, 'Catalogue') or pass --config PATH."
    if os.environ.get(CATALOGUE_ENV):
        return (
            f"{resolved}: catalogue not found (${CATALOGUE_ENV}={os.environ[CATALOGUE_ENV]}). Fix ${CATALOGUE_ENV} or pass --config PATH."
        )
    return (
        f"{resolved}: catalogue not found (no --config given and ${CATALOGUE_ENV} not set: the default {DEFAULT_CATALOGUE} "
        f"in the current directory). Create it (see README, 'Catalogue'), pass --config PATH or set ${CATALOGUE_ENV}."
    )


def _parse_catalogue(source: Path, raw: bytes | None, given: str | os.PathLike[str] | None = None) -> Catalogue:
    try:
        if raw is None:
            raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(not_found_message(source, given), path=str(source)) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the catalogue: {exc.strerror}", path=str(source)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", path=str(source)) from None
    try:
        catalogue = Catalogue.model_validate({**data, "path": source.resolve()})
    except ValidationError as exc:
        problems = []
        first_entry = first_field = None
        for error in exc.errors():
            entry, field = _describe_location(data, tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; see README, 'Catalogue')"
            elif error["type"] == "missing":
                message = "required field is missing"
            where = f"{entry}: " if entry else ""
            problems.append(f"{where}field {field}: {message}")
            first_entry = first_entry or entry
            first_field = first_field or field
        detail = "\n  ".join(problems)
        raise ConfigError(f"{source}: invalid catalogue:\n  {detail}", path=str(source), entry=first_entry, field=first_field) from None
    if not catalogue.database and not catalogue.directories:
        raise ConfigError(f"{source}: no [[database]] or [[directories]] entries; add one (see README, 'Catalogue').", path=str(source))
    for entry in catalogue.database:  # every path in the catalogue is relative to its folder, the guard's included
        if entry.live_path:
            entry.live_path = str(catalogue.resolve(entry.live_path))
    for directory in catalogue.directories:
        if directory.live_dir:
            directory.live_dir = str(catalogue.resolve(directory.live_dir))
    _check_guards(catalogue, source)
    _check_expectations_dir(catalogue, source)
    return catalogue


def _check_expectations_dir(catalogue: Catalogue, source: Path) -> None:
    """An expectations_dir set on purpose must exist: a typo would otherwise silently mean "no suites"."""
    if "expectations_dir" not in catalogue.drillbook.model_fields_set:
        return
    directory = catalogue.resolve(catalogue.drillbook.expectations_dir)
    if not directory.is_dir():
        raise ConfigError(
            f"{source}: [drillbook] field expectations_dir: {directory} is not a directory; create it, fix the path, or remove the field",
            path=str(source),
            field="expectations_dir",
        )
