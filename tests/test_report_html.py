"""The interactive HTML report: its structure (parsed, no browser), its escaping, its fallback without plotly,
and a real headless Chromium loading it with no console error.

How console errors are caught (the browser test): a copy of the page made for the test gets, first in its
``<head>``, a small collector script that records ``window`` error events (uncaught exceptions, and resources
that fail to load: capture phase), unhandled promise rejections and ``console.error`` calls, and writes them
into an attribute of ``<html>`` as they happen; ``--dump-dom`` (after the scripts ran) returns it. The shipped
page carries no test code. Chromium's own log (``--enable-logging=stderr``) is read too: it prints every
console message as ``CONSOLE`` lines, and none may say ``Uncaught`` or ``Error``. The browser runs with all host
names unresolvable, so a page that tried to load anything from the network would fail the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_SHAPE
from tinymods import NotExportable, TinyNet

from mmt_nas.predict.predictor import LatencyPredictor
from mmt_nas.report.document import Report
from mmt_nas.report.evaluation import evaluate
from mmt_nas.report.html import UNATTRIBUTED, family_rows, op_rows, render_html

# a model name that tries to end the page's scripts and run its own
HOSTILE = 'evil</script><script>document.title="PWNED"</script><img src=x onerror="document.title=\'PWNED\'">&amp;'
SCREENSHOT_COPY = Path("/tmp/mmt_nas_report_screenshot.png")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


@pytest.fixture(scope="module")
def written(tiny_ops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, dict[str, Path]]:
    """A real report on tiny nets (one of them with a hostile name, one estimated by the fallback, one that
    fails to export), written with its plots."""
    pytest.importorskip("plotly")
    import torch

    from mmt_nas.predict.fallback import LatencyRegressor

    predictor = LatencyPredictor(tiny_ops)
    predictor = LatencyPredictor(
        predictor.table, on_missing="fallback", fallback=LatencyRegressor().fit(predictor.table)
    )
    cases = [
        ("tiny", TinyNet(), TINY_SHAPE),
        (HOSTILE, TinyNet(), TINY_SHAPE),
        ("wide (fallback)", TinyNet(width=16), TINY_SHAPE),
        ("not-exportable", torch.nn.Sequential(torch.nn.ReLU(), NotExportable()), [1, 4, 4]),
    ]
    results = evaluate(predictor, cases, times=3, repeats=2, profile_times=2)
    report = Report(results, predictor.table, {"times": 3, "repeats": 2})
    return report, report.write(tmp_path_factory.mktemp("html") / "rep")


class _Page(HTMLParser):
    """What the tests look for in a page: text by element id, scripts, drill-downs, plot divs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self.text_by_id: dict[str, str] = {}
        self.drilldowns: list[str] = []  # their ids
        self.drill_names: list[str] = []
        self.classes: list[str] = []
        self.external: list[str] = []  # src/href that would load something
        self.handlers: list[str] = []  # on* attributes (event handlers)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.handlers.extend(k for k in a if k.startswith("on"))
        if tag in ("br", "img", "meta", "link", "input"):
            if tag == "img" and not a.get("src", "").startswith("data:"):
                self.external.append(a.get("src", ""))
            if tag == "link":
                self.external.append(a.get("href", ""))
            return
        self.stack.append((tag, a))
        self.classes.extend(a.get("class", "").split())
        if tag == "details" and "drilldown" in a.get("class", ""):
            self.drilldowns.append(a.get("id", ""))
        if tag == "script":
            self.scripts.append("")
            if a.get("src"):
                self.external.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1][0] == "script":
            self.scripts[-1] += data
            return
        for _, a in self.stack:
            if a.get("id"):
                self.text_by_id[a["id"]] = self.text_by_id.get(a["id"], "") + data
        if self.stack and "model-name" in self.stack[-1][1].get("class", ""):
            self.drill_names.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


# -- structure, without a browser -------------------------------------------------------------------------------


def test_the_page_has_the_summary_plots_tables_and_one_drilldown_per_model(written: Any) -> None:
    report, paths = written
    text = paths["html"].read_text(encoding="utf-8")
    assert text.rstrip().endswith("</html>")
    page = _parse(text)
    summary = " ".join(page.text_by_id["summary"].split())
    n_ok = sum(r.ok for r in report.results)
    assert n_ok == 3
    assert f"of {n_ok} models" in summary and "within ±10%" in summary and "within ±5%" in summary
    assert "Bias" in summary and f"{report.metrics['mean_signed_error_pct']:+.1f}%" in summary
    assert "Noise floor" in summary and "perfect predictor" in summary
    beyond = report.metrics["beyond_noise_pct"]  # every model measured in 2 rounds: its noise is known
    assert beyond is not None and f"the model's own error is {beyond:.1f}% RMS" in summary
    assert "Where the error comes from" in summary and "fallback" in summary
    # the plots: plotly's divs, its JavaScript inline once, nothing loaded from elsewhere
    assert {"plot-pred-vs-measured", "plot-error-distribution", "plot-families"} <= {
        i for i in re.findall(r'id="([^"]+)" class="plotly-graph-div"', text)
    }
    assert sum("Plotly.newPlot" in s for s in page.scripts) == 3
    assert sum(len(s) > 1_000_000 for s in page.scripts) == 1  # plotly.js itself, once
    assert page.external == []
    # one drill-down per model, named as the model, in order; the tables can be sorted
    assert page.drilldowns == [f"model-{i}" for i in range(len(report.results))]
    assert [" ".join(n.split()) for n in page.drill_names] == [r.name for r in report.results]
    assert "sortable" in page.classes and "models-table" in page.text_by_id and "families-table" in page.text_by_id
    assert "not in the latency table" not in text  # the fallback estimated it
    assert "ExportError" in page.text_by_id["model-3"]
    # the static PNGs are kept, in their own section
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', text)) == 3


