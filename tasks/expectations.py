"""Step 5: data expectations, Great Expectations suites run on the restored copy.

Suites are plain Great Expectations 1.x ``ExpectationSuite`` JSON files. The
table an expectation applies to is named in ``meta.table``, on the suite (for
all its expectations) or on one expectation (overriding the suite's)::

    {"name": "orders", "meta": {"table": "orders"},
     "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "status"}}]}

A database's suites are the files its catalogue entry lists under
``expectations`` (relative to ``[drillbook] expectations_dir``), or by default
every ``*.json`` in ``<expectations_dir>/<name>/``.

Run in an ephemeral context (no ``gx/`` folder, progress bars off) through
SQLAlchemy on a read-only URL: a wrong path is an error, never a new empty
database. No row values reach the result unless the entry opts in: Great
Expectations is asked for no samples (``partial_unexpected_count: 0``), only
named counts are copied out of its results, and an observed value that is not
a number is withheld (a column's distinct values or its most common value are
row data).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from drillbook.tasks.catalogue_sql import copy_tables, has_table, lacks
from drillbook.tasks.config import Catalogue, DatabaseEntry
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.outcome import Status
from drillbook.tasks.steps import StepResult

SAMPLE_COUNT = 20  # unexpected values kept per failed expectation when an entry opts in
_ERROR_CHARS = 400
# Expectations whose observed value is schema, not row data: kept even when it is text.
_SCHEMA_OBSERVATIONS = {
    "expect_column_values_to_be_of_type",
    "expect_column_values_to_be_in_type_list",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_columns_to_match_set",
    "expect_table_column_count_to_equal",
    "expect_table_column_count_to_be_between",
}
_INDEX_KEY = "drillbook_index"


def read_only_url(path: str | Path) -> str:
    """SQLAlchemy URL opening `path` read-only; SQLite refuses a missing file instead of creating it."""
    return f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true"


# --- loading ---------------------------------------------------------------------------------------


@dataclass
class Suite:
    """One suite file, validated: its expectations as configurations, each with its table."""

    path: Path
    name: str
    expectations: list[dict[str, Any]] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # parallel to expectations

    def __len__(self) -> int:
        return len(self.expectations)


def suite_paths(entry: DatabaseEntry, expectations_dir: Path) -> list[Path]:
    """The suite files of `entry`: those it lists, or every *.json in <expectations_dir>/<name>/."""
    if entry.expectations is None:
        folder = expectations_dir / entry.name
        return sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [expectations_dir / name for name in entry.expectations]


def load_suite(path: Path, *, entry: str | None = None) -> Suite:
    """Read one suite file; anything that does not load completely is a ConfigError naming file and expectation."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    def fail(message: str, field_: str | None = None) -> ConfigError:
        return ConfigError(f"{path}: {message}", path=str(path), entry=entry, field=field_)

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        listed = f" (listed by database {entry!r})" if entry else ""
        raise fail(f"suite file not found{listed}; create it or fix the catalogue's expectations list") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the suite: {exc}") from None
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise fail('not an expectation suite: expected a JSON object with an "expectations" list')
    suite_meta = data.get("meta") or {}
    if not isinstance(suite_meta, dict):
        raise fail('field meta: expected a JSON object like {"table": "orders"}', "meta")
    name = str(data.get("name") or path.stem)

    suite = Suite(path=path, name=name)
    objects = []
    for index, raw in enumerate(data["expectations"]):
        where = f"expectation[{index}]"
        if not isinstance(raw, dict):
            raise fail(f"{where}: expected a JSON object with type and kwargs", where)
        kind = raw.get("type") or raw.get("expectation_type")
        where_kind = f"{where} ({kind})" if kind else where
        try:
            objects.append(ExpectationConfiguration(**raw).to_domain_obj())
        except Exception as exc:  # Great Expectations raises many kinds here; each is a bad entry
            message = " ".join(str(exc).split())[:_ERROR_CHARS]
            if type(exc).__name__ == "ExpectationNotFoundError":
                message = "unknown expectation type; check the spelling against the Great Expectations 1.x expectation names"
            raise fail(f"{where_kind}: does not load: {message}", where) from None
        meta = raw.get("meta") or {}
        table = meta.get("table") if isinstance(meta, dict) else None
        table = table or suite_meta.get("table")
        if not isinstance(table, str) or not table:
            raise fail(f'{where_kind}: no table: set "meta": {{"table": "..."}} on the suite or on the expectation', where)
        suite.expectations.append(raw)
        suite.tables.append(table)

    # Great Expectations drops an invalid expectation with only a log line: count what it kept.
    try:
        kept = len(ExpectationSuite(name=name, expectations=objects).expectations)
    except Exception as exc:
        raise fail(f"does not load as a suite: {exc}") from None
    if kept != len(data["expectations"]):
        raise fail(f"{len(data['expectations'])} expectations in the file but Great Expectations loaded {kept}")
    return suite


