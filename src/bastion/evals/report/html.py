"""A self-contained HTML report: inline CSS and SVG, no scripts, no external resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#1d2330;padding:0 1rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde1e8;padding-bottom:.3rem}
.muted{color:#667085}.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #dde1e8;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.p100{background:#dafbe1}td.pmid{background:#fff8c5}td.p0{background:#ffebe9}
.flaky{color:#9a6700;font-weight:600}details summary{cursor:pointer}pre{white-space:pre-wrap;margin:.2rem 0;font-size:12px}
.pass{color:#1a7f37}.fail{color:#cf222e}.error{color:#9a6700}
"""

TEMPLATE = _env.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Eval {{ doc.suite.name }} · {{ doc.run_id }}</title>
<style>{{ css }}</style></head><body>
<h1>Eval report: {{ doc.suite.name }}
 <span class="badge {{ 'ok' if doc.gate.passed else 'bad' }}">gate {{ 'passed' if doc.gate.passed else 'FAILED' }}</span></h1>
{% if doc.suite.description %}<p>{{ doc.suite.description }}</p>{% endif %}
<p class="muted">run {{ doc.run_id }} · {{ started }} · {{ doc.duration_s }} s · {{ doc.cases|length }} cases ×
 {{ doc.samples }} samples × {{ doc.variants|length }} variants · gateway {{ doc.gateway or '-' }} · baseline <b>{{ doc.baseline }}</b></p>

<h2>Gate</h2>
<table><tr><th>check</th><th>variant</th><th>result</th><th>detail</th></tr>
{% for c in doc.gate.checks %}<tr><td>{{ c.name }}</td><td>{{ c.variant }}</td>
<td class="{{ 'pass' if c.passed else 'fail' }}">{{ 'pass' if c.passed else 'FAIL' }}</td><td>{{ c.detail }}</td></tr>
{% else %}<tr><td colspan="4" class="muted">no gate checks configured</td></tr>{% endfor %}</table>

<h2>Pass rate per variant</h2>
{{ chart|safe }}
<table><tr><th>variant</th><th>pass rate</th><th>{{ conf }}% CI (Wilson)</th><th title="samples / design effect: the samples of one case are correlated">effective n</th><th>pass / fail / error</th><th>flaky cases</th>
{% for k in ks %}<th>pass@{{ k }}</th>{% endfor %}{% for k in ks %}<th>pass^{{ k }}</th>{% endfor %}</tr>
{% for v in doc.variants %}<tr><td>{{ v.name }}</td><td class="num">{{ pct(v.pass_rate) }}</td>
<td class="num">{{ pct(v.ci[0]) }} – {{ pct(v.ci[1]) }}</td><td class="num">{{ v.ci_effective_n if v.ci_effective_n is defined else v.total }}</td><td class="num">{{ v.passes }} / {{ v.fails }} / {{ v.errors }}</td>
<td class="num">{{ v.flaky_cases|length }}</td>
{% for k in ks %}<td class="num">{{ pct(v.pass_at_k.get(k|string)) }}</td>{% endfor %}
{% for k in ks %}<td class="num">{{ pct(v.pass_hat_k.get(k|string)) }}</td>{% endfor %}</tr>{% endfor %}</table>

<h2>Quality figures</h2>
<table><tr><th>variant</th><th>task accuracy</th><th>format compliance</th><th>refusal rate</th><th>hallucination rate</th>
<th>latency p50 / p95 (ms)</th><th>cost per case</th><th>total cost</th></tr>
{% for v in doc.variants %}{% set q = v.quality %}<tr><td>{{ v.name }}</td>
<td class="num" title="{{ q.task_accuracy.method }}">{{ pct(q.task_accuracy.value) }}</td>
<td class="num">{{ pct(q.format_compliance.value) }}</td>
<td class="num" title="{{ q.refusal_rate.note or '' }}">{{ pct(q.refusal_rate.value) }}</td>
<td class="num" title="{{ q.hallucination_rate.method }}">{{ pct(q.hallucination_rate.value) }}</td>
<td class="num">{{ ms(q.latency_p50_ms) }} / {{ ms(q.latency_p95_ms) }}</td>
<td class="num">{{ usd(q.cost_per_case_usd) }}</td><td class="num">{{ usd(q.cost_total_usd) }}</td></tr>{% endfor %}</table>