def test_a_hostile_model_name_is_text_everywhere(written: Any) -> None:
    _, paths = written
    text = paths["html"].read_text(encoding="utf-8")
    page = _parse(text)
    assert HOSTILE not in text and page.handlers == []
    # the parser ends a script at its first "</script": the page's six scripts (plotly's configuration and
    # library, the three plots, the tables' sorting) are all there, and none is the name's
    assert len(page.scripts) == 6 and not any(s.lstrip().startswith("document.title") for s in page.scripts)
    assert [s for s in page.scripts if "Plotly.newPlot" in s and "PWNED" in s]  # the name is in a plot's data...
    assert not any("</" in s for s in page.scripts if "Plotly.newPlot" in s)  # ...as escaped JSON
    assert HOSTILE in page.drill_names[1] and HOSTILE in page.text_by_id["models-table"]
    assert page.text_by_id.get("summary", "").count("PWNED") == 0


def test_drilldown_contributions_add_up_to_the_error(written: Any) -> None:
    report, _ = written
    doc = report.to_dict()
    for m in doc["models"]:
        rows = op_rows(m)
        if m["status"] != "ok":
            continue
        assert rows[-1].family == UNATTRIBUTED
        assert sum(r.contribution_pct for r in rows) == pytest.approx(m["error_pct"], abs=1e-6)
        assert sum(r.predicted_ms for r in rows) == pytest.approx(m["predicted_ms"])
        assert {r.source for r in rows[:-1]} <= {"table", "fallback", "fused"}
    wide = next(m for m in doc["models"] if m["name"] == "wide (fallback)")
    assert "fallback" in {r.source for r in op_rows(wide)}
    fams = family_rows(doc["models"])
    ok = [m for m in doc["models"] if m["status"] == "ok"]
    assert sum(f.mean_contribution_pct for f in fams) == pytest.approx(
        sum(m["error_pct"] for m in ok) / len(ok), abs=1e-6
    )
    assert sum(f.predicted_ms for f in fams) == pytest.approx(sum(m["predicted_ms"] for m in ok))


def test_without_plotly_the_page_is_the_static_one(written: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    report, paths = written
    for name in [n for n in sys.modules if n == "plotly" or n.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly raises ImportError
    text = report._html(paths)
    assert "Plotly" not in text and text.count("data:image/png;base64,") == 3
    assert "<pre>" in text and "within_10_pct" in text and text.rstrip().endswith("</html>")


def test_an_empty_report_renders() -> None:
    pytest.importorskip("plotly")
    from mmt_nas.table.table import LatencyTable

    text = render_html(Report([], LatencyTable(), {}).to_dict())
    page = _parse(text)
    assert "No model was both measured and predicted" in page.text_by_id["summary"]
    assert page.drilldowns == [] and text.rstrip().endswith("</html>")


# -- in a real browser ------------------------------------------------------------------------------------------

_COLLECTOR = """<script>(function () {
  var errors = [];
  function note(kind, text) {
    errors.push(kind + ": " + text);
    document.documentElement.setAttribute("data-test-errors", JSON.stringify(errors));
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { note("resource", t.src || t.href); }
    else { note("uncaught", (e.message || "") + " at " + (e.filename || "") + ":" + (e.lineno || "")); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { note("rejection", String(e.reason)); });
  var orig = console.error;
  console.error = function () {
    note("console.error", Array.prototype.map.call(arguments, String).join(" "));
    return orig.apply(console, arguments);
  };
  document.documentElement.setAttribute("data-test-errors", "[]");
})();</script>"""


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",  # run the page's timers (plotly's deferred drawing) before dumping
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_the_page_in_headless_chromium(written: Any, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip(
            f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH); install it with "
            "`apt-get install -y --no-install-recommends chromium` (.ci/run does)"
        )
    report, paths = written
    text = paths["html"].read_text(encoding="utf-8")
    assert text.count("<head>") == 1
    probe = tmp_path / "report.html"
    probe.write_text(text.replace("<head>", "<head>" + _COLLECTOR, 1), encoding="utf-8")
    url = probe.as_uri()

    done = _run_chromium(binary, tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-3000:]
    dom = done.stdout
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    found = re.search(r'data-test-errors="([^"]*)"', dom)
    assert found is not None, "the collector did not run"
    errors = json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))
    assert errors == [], errors
    # after the scripts ran: the summary, every plot drawn (plotly's SVG), one drill-down per model
    page = _parse(dom)
    assert "within ±10%" in page.text_by_id["summary"] and "Noise floor" in page.text_by_id["summary"]
    for plot in ("plot-pred-vs-measured", "plot-error-distribution", "plot-families"):
        assert re.search(rf'<div id="{plot}" class="[^"]*js-plotly-plot', dom), plot
    assert dom.count('class="main-svg"') >= 6  # plotly draws two SVG layers per plot
    assert page.drilldowns == [f"model-{i}" for i in range(len(report.results))]
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S)[1]  # type: ignore[index]

    shot = tmp_path / "report.png"
    done = _run_chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1280,1500", "--hide-scrollbars", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    try:
        shutil.copyfile(shot, SCREENSHOT_COPY)
        where = f"{shot} (and {SCREENSHOT_COPY})"
    except OSError:
        where = str(shot)
    print(f"screenshot of the report: {where}")  # shown with pytest -s or -rP