def load_suites(entry: DatabaseEntry, expectations_dir: Path) -> list[Suite]:
    return [load_suite(path, entry=entry.name) for path in suite_paths(entry, expectations_dir)]


def expectations_dir(catalogue: Catalogue) -> Path:
    return catalogue.resolve(catalogue.drillbook.expectations_dir)


# --- results ---------------------------------------------------------------------------------------


class ExpectationResult(BaseModel):
    """One expectation's outcome: counts and aggregates, never row values (unless samples were asked for)."""

    suite: str
    index: int = Field(description="Position of the expectation in its suite file.")
    type: str
    table: str
    column: str | None = None
    success: bool = False
    observed_value: Any = Field(default=None, description="Numbers and schema facts; other values are withheld.")
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    missing_count: int | None = None
    error: str | None = Field(default=None, description="The expectation could not be evaluated: why.")
    samples: list[Any] | None = Field(default=None, description="Unexpected values; only when the entry sets expectations_samples.")

    @property
    def label(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        return f"{target} {self.type}"

    def describe(self) -> str:
        """'customers.email expect_column_values_to_match_regex: 12 unexpected (0.6%)': no samples."""
        if self.error:
            return f"{self.label}: error: {self.error}"
        parts = []
        if self.unexpected_count is not None:
            percent = f" ({self.unexpected_percent:.3g}%)" if self.unexpected_percent is not None else ""
            parts.append(f"{self.unexpected_count:,} unexpected{percent}")
        if self.observed_value is not None:
            parts.append(f"observed {self.observed_value}")
        return f"{self.label}: " + (", ".join(parts) or "failed")


class ExpectationsReport(StepResult):
    suites: list[str] = Field(default_factory=list, description="Suite files run.")
    results: list[ExpectationResult] = Field(default_factory=list)
    samples_kept: bool = False

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]


# --- running ---------------------------------------------------------------------------------------


def _context():
    """An ephemeral Great Expectations context: nothing written to disk, no progress bars, no docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _plain(value: Any) -> Any:
    """JSON-safe Python from numpy / pandas scalars (numpy bools break GX's own serialization on pandas 3)."""
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _is_aggregate(value: Any) -> bool:
    """A number (or a structure of numbers): safe to report; anything textual may be row data."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, list):
        return all(_is_aggregate(v) for v in value)
    if isinstance(value, dict):
        return all(_is_aggregate(v) for v in value.values())
    return False


def _error_text(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:_ERROR_CHARS]


def _gx_error(exception_info: Any) -> str | None:
    """The message of an exception Great Expectations caught while evaluating one expectation."""
    if not isinstance(exception_info, dict):
        return None
    infos = [exception_info] if "raised_exception" in exception_info else [v for v in exception_info.values() if isinstance(v, dict)]
    for info in infos:
        if info.get("raised_exception"):
            return _error_text(str(info.get("exception_message") or "raised an exception"))
    return None


def _convert(base: ExpectationResult, validation: Any, *, samples: bool) -> ExpectationResult:
    result = base.model_copy()
    error = _gx_error(getattr(validation, "exception_info", None))
    if error:
        result.error = error
        result.success = False
        return result
    result.success = bool(_plain(validation.success))
    found = _plain(dict(validation.result or {}))
    for key in ("element_count", "unexpected_count", "missing_count"):
        if isinstance(found.get(key), int):
            setattr(result, key, found[key])
    if isinstance(found.get("unexpected_percent"), (int, float)):
        result.unexpected_percent = round(float(found["unexpected_percent"]), 6)
    if "observed_value" in found:
        observed = found["observed_value"]
        if samples and isinstance(observed, list) and not _is_aggregate(observed):
            result.observed_value = observed[:SAMPLE_COUNT]
        elif samples or base.type in _SCHEMA_OBSERVATIONS or _is_aggregate(observed):
            result.observed_value = observed
        else:
            result.observed_value = "(withheld: not a number; set expectations_samples = true to keep)"
    if samples and found.get("partial_unexpected_list"):
        result.samples = list(found["partial_unexpected_list"])[:SAMPLE_COUNT]
    return result


def _result_format(samples: bool) -> dict[str, Any]:
    return {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_COUNT if samples else 0, "include_unexpected_rows": False}


def run_expectations(path: str | Path, suites: list[Suite], *, samples: bool = False) -> ExpectationsReport:
    """Run every expectation of `suites` on the copy at `path`; one that raises is reported as its own error."""
    started = time.monotonic()
    report = ExpectationsReport(suites=[str(s.path) for s in suites], samples_kept=samples)
    if not suites or not any(len(s) for s in suites):
        report.status = Status.SKIPPED
        report.summary = "no expectation suites for this database"
        return report

    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    # Group by table: one batch and one validation call per table (GX bundles the metric queries).
    groups: dict[str, list[tuple[ExpectationResult, dict[str, Any]]]] = {}
    for suite in suites:
        for index, (raw, table) in enumerate(zip(suite.expectations, suite.tables)):
            kwargs = raw.get("kwargs") or {}
            column = kwargs.get("column") if isinstance(kwargs.get("column"), str) else None
            base = ExpectationResult(suite=suite.path.name, index=index, type=str(raw.get("type")), table=table, column=column)
            groups.setdefault(table, []).append((base, raw))

    try:
        absent = _absent_tables(path, list(groups))
    except sqlite3.Error as exc:
        report.status = Status.ERROR
        report.summary = f"cannot open the restored copy {path} read-only: {exc}"
        report.seconds = round(time.monotonic() - started, 3)
        return report
    context = _context()
    try:
        source = context.data_sources.add_sqlite(name="restored-copy", connection_string=read_only_url(path))
    except Exception as exc:
        report.status = Status.ERROR
        report.summary = f"cannot open the restored copy {path} read-only: {_error_text(exc)}"
        report.seconds = round(time.monotonic() - started, 3)
        return report
    try:
        for table, members in groups.items():
            if table in absent:  # a suite against a table the copy lacks: that suite's FAIL, not a GX crash
                report.results.extend(base.model_copy(update={"error": absent[table]}) for base, _ in members)
                continue
            report.results.extend(_run_table(source, table, members, samples, ExpectationSuite, ExpectationConfiguration))
    finally:
        try:
            source.get_execution_engine().engine.dispose()
        except Exception:  # closing is best effort: the copy is read-only
            pass

    position = {}
    for number, suite in enumerate(suites):
        position.setdefault(suite.path.name, number)
    report.results.sort(key=lambda r: (position[r.suite], r.index))  # file order, whatever the table grouping
    return _finish(report, started)


def _absent_tables(path: str | Path, tables: list[str]) -> dict[str, str]:
    """The suites' tables the copy does not have, each with what the copy has instead (names only)."""
    connection = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=5)
    try:
        missing = [table for table in tables if not has_table(connection, table)]
        held = copy_tables(connection) if missing else []
    finally:
        connection.close()
    return {table: lacks(f"table {table}", held) for table in missing}