<h2>Comparisons</h2>
<table><tr><th>candidate</th><th>against</th><th>cases</th><th>mean difference</th><th>95% CI</th><th>p (sign-flip)</th><th>verdict</th></tr>
{% for c in doc.comparisons %}<tr><td>{{ c.candidate }}</td><td>{{ c.baseline }}{{ ' (run)' if c.against == 'baseline-run' }}</td>
<td class="num">{{ c.n_pairs }} ({{ c.nonzero_pairs }} differ)</td><td class="num">{{ '%+.3f'|format(c.mean_diff) }}</td>
<td class="num">{{ '%+.3f'|format(c.ci[0]) }} … {{ '%+.3f'|format(c.ci[1]) }}</td><td class="num">{{ '%.3g'|format(c.p_value) }} ({{ c.method }})</td>
<td class="{{ 'fail' if c.regression else ('pass' if c.significant and c.mean_diff > 0 else '') }}">
{{ 'regression' if c.regression else ('significant improvement' if c.significant and c.mean_diff > 0 else
   ('significant drop within tolerance' if c.significant else 'no significant difference')) }}</td></tr>
{% else %}<tr><td colspan="7" class="muted">one variant, no baseline run: nothing to compare</td></tr>{% endfor %}</table>

<h2>Assertion breakdown</h2>
<table><tr><th>variant</th><th>assertion</th><th>pass</th><th>fail</th><th>error</th></tr>
{% for v in doc.variants %}{% for t, n in v.assertions|dictsort %}<tr><td>{{ v.name }}</td><td>{{ t }}</td>
<td class="num">{{ n.pass }}</td><td class="num">{{ n.fail }}</td><td class="num">{{ n.error }}</td></tr>{% endfor %}{% endfor %}</table>

<h2>Cases</h2>
<table><tr><th>case</th>{% for v in doc.variants %}<th>{{ v.name }}</th>{% endfor %}</tr>
{% for c in doc.cases %}<tr><td>{{ c.id }}<div class="muted">{{ c.where }}</div></td>
{% for v in doc.variants %}{% set r = c.variants[v.name] %}
<td class="{{ 'p100' if r.pass_rate == 1 else ('p0' if r.pass_rate == 0 else 'pmid') }}">
<b>{{ pct(r.pass_rate) }}</b> ({{ r.passes }}/{{ r.n }}){% if r.flaky %} <span class="flaky" title="flaky: passed some samples, failed others">⚑ flaky</span>{% endif %}
{% if r.errors %} <span class="error">{{ r.errors }} err</span>{% endif %}
<details><summary>samples</summary>{% for s in r.samples %}<div><span class="{{ s.outcome }}">{{ s.outcome }}</span>
{% if s.request_id %}<span class="muted">{{ s.request_id }}</span>{% endif %}
{% if s.error %}<pre>{{ s.error }}</pre>{% endif %}
{% for chk in s.checks if chk.outcome != 'pass' %}<pre>{{ chk.type }}: {{ chk.message }}</pre>{% endfor %}
<pre class="muted">{{ s.output[:400] }}</pre></div>{% endfor %}</details></td>{% endfor %}</tr>{% endfor %}</table>
<p class="muted">Generated by bastion eval. Pass rates count errors as non-passes.</p>
</body></html>
""")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _chart(doc: dict[str, Any]) -> str:
    """Horizontal bars (pass rate) with whiskers (the Wilson interval), one row per variant."""
    from html import escape

    rows = doc["variants"]
    label_w, bar_w, row_h = 180, 520, 30
    h = row_h * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 70}" height="{h}" role="img" '
             'aria-label="pass rate per variant with confidence intervals" font-size="12" font-family="sans-serif">']
    for t in (0, 0.25, 0.5, 0.75, 1):
        x = label_w + t * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{h - 20}" stroke="#e5e7eb"/>'
                     f'<text x="{x:.1f}" y="{h - 6}" text-anchor="middle" fill="#667085">{int(t * 100)}%</text>')
    for i, v in enumerate(rows):
        y = i * row_h + 6
        colour = "#1a7f37" if v["name"] == doc["baseline"] else "#0969da"
        lo, hi = (label_w + c * bar_w for c in v["ci"])
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(v["name"])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{v["pass_rate"] * bar_w:.1f}" height="18" fill="{colour}" opacity="0.8"/>'
            f'<line x1="{lo:.1f}" y1="{y + 9}" x2="{hi:.1f}" y2="{y + 9}" stroke="#111" stroke-width="1.5"/>'
            f'<line x1="{lo:.1f}" y1="{y + 3}" x2="{lo:.1f}" y2="{y + 15}" stroke="#111" stroke-width="1.5"/>'
            f'<line x1="{hi:.1f}" y1="{y + 3}" x2="{hi:.1f}" y2="{y + 15}" stroke="#111" stroke-width="1.5"/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{_pct(v["pass_rate"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(doc: dict[str, Any]) -> str:
    from ..results import pass_ks

    started = datetime.fromtimestamp(doc["started_at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    conf = round(100 * doc["variants"][0]["confidence"]) if doc["variants"] else 95
    return TEMPLATE.render(
        doc=doc, css=CSS, chart=_chart(doc), started=started, conf=conf, ks=pass_ks(doc["samples"]), pct=_pct,
        ms=lambda x: "–" if x is None else f"{x:.0f}", usd=lambda x: "–" if x is None else f"${x:.6f}")
