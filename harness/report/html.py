"""``report.html``: the run in one self-contained file, readable offline in any browser.

Inline CSS and JavaScript, the PNG plots inlined as base64, no request to any
network. The claims table sorts by any column (click its header; ``#sort=estimate``
or ``#sort=-estimate`` in the address sorts on load); each claim cell's fields and
samples are folded in a ``<details>``, opened by its link in the table (or
``#cell-<claim>-<protocol>`` in the address). The text is the same as ``summary.md``'s
(:mod:`harness.report.explain`, :mod:`harness.report.facts`); its small markdown
(paragraphs, lists, code, bold, italics) is converted here.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from harness.report.brief import short_reason
from harness.report.explain import how_to_read
from harness.report.facts import claim_facts, sample_grid
from harness.report.schema import ClaimRow
from harness.report.writer import Run

__all__ = ["report_html", "markdown_to_html", "cell_id"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;
 padding:0 1em;color:#1d2430}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #dde;padding-bottom:.2em}
code{background:#f2f3f7;padding:0 .25em;border-radius:3px;font-size:.92em}
.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em .8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d6d9e0;padding:.25em .5em;vertical-align:top;text-align:left}
th{background:#eef0f5;position:sticky;top:0}
#claims th{cursor:pointer;user-select:none;white-space:nowrap}
#claims th[aria-sort=ascending]::after{content:" \\25B2"}#claims th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{font-weight:600;border-radius:3px;padding:0 .35em;color:#fff;white-space:nowrap}
.v-supported{background:#2e8540}.v-refuted{background:#c62828}.v-inconclusive{background:#d9822b}
.v-invalid{background:#7a7f87}.v-na{background:#444}
details{border:1px solid #d6d9e0;border-radius:4px;margin:.35em 0;padding:.2em .7em}
details[open]{background:#fbfbfd}summary{cursor:pointer;padding:.2em 0}
.samples td{max-width:28em;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em}
img{max-width:100%;border:1px solid #eee}blockquote{margin:.5em 0;color:#444;border-left:3px solid #ccd;
 padding-left:.8em}.muted{color:#667}button{margin-right:.5em}
"""

_JS = """
(function(){
 var table=document.getElementById('claims'); if(!table) return;
 var heads=table.tHead.rows[0].cells, body=table.tBodies[0];
 function key(cell,num){var v=cell.getAttribute('data-value'); if(v===null) v=cell.textContent;
  if(!num) return v.toLowerCase(); var x=parseFloat(v); return isNaN(x)?null:x;}
 function sortBy(i,desc){
  var num=heads[i].getAttribute('data-type')==='num', rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=key(a.cells[i],num), y=key(b.cells[i],num);
   if(x===y) return 0; if(x===null) return 1; if(y===null) return -1;
   return (x<y?-1:1)*(desc?-1:1);});
  rows.forEach(function(r){body.appendChild(r);});
  for(var j=0;j<heads.length;j++) heads[j].removeAttribute('aria-sort');
  heads[i].setAttribute('aria-sort',desc?'descending':'ascending');
 }
 for(var i=0;i<heads.length;i++)(function(i){heads[i].addEventListener('click',function(){
  sortBy(i,heads[i].getAttribute('aria-sort')==='ascending');});})(i);
 var m=/sort=(-?)([\\w ]+)/.exec(decodeURIComponent(location.hash));
 if(m) for(var k=0;k<heads.length;k++) if(heads[k].getAttribute('data-key')===m[2]) sortBy(k,m[1]==='-');
 document.body.setAttribute('data-sorted', m ? m[2] : '');
 var all=document.querySelectorAll('details.cell');
 function fold(open){for(var n=0;n<all.length;n++) all[n].open=open;}
 var e=document.getElementById('expand'), c=document.getElementById('collapse');
 if(e) e.onclick=function(){fold(true);}; if(c) c.onclick=function(){fold(false);};
 function openHash(){var d=document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if(d&&d.tagName==='DETAILS') d.open=true;}
 window.addEventListener('hashchange',openHash); openHash();
})();
"""

#: (header, key for #sort=, numeric) of the claims table's columns.
_COLUMNS = (("claim", "claim", False), ("protocol", "protocol", False), ("estimate", "estimate", True),
            ("interval", "low", True), ("pairs", "pairs", True), ("seeds", "seeds", True),
            ("verdict", "verdict", False), ("expected", "expected", False), ("why", "why", False))