def _domain(raw: dict[str, Any], position: int, configuration_cls: Any) -> Any:
    expectation = configuration_cls(**raw).to_domain_obj()
    expectation.meta = {**(expectation.meta or {}), _INDEX_KEY: position}
    return expectation


def _run_table(source: Any, table: str, members: list, samples: bool, suite_cls: Any, configuration_cls: Any) -> list[ExpectationResult]:
    result_format = _result_format(samples)
    try:
        asset = source.add_table_asset(name=f"table-{table}", table_name=table)
        batch = asset.add_batch_definition_whole_table("whole-table").get_batch()
    except Exception as exc:
        message = _error_text(exc)
        return [base.model_copy(update={"error": f"table {table!r} cannot be read: {message}"}) for base, _ in members]

    # Fast path: the whole table's expectations in one call; GX isolates most per-expectation failures itself.
    try:
        suite = suite_cls(
            name=f"drillbook-{table}", expectations=[_domain(raw, i, configuration_cls) for i, (_, raw) in enumerate(members)]
        )
        validation = batch.validate(suite, result_format=result_format)
        by_position = {}
        for item in validation.results:
            meta = item.expectation_config.meta or {}
            by_position[meta.get(_INDEX_KEY)] = item
        if len(by_position) == len(members):
            return [_convert_safely(base, by_position[i], samples) for i, (base, _) in enumerate(members)]
    except Exception:
        pass  # one expectation raised out of the suite: run them one by one so the others still count

    results = []
    for base, raw in members:
        try:
            validation = batch.validate(_domain(raw, 0, configuration_cls), result_format=result_format)
        except Exception as exc:
            results.append(base.model_copy(update={"error": _error_text(exc)}))
            continue
        results.append(_convert_safely(base, validation, samples))
    return results


def _convert_safely(base: ExpectationResult, validation: Any, samples: bool) -> ExpectationResult:
    try:
        return _convert(base, validation, samples=samples)
    except Exception as exc:
        return base.model_copy(update={"error": f"result could not be read: {_error_text(exc)}"})


def _finish(report: ExpectationsReport, started: float) -> ExpectationsReport:
    report.seconds = round(time.monotonic() - started, 3)
    total = len(report.results)
    failures = report.failures
    suites = f"{len(report.suites)} suite{'s' if len(report.suites) != 1 else ''}"
    if not failures:
        report.status = Status.PASSED
        report.summary = f"{total} expectation{'s' if total != 1 else ''} in {suites} passed"
    else:
        report.status = Status.FAILED
        listed = "; ".join(r.describe() for r in failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        report.summary = f"{len(failures)} of {total} expectations failed: {listed}"
    return report
