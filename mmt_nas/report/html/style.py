"""The report page's style sheet and script (sorting tables, opening drill-downs)."""

_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--alt:#f8f9fb;--good:#1a7f37;--fair:#9a6700;
--bad:#cf222e;--over:#e8590c;--under:#1971c2}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header{padding:1.2em 2em .6em;border-bottom:1px solid var(--line);background:var(--alt)}
header h1{margin:0 0 .2em;font-size:1.6em}
nav a{margin-right:1em;color:#0969da;text-decoration:none}
main{padding:0 2em 3em;max-width:1400px}
h2{margin:1.6em 0 .5em;font-size:1.25em;border-bottom:1px solid var(--line);padding-bottom:.2em}
.meta,.muted,.hint{color:var(--muted)}
.hint{font-size:.92em}
ul.summary{font-size:1.05em;padding-left:1.2em}
ul.summary li{margin:.35em 0}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em;min-width:40%}
th,td{border-bottom:1px solid var(--line);padding:.3em .5em;text-align:left;vertical-align:top}
th{background:var(--alt);cursor:pointer;user-select:none;vertical-align:bottom}
th::after{content:" \\2195";color:#b0b7c3;font-size:.85em}
th[aria-sort=ascending]::after{content:" \\25B2";color:var(--fg)}
th[aria-sort=descending]::after{content:" \\25BC";color:var(--fg)}
tbody tr:nth-child(even){background:var(--alt)}
tfoot td{font-weight:600;border-top:2px solid var(--line)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.note{max-width:16em;color:var(--bad);font-size:.88em}
td.op{min-width:18em;max-width:34em}
code{font-size:.85em;color:#57606a;word-break:break-all}
.good{color:var(--good)}.fair{color:var(--fair)}.bad{color:var(--bad)}
td.contrib .track{display:inline-block;width:4.5em;height:.75em;margin-left:.4em;vertical-align:middle}
td.contrib .bar{display:block;height:100%;opacity:.55}
td.contrib .bar.over{background:var(--over)}td.contrib .bar.under{background:var(--under)}
#models-table td:first-child{max-width:18em;overflow-wrap:anywhere}
.src-table{color:var(--good)}.src-fallback{color:var(--over);font-weight:600}.src-fused{color:var(--muted)}
details.drilldown{border:1px solid var(--line);border-radius:6px;margin:.4em 0;padding:.3em .8em}
details.drilldown[open]{background:#fcfcfd}
details.drilldown summary{cursor:pointer}
.model-name{font-weight:600}
.error-text{color:var(--bad);white-space:pre-wrap}
#static-plots{margin:2em 0}
.pngs img{max-width:32%;margin:.5%}
"""

_JS = """
(function () {
  "use strict";
  function value(td) {
    if (!td) { return null; }
    var v = td.getAttribute("data-v");
    if (v === null) { return td.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.sort(function (a, b) {
      var x = value(a.cells[col]), y = value(b.cells[col]);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }  // empty cells last
      if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
  window.mmtOpenDrill = function (i) {
    var d = document.getElementById("model-" + i);
    if (d) { d.open = true; d.scrollIntoView({behavior: "smooth", block: "start"}); }
  };
  function openFromHash() {
    var d = location.hash.length > 1 ? document.getElementById(location.hash.slice(1)) : null;
    if (d && d.tagName === "DETAILS") { d.open = true; }
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
  document.querySelectorAll("button[data-drill]").forEach(function (b) {
    b.addEventListener("click", function () {
      var open = b.getAttribute("data-drill") === "open";
      document.querySelectorAll("details.drilldown").forEach(function (d) { d.open = open; });
    });
  });
})();
"""
