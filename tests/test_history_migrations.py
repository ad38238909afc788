"""The history store's Alembic migrations: a history.db from the first release upgrades in place, nothing lost; SQLite and PostgreSQL; from a wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import JSON, DateTime, Float, Integer, String, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from drillbook.tasks.history.store import VERSION_TABLE, head_revision, recent_drills, record_drill, trend_points, upgrade_store
from drillbook.tasks.outcome import Verdict
from drillbook.tasks.result import DrillResult

ROOT = Path(__file__).resolve().parent.parent


# A copy of the model as drillbook first shipped it (tasks/history/store.py before migrations): the
# store it wrote with `create_all` on every call, and the rows it inserted.
class LegacyBase(DeclarativeBase):
    pass


class LegacyDrillRecord(LegacyBase):
    __tablename__ = "drillbook_drills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drill_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    database: Mapped[str] = mapped_column(String(64), index=True)
    release: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(8))
    failure_mode: Mapped[str | None] = mapped_column(String(64))
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    rto_target_seconds: Mapped[float] = mapped_column(Float)
    rpo_seconds: Mapped[float | None] = mapped_column(Float)
    rpo_target_seconds: Mapped[float] = mapped_column(Float)
    restored_txid: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[str | None] = mapped_column(String(1024))
    summary: Mapped[dict] = mapped_column(JSON)


def legacy_record(url: str, result: DrillResult) -> None:
    """What `record_drill` did in the first release, line for line (create_all, then one row)."""
    engine = create_engine(url)
    LegacyBase.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(
            LegacyDrillRecord(
                drill_id=result.drill_id,
                database=result.database,
                release=result.release,
                started_at=result.started_at,
                finished_at=result.finished_at,
                verdict=result.verdict.value,
                failure_mode=result.failure_mode.value if result.failure_mode else None,
                rto_seconds=result.rto_seconds,
                rto_target_seconds=result.rto_target_seconds,
                rpo_seconds=result.rpo_seconds,
                rpo_target_seconds=result.rpo_target_seconds,
                restored_txid=result.restore.txid if result.restore else None,
                evidence=result.evidence,
                summary=result.summary(),
            )
        )
    engine.dispose()


def _result(drill_id: str, database: str, day: int, verdict: Verdict = Verdict.PASS, rto: float = 12.5) -> DrillResult:
    started = datetime(2026, 11, 1, 2, 30, tzinfo=UTC) + timedelta(days=day)
    return DrillResult.model_validate(
        {
            "drill_id": drill_id,
            "database": database,
            "release": "v1" if day == 0 else None,
            "started_at": started,
            "finished_at": started + timedelta(seconds=20),
            "verdict": verdict,
            "failure_mode": None if verdict == Verdict.PASS else "restore lag",
            "rto_seconds": rto,
            "rto_target_seconds": 120.0,
            "rpo_seconds": 30.0,
            "rpo_target_seconds": 600.0,
            "phases": {
                "replica": {"status": "passed", "seconds": 0.4},
                "restore": {"status": "passed", "seconds": rto - 2},
                "integrity": {"status": "passed", "seconds": 2.0},
            },
            "evidence": f"/srv/evidence/{database}/{drill_id}.json",
        }
    )


OLD = [_result("aaaa0001", "orders", 0), _result("aaaa0002", "orders", 1, Verdict.FAIL, rto=130.0), _result("aaaa0003", "users", 1)]


def _upgrade_keeps_everything(url: str) -> None:
    for result in OLD:
        legacy_record(url, result)
    engine = create_engine(url)
    before = {c["name"] for c in inspect(engine).get_columns("drillbook_drills")}
    assert "restored_bytes" not in before and not inspect(engine).has_table(VERSION_TABLE)
    engine.dispose()

    rows = recent_drills(url, limit=10)  # any use of the store upgrades it in place

    assert upgrade_store(url) == head_revision()
    assert [(r.drill_id, r.database, r.verdict, r.failure_mode, r.release, r.rto_seconds, r.evidence) for r in rows] == [
        ("aaaa0003", "users", "PASS", None, None, 12.5, "/srv/evidence/users/aaaa0003.json"),
        ("aaaa0002", "orders", "FAIL", "restore lag", None, 130.0, "/srv/evidence/orders/aaaa0002.json"),
        ("aaaa0001", "orders", "PASS", None, "v1", 12.5, "/srv/evidence/orders/aaaa0001.json"),
    ]
    assert [r.summary for r in rows] == [json.loads(json.dumps(o.summary())) for o in reversed(OLD)]
    assert rows[2].started_at.replace(tzinfo=UTC) == OLD[0].started_at
    # The new columns exist; old rows have their phase seconds filled in from their summary.
    assert rows[2].phase_seconds == {"replica": 0.4, "restore": 10.5, "integrity": 2.0}
    assert rows[2].restored_bytes is None and rows[2].drillbook_version is None

    # New drills go in beside the old ones, with what trends need.
    fresh = _result("bbbb0001", "orders", 2)
    record_drill(url, fresh)
    record_drill(url, fresh)  # once only
    points = trend_points(url, ["orders"])["orders"]
    assert [p.drill_id for p in points] == ["aaaa0001", "aaaa0002", "bbbb0001"]
    assert points[-1].restore_seconds == 10.5 and points[0].restore_seconds == 10.5
    newest = recent_drills(url, "orders", limit=1)[0]
    assert newest.drillbook_version  # the installed drillbook's version

    # Today's code (create_all of the old model) still works on the upgraded store, and the next upgrade is a no-op.
    legacy_record(url, _result("cccc0001", "users", 3))
    assert len(recent_drills(url, limit=10)) == 5
    assert upgrade_store(url) == head_revision()


def test_a_first_release_history_db_upgrades_in_place_on_sqlite(tmp_path):
    (tmp_path / "evidence").mkdir()
    _upgrade_keeps_everything(f"sqlite:///{tmp_path / 'evidence' / 'history.db'}")


def test_a_first_release_history_db_upgrades_in_place_on_postgresql(postgres_url):
    _upgrade_keeps_everything(postgres_url)


def test_the_fast_path_knows_the_newest_migration():
    from drillbook.tasks.history.store import HEAD_REVISION

    assert head_revision() == HEAD_REVISION, "a new migration script: update HEAD_REVISION in tasks/history/store.py"


def test_a_new_store_is_created_by_the_migrations(tmp_path, postgres_url):
    for url in (f"sqlite:///{tmp_path / 'new.db'}", postgres_url):
        assert upgrade_store(url) == head_revision()
        engine = create_engine(url)
        tables = set(inspect(engine).get_table_names())
        engine.dispose()
        assert {"drillbook_drills", "drillbook_alerts", VERSION_TABLE} <= tables, url


def test_the_migrations_ship_in_the_wheel_and_run_from_it(tmp_path, wheel):
    """Built as pip builds it, unpacked, imported with no checkout on the path: the store upgrades from the wheel's own scripts."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "drillbook/tasks/migrations/env.py",
        "drillbook/tasks/migrations/script.py.mako",
        "drillbook/tasks/migrations/versions/0001_drills_table.py",
    } <= names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    legacy_record(f"sqlite:///{tmp_path / 'old.db'}", OLD[0])
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import drillbook.tasks.history.store as h\n"
        "assert h.__file__.startswith(sys.argv[1]), h.__file__\n"
        "print(h.upgrade_store(sys.argv[3]), [r.drill_id for r in h.recent_drills(sys.argv[3])])\n"
    )
    # -S: no site hooks, so the editable install's path finder cannot answer for `drillbook`.
    ran = subprocess.run(
        [sys.executable, "-S", "-c", code, str(unpacked), sysconfig.get_paths()["purelib"], f"sqlite:///{tmp_path / 'old.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == [head_revision(), "['aaaa0001']"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_unusable_store_is_a_history_error_naming_it(tmp_path, backend):
    from drillbook.tasks.errors import HistoryError

    (tmp_path / "history.db").write_text("not a database")
    with pytest.raises(HistoryError) as caught:
        recent_drills(f"sqlite:///{tmp_path / 'history.db'}")
    assert str(caught.value).startswith(f"cannot read the drill history at sqlite:///{tmp_path / 'history.db'}: DatabaseError")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_drills_in_several_processes_upgrade_a_first_release_store_once(backend, tmp_path, request):
    """Four processes (a nightly's workers) hit the old store at once: one upgrades, the others wait, every row survives."""
    url = f"sqlite:///{tmp_path / 'history.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    for result in OLD:
        legacy_record(url, result)
    code = (
        "import sys\n"
        "from drillbook.tasks.history.store import record_drill, upgrade_store\n"
        "from tests.test_history_migrations import _result\n"
        "record_drill(sys.argv[1], _result('proc000' + sys.argv[2], 'orders', 5 + int(sys.argv[2])))\n"
        "print(upgrade_store(sys.argv[1]))\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, url, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for i in range(4)
    ]
    outcomes = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err[-800:] for _, err in outcomes]
    assert {out.strip() for out, _ in outcomes} == {head_revision()}
    rows = recent_drills(url, limit=20)
    assert sorted(r.drill_id for r in rows) == sorted([o.drill_id for o in OLD] + [f"proc000{i}" for i in range(4)])
