"""A self-contained HTML page for a benchmark (inline CSS, inline SVG chart): shown as a ZenML
dashboard visualization and written next to report.json. Every number names its backend."""

from __future__ import annotations

import html
import io
from typing import Sequence

from foundry.bench.metrics import BenchmarkReport, ComparisonRow, LatencyStats, LevelSummary

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1d2330}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d5dd;padding:4px 8px;text-align:right}
th{background:#f2f4f7}td.l,th.l{text-align:left}
.note{color:#555;font-size:12px}.bad{color:#b42318;font-weight:600}
"""

_METRICS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E latency", "e2e"), ("ITL (pooled gaps)", "itl"))
_STAT_FIELDS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "mean_ms")


def _esc(value: object) -> str:
    return html.escape(str(value))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left_columns: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left_columns else ""}">{_esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left_columns else ""}">{_esc(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stat(stats: LatencyStats | None, field: str) -> float | None:
    return getattr(stats, field) if stats is not None else None


def _levels_table(report: BenchmarkReport) -> str:
    def slo_cell(lv):
        if lv.meets_slo_p99 is None:
            return "–"
        return "yes" if lv.meets_slo_p99 else "NO"

    rows = [
        [
            lv.label,
            lv.num_requests,
            lv.completed,
            f"{lv.failed} ({lv.failure_rate:.1%})",
            _fmt(lv.duration_s, 3),
            lv.total_output_tokens,
            _fmt(lv.output_token_throughput_tok_s, 1),
            _fmt(lv.request_throughput_req_s, 3),
            _fmt(lv.goodput_req_s, 3),
            "–" if lv.slo_attainment is None else f"{lv.slo_attainment:.1%}",
            slo_cell(lv),
            "–" if lv.mbu is None else f"{lv.mbu:.1%}",
            _fmt(lv.achieved_bandwidth_gb_s, 1),
            f"{lv.warmup_requests} ({lv.warmup_failed} failed)",
        ]
        for lv in report.levels
    ]
    headers = [
        "load level",
        "requests",
        "completed",
        "failed",
        "duration s",
        "output tokens",
        "output tok/s",
        "requests/s",
        "goodput req/s",
        "SLO attainment",
        "p99 within SLO",
        "MBU",
        "achieved GB/s",
        "warmup",
    ]
    errors = [f"<li class='bad'>{_esc(lv.label)}: {_esc(e)}</li>" for lv in report.levels for e in lv.errors]
    return _table(headers, rows) + (f"<ul>{''.join(errors)}</ul>" if errors else "")


def _percentile_table(level: LevelSummary) -> str:
    rows = []
    for label, attr in _METRICS:
        stats: LatencyStats | None = getattr(level, attr)
        rows.append([label, stats.count if stats else 0, *(_fmt(_stat(stats, f)) for f in _STAT_FIELDS)])
    return _table(["metric (ms)", "samples", "p50", "p90", "p95", "p99", "min", "max", "mean"], rows)


def _report_section(report: BenchmarkReport, role: str) -> str:
    parts = [
        f"<h2>{_esc(role)}: backend <code>{_esc(report.backend)}</code>, model {_esc(report.model)}"
        + (f", batching <code>{_esc(report.batching)}</code>" if report.batching else "")
        + "</h2>",
        _levels_table(report),
    ]
    for level in report.levels:
        parts.append(f"<h3>{_esc(report.backend)} — {_esc(level.label)}</h3>")
        parts.append(_percentile_table(level))
    return "".join(parts)


def _comparison_section(rows: Sequence[ComparisonRow]) -> str:
    table_rows = [
        [
            r.concurrency if r.request_rate is None else f"{r.request_rate:g}/s",
            _fmt(r.engine_output_tok_s, 1),
            _fmt(r.baseline_output_tok_s, 1),
            _fmt(r.speedup_output_tok_s),
            _fmt(r.ttft_p50_ratio),
            _fmt(r.ttft_p99_ratio),
            _fmt(r.tpot_p50_ratio),
            _fmt(r.tpot_p99_ratio),
        ]
        for r in rows
    ]
    engine, baseline = (rows[0].engine_backend, rows[0].baseline_backend) if rows else ("engine", "baseline")
    headers = [
        "load level",
        f"{engine} tok/s",
        f"{baseline} tok/s",
        "speedup tok/s",
        "TTFT p50 ratio",
        "TTFT p99 ratio",
        "TPOT p50 ratio",
        "TPOT p99 ratio",
    ]
    note = (
        f"<p class='note'>All ratios are {_esc(engine)} / {_esc(baseline)}: speedup &gt; 1 means "
        f"{_esc(engine)} produces more output tokens per second; latency ratios &lt; 1 mean "
        f"{_esc(engine)} is faster.</p>"
    )
    if rows and rows[0].baseline_batching:
        note += f"<p class='note'>The baseline served concurrent requests <code>{_esc(rows[0].baseline_batching)}</code>.</p>"
    return f"<h2>Comparison ({_esc(engine)} vs {_esc(baseline)})</h2>{note}{_table(headers, table_rows)}"


def _load_axis(report: BenchmarkReport) -> tuple[list[float], str]:
    if report.levels and report.levels[0].load_mode == "request_rate":
        return [lv.request_rate for lv in report.levels], "request rate (req/s, Poisson)"
    return [lv.concurrency for lv in report.levels], "concurrency"


def _plot_series(axes, report: BenchmarkReport, linestyle: str) -> None:
    levels = report.levels
    x, _ = _load_axis(report)
    axes[0].plot(x, [lv.output_token_throughput_tok_s for lv in levels], linestyle, marker="o", label=report.backend)
    for ax, attr in ((axes[1], "ttft"), (axes[2], "tpot")):
        for field, marker in (("p50_ms", "o"), ("p99_ms", "^")):
            ax.plot(
                x,
                [_stat(getattr(lv, attr), field) or float("nan") for lv in levels],
                linestyle,
                marker=marker,
                label=f"{report.backend} {field[:3]}",
            )
    # the latency-throughput curve: each load level is one point
    axes[3].plot(
        [lv.output_token_throughput_tok_s for lv in levels],
        [_stat(lv.tpot, "p99_ms") or float("nan") for lv in levels],
        linestyle,
        marker="^",
        label=f"{report.backend} TPOT p99",
    )


def render_chart_svg(report: BenchmarkReport, baseline: BenchmarkReport | None = None) -> str:
    """Output tok/s, TTFT and TPOT p50/p99 vs load, and the latency–throughput curve (TPOT p99 vs
    output tok/s); engine solid, baseline dashed; SLO limits as red horizontal lines."""
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the main thread

    figure = Figure(figsize=(16, 3.6), layout="constrained")
    axes = figure.subplots(1, 4)
    _plot_series(axes, report, "-")
    if baseline is not None:
        _plot_series(axes, baseline, "--")
    _, x_label = _load_axis(report)
    slo = report.slo
    limits = {1: slo.ttft_ms if slo else None, 2: slo.tpot_ms if slo else None, 3: slo.tpot_ms if slo else None}
    titles = ("Output token throughput", "TTFT", "TPOT", "Latency–throughput curve")
    for i, (ax, title, unit) in enumerate(zip(axes, titles, ("tok/s", "ms", "ms", "TPOT p99 ms"))):
        ax.set_title(title)
        ax.set_xlabel("output tok/s" if i == 3 else x_label)
        ax.set_ylabel(unit)
        if limits.get(i):
            ax.axhline(limits[i], color="#b42318", linewidth=1, label=f"SLO {limits[i]:g} ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]  # drop the XML prolog so it inlines in HTML


def _slo_section(reports: Sequence[BenchmarkReport]) -> str:
    rows = []
    for r in reports:
        if r.slo is None:
            continue
        best = (
            f"{r.max_output_tok_s_within_slo:.1f} tok/s at {r.best_level_within_slo}"
            if r.max_output_tok_s_within_slo is not None
            else "no level meets the SLO"
        )
        rows.append(
            [r.backend, ", ".join(f"{k} ≤ {v:g}" for k, v in r.slo.model_dump(exclude_none=True).items()), best]
        )
    if not rows:
        return "<p class='note'>No SLO configured: goodput and max throughput within SLO are not computed.</p>"
    return (
        "<h2>SLO (p99, MLPerf rule) and goodput</h2><p class='note'>Goodput counts completed requests "
        "meeting every limit per request (vLLM); a level is within the SLO when its p99s are under the "
        "limits and nothing failed.</p>" + _table(["backend", "SLO", "max throughput within SLO"], rows, 3)
    )


def _telemetry_section(reports: Sequence[BenchmarkReport]) -> str:
    rows = []
    fields = (
        "gpu_name",
        "compute_capability",
        "memory_total_mib",
        "memory_used_peak_mib",
        "gpu_utilization_mean_pct",
        "gpu_utilization_max_pct",
        "power_mean_w",
        "power_max_w",
        "sm_clock_max_mhz",
        "memory_clock_max_mhz",
        "peak_bandwidth_gb_s",
        "samples",
    )
    for r in reports:
        t = r.telemetry
        if t is None:
            continue
        if t.get("status") != "ok":
            rows.append([r.backend, f"absent: {t.get('reason')}"] + [""] * (len(fields) - 1))
            continue
        rows.append([r.backend] + [_fmt(t[f], 1) if isinstance(t.get(f), float) else t.get(f) for f in fields])
    if not rows:
        return ""
    return "<h2>GPU telemetry (NVML)</h2>" + _table(["backend", *fields], rows, left_columns=2)


def _workload_section(report: BenchmarkReport) -> str:
    w = report.workload
    rows = [
        ["source", w.source],
        ["seed", w.seed],
        ["timed requests per level", w.num_requests],
        ["warmup requests per level (excluded)", w.warmup_requests],
        ["input length (tokens)", f"{w.input_len_min}–{w.input_len_max}"],
        ["output length (tokens, exact)", f"{w.output_len_min}–{w.output_len_max}"],
        ["length distributions (input / output)", f"{w.input_len_distribution} / {w.output_len_distribution}"],
        ["vocab size", w.vocab_size],
        ["workload hash", w.workload_hash],
    ]
    return "<h2>Workload</h2>" + _table(["", "value"], rows, left_columns=2)


def _machine_section(reports: Sequence[BenchmarkReport]) -> str:
    rows = [
        [
            r.backend,
            r.machine.device_name,
            r.machine.cpu_count,
            r.machine.torch_threads,
            r.machine.torch_version,
            r.machine.platform,
            r.created_at,
        ]
        for r in reports
    ]
    return "<h2>Machine</h2>" + _table(
        ["backend", "device", "CPUs", "torch threads", "torch", "platform", "run at (UTC)"], rows, left_columns=6
    )


def render_html(
    report: BenchmarkReport,
    baseline: BenchmarkReport | None = None,
    comparison: Sequence[ComparisonRow] | None = None,
) -> str:
    reports = [report] + ([baseline] if baseline is not None else [])
    title = f"Benchmark: {report.model} on {report.backend}" + (f" vs {baseline.backend}" if baseline else "")
    sections = [
        f"<h1>{_esc(title)}</h1>",
        "<p class='note'>TTFT is measured from the scheduled send time (client queueing counts); "
        "TPOT = (e2e − TTFT)/(output tokens − 1), 1-token outputs excluded; ITL pools every gap between "
        "consecutive tokens. Percentiles: numpy linear interpolation. Output tok/s = Σ output tokens / "
        "(last token − first scheduled send). Load modes: concurrency N = N clients with one request "
        "in flight each; request rate λ = seeded Poisson arrivals, TTFT from the planned arrival. "
        f"Target: {_esc(report.target or 'in-process')}.</p>",
        render_chart_svg(report, baseline),
        _slo_section(reports),
        _comparison_section(comparison) if comparison else "",
        _report_section(report, "Engine"),
        _report_section(baseline, "Baseline") if baseline is not None else "",
        _workload_section(report),
        _telemetry_section(reports),
        _machine_section(reports),
    ]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