def _inline(text: str) -> str:
    """Escaped text with the markdown the report uses: `code`, **bold**, *italics*."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)


def markdown_to_html(lines: Iterable[str]) -> str:
    """The small markdown of :mod:`harness.report.explain`: headings, paragraphs, lists, quotes."""
    out: list[str] = []
    in_list = False
    for line in lines:
        if not line.startswith("- ") and in_list:
            out.append("</ul>")
            in_list = False
        if not line.strip():
            continue
        if line.startswith("## "):
            out.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.startswith("> "):
            out.append(f'<p class="warn">{_inline(line[2:])}</p>')
        else:
            out.append(f"<p>{_inline(line)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def cell_id(row: ClaimRow) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{row.claim}-{row.protocol}")


def _num(value: float) -> str:
    return "" if not math.isfinite(value) else repr(float(value))


def _fmt(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def _verdict(verdict: str) -> str:
    cls = verdict if verdict in ("supported", "refuted", "inconclusive", "invalid") else "na"
    return f'<span class="v v-{cls}">{html.escape(verdict or "n/a")}</span>'


def _claims_table(claims: Sequence[ClaimRow]) -> str:
    heads = "".join(f'<th data-key="{k}" data-type="{"num" if n else "text"}">{h}</th>' for h, k, n in _COLUMNS)
    rows = []
    for r in claims:
        interval = "n/a" if not (math.isfinite(r.ci_low) or math.isfinite(r.ci_high)) else \
            f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        cells = [
            f'<td><a href="#{cell_id(r)}">{html.escape(r.claim)}</a></td>',
            f"<td>{html.escape(r.protocol)}</td>",
            f'<td class="num" data-value="{_num(r.estimate)}">{_fmt(r.estimate)}</td>',
            f'<td class="num" data-value="{_num(r.ci_low)}">{interval}</td>',
            f'<td class="num">{r.n_pairs}</td>',
            f'<td class="num" data-value="{r.n_seeds or ""}">{r.n_seeds or "-"}</td>',
            f'<td data-value="{html.escape(r.verdict)}">{_verdict(r.verdict)}</td>',
            f"<td>{html.escape(r.expected or '-')}</td>",
            f"<td>{html.escape(short_reason(r))}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table id="claims"><thead><tr>{heads}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody></table>")


def _cell_details(row: ClaimRow, run: Run) -> str:
    parts = [f'<details class="cell" id="{cell_id(row)}"><summary><b>{html.escape(row.claim)}</b> '
             f"[{html.escape(row.protocol)}] {_verdict(row.verdict)} "
             f'<span class="muted">{html.escape(short_reason(row))}</span></summary>']
    if row.statement:
        parts.append(f"<blockquote>{html.escape(' '.join(row.statement.split()))}</blockquote>")
    if row.source_file or row.source_quote:
        parts.append(f"<p>Source: <code>{html.escape(row.source_file or '?')}</code>: "
                     f"“{html.escape(row.source_quote)}”</p>")
    items = []
    for fact in claim_facts(row):
        sub = "".join(f"<li>{html.escape(i)}</li>" for i in fact.items)
        items.append(f"<li><b>{html.escape(fact.label)}</b>: {_inline(fact.text)}"
                     + (f"<ul>{sub}</ul>" if sub else "") + "</li>")
    parts.append(f"<ul>{''.join(items)}</ul>")
    grid = sample_grid(row, run.results)
    if grid.rows:
        head = "".join(f"<th>{html.escape(a)}</th>" for a in ("pair · seed", *grid.arms))
        body = "".join("<tr>" + f"<td>{html.escape(f'{pair} · seed {seed}')}</td>"
                       + "".join(f"<td>{html.escape(t)}</td>" for t in texts) + "</tr>"
                       for pair, seed, texts in grid.rows)
        parts.append(f'<table class="samples"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    parts.append("</details>")
    return "\n".join(parts)


def _provenance(provenance: dict[str, Any]) -> str:
    rows = []
    for key, value in provenance.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>")
    return (f"<details><summary>Provenance ({len(rows)} fields)</summary><table>{''.join(rows)}</table>"
            "</details>")


def report_html(run: Run, plots: Sequence[str] = ()) -> str:
    """The text of ``report.html`` for ``run``; ``plots`` are PNG files in its folder, inlined."""
    from harness.report.render import status_lines

    model = run.provenance.get("model")
    title = f"Claims report{f': {model}' if model else ''}"
    body = [f"<h1>{html.escape(title)}</h1>", markdown_to_html(status_lines(run)),
            "<details><summary><b>How to read this report</b>: efficiency, metrics, protocols, verdicts, "
            "intervals, guards</summary>" + markdown_to_html(how_to_read(run.claims, run.provenance)[2:])
            + "</details>"]
    body += ["<h2>Claims</h2>", _claims_table(run.claims) if run.claims else "<p>No claim finished.</p>",
             '<p class="muted">Click a column to sort; a claim\'s name opens its details below.</p>']
    images = []
    for name in plots:
        data = base64.b64encode((run.directory / name).read_bytes()).decode("ascii")
        images.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
    if images:
        body += ["<h2>Plots</h2>", *images]
    if run.claims:
        body += ["<h2>Claims in detail</h2>",
                 '<p><button id="expand">expand all</button><button id="collapse">collapse all</button></p>',
                 *(_cell_details(r, run) for r in run.claims)]
    body.append(_provenance(dict(run.provenance)))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n</body></html>\n")
