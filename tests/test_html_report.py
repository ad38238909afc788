"""`drillbook report --html`: one self-contained page, opened in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.evidence import read_bundle
from tests.conftest import entry
from tests.test_looking_ahead import seed

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(capsys, replicate, write_catalogue, tmp_path) -> Path:
    """Three databases: `orders` drilled for real with 20 nights of growing restores before it, `users` drilled
    four days ago only (stale), `invoices` never drilled."""
    replicated = replicate()
    config = write_catalogue(entry("orders", replicated.replica), entry("users", replicated.replica), entry("invoices", replicated.replica))
    assert main(["run", "orders", "--config", str(config), "--json"]) == 0
    template = read_bundle(Path(json.loads(capsys.readouterr().out)["evidence"]))
    url = load_catalogue(config).history_url
    seed(url, template, [60 + 2 * i for i in range(20)])
    seed(url, template.model_copy(update={"database": "users"}), [20.0, 22.0, 21.0], end=datetime.now(UTC) - timedelta(days=4))
    out = tmp_path / "site" / "drills.html"
    assert main(["report", "--html", str(out), "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    return out


def test_the_page_is_self_contained_with_stale_databases_first(page):
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page loads something from elsewhere"
    assert "<link" not in html and "@import" not in html
    assert html.count("<svg") == 2  # orders and users have drills; invoices has none
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "two inline charts share an SVG id (a clip path or marker would be taken from the wrong chart)"
    banner = html.index('data-stale="2"')
    sections = [m.group(1) for m in re.finditer(r'data-database="([^"]+)"', html)]
    assert sections == ["invoices", "users", "orders"] and banner < html.index('data-database="invoices"')
    assert ">invoices</a>: no passing drill recorded" in html and "No drills recorded yet." in html
    orders = html[html.index('data-database="orders"') :]
    assert re.search(
        r'class="warning" data-figure="forecast">RTO [^<]+, \+14\.0 s/week: crosses the 2m 00s target in about \d+ days', orders
    )
    assert "No-go advice" not in orders  # sizes are flat: a warning, no route to a server database
    assert "evidence" in orders and str(Path(read_bundle_path(html))) in orders


def read_bundle_path(html: str) -> str:
    return re.search(r'data-database="orders".*?<code>([^<]+)</code>', html, re.S).group(1)


def test_headless_chromium_renders_the_charts_and_the_figures(page, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install -y chromium); the page itself is tested without it")
    profile = tmp_path / "chromium-profile"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--window-size=1100,1800"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-charts-rendered="2"' in dom.stdout  # the browser laid out both charts with their lines
    assert re.search(r'data-figure="rto">[0-9.]+s<', dom.stdout) and "crosses the 2m 00s target" in dom.stdout

    shot = tmp_path / "page.png"
    ran = subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0 and shot.is_file(), ran.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert pixels[..., :3].std() > 0.05  # not a blank page
    red = ((pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)).sum()
    assert red > 50  # the stale banner's border and the FAIL / stale colours are drawn


def test_an_unwritable_output_is_one_line_naming_it(write_catalogue, replicate, tmp_path, capsys):
    config = write_catalogue(entry("orders", "file:///nowhere/orders.db"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", "--html", str(blocker / "out.html"), "--config", str(config)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"drillbook: cannot write the report to {blocker / 'out.html'}: {blocker} is not a directory; choose another path for --html"
    )


@pytest.mark.skipif(not shutil.which("chromium") and not Path(CHROMIUM).exists(), reason="chromium is not installed")
def test_chromium_is_the_debian_package():
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert version.startswith("Chromium")


def test_the_inline_chart_is_well_formed_svg_with_targets_marks_and_the_forecast():
    import xml.etree.ElementTree as ElementTree

    from drillbook.tasks.forecast import forecast_rto
    from drillbook.tasks.report.svg import render_svg
    from tests.test_forecast import NOW, daily

    points = daily([60 + 2 * i for i in range(20)], verdicts={5: "FAIL", 9: "ERROR"})
    for p in points:
        p.rpo_seconds, p.rpo_target_seconds = 30.0, 600.0
    forecast = forecast_rto("orders", points, target_seconds=120, now=NOW)
    svg = render_svg(points, forecast, now=NOW, label="orders <&> chart")
    root = ElementTree.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("viewBox") == "0 0 720 330" and root.find(f"{ns}title").text == "orders <&> chart"
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "target 2m 00s" in texts and "target 10m 00s" in texts and {"RTO", "RPO"} <= set(texts)
    assert len(root.findall(f"{ns}polyline")) == 2  # the passing drills' RTO and RPO
    marks = [p.get("stroke") for p in root.iter(f"{ns}path")]
    assert marks.count("#c62828") == 2 and marks.count("#f9a825") == 2  # FAIL and ERROR marked in both panels
    (dotted,) = [line for line in root.iter(f"{ns}line") if line.get("stroke") == "#ef6c00"]
    assert float(dotted.get("y2")) < float(dotted.get("y1"))  # the forecast rises toward the target
    assert "id=" not in svg  # several charts share one page


def test_the_demo_can_seed_sample_history_marked_as_such_and_writes_the_page(tmp_path, capsys):
    evidence = tmp_path / "evidence"
    assert main(["demo", "--evidence-dir", str(evidence), "--sample-history"]) == 0
    out = capsys.readouterr().out
    assert "demo: seeded 14 nights of SAMPLE history" in out
    page = (evidence / "report.html").read_text()
    assert "(14 of them SAMPLE DATA from `drillbook demo --sample-history`, not real drills)" in page
    assert re.search(r"RTO \S+, \+\d+\.\d s/week: crosses the 2m 00s target in about \d+ days", page)
    from drillbook.tasks.history.store import recent_drills

    rows = recent_drills(f"sqlite:///{evidence / 'history.db'}", limit=50)
    samples = [r for r in rows if r.release == "SAMPLE DATA"]
    assert len(samples) == 14 and all(r.drill_id.startswith("sample-") and r.evidence is None for r in samples)
    assert all("not a real drill" in r.summary["notes"][0] for r in samples)
    assert [r for r in rows if r.release != "SAMPLE DATA"][0].verdict == "PASS"  # today's real drill


def test_every_value_on_the_page_is_escaped_where_it_lands_attributes_included():
    from datetime import UTC, datetime

    from drillbook.tasks.report.html import Fleet, Section, environment

    hostile = '"><script>alert(1)</script>'
    section = Section(name="orders", verdict=hostile, badge=hostile, newest=None, status=None, outlook=None, drills=0, sample=0, chart=None)
    fleet = Fleet(name=hostile, replica=hostile, tenants=2, tally=hostile, attention=1, shown=1, problem=hostile)
    html = (
        environment()
        .get_template("page.html.j2")
        .render(
            count=1,
            source=hostile,
            now=datetime(2026, 12, 1, tzinfo=UTC),
            days="90",
            legend=[],
            stale=[],
            coverage=hostile,
            night=None,
            sections=[section],
            fleets=[fleet],
            stale_listed=200,
        )
    )
    assert "<script>alert(1)" not in html
    assert 'data-directory="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert 'class="badge &#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html  # the attribute html.py left unescaped
