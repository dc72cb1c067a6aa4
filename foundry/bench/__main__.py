"""`python -m foundry.bench`: benchmark an engine (and optionally the HF baseline) on one seeded
synthetic workload; writes report.json, requests.csv, report.html (and baseline_* / comparison.json).

Only torch, transformers, pydantic, numpy, pandas, matplotlib are needed (runs on the GPU machine).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Sequence

import torch

from foundry.bench.metrics import (
    BenchmarkReport, ComparisonRow, compare_reports, save_comparison_json, save_records_csv, save_report_json,
)
from foundry.bench.report import render_html
from foundry.bench.runner import run_benchmark
from foundry.bench.workload import synthetic_workload_with_description
from foundry.errors import FoundryError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m foundry.bench", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--engine-dir", type=Path, help="built reference engine directory")
    target.add_argument("--hf-dir", type=Path, help="HF model directory, benchmarked with transformers")
    parser.add_argument("--baseline-hf-dir", type=Path, help="also run the same workload on HF transformers")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--hf-dtype", choices=sorted(_DTYPES), default="float32", help="dtype of HF models")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-requests", type=int, default=8, help="timed requests per concurrency level")
    parser.add_argument("--warmup-requests", type=int, default=1, help="untimed requests before each level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-len", type=int, nargs=2, default=[32, 64], metavar=("MIN", "MAX"))
    parser.add_argument("--output-len", type=int, nargs=2, default=[16, 32], metavar=("MIN", "MAX"))
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser.parse_args(argv)


def load_reference_engine(engine_dir: Path, device: str):
    try:  # written separately; imported only when used
        from foundry.runtime.reference import ReferenceEngine
    except ImportError as error:
        raise FoundryError(f"--engine-dir needs foundry.runtime.reference, which cannot be imported: {error}") from error

    if "device" in inspect.signature(ReferenceEngine.load).parameters:
        return ReferenceEngine.load(engine_dir, device=device)
    if device != "cpu":
        raise FoundryError(f"ReferenceEngine.load does not accept a device; cannot run it on --device {device}")
    return ReferenceEngine.load(engine_dir)


def load_hf_engine(hf_dir: Path, device: str, dtype_name: str):
    from foundry.runtime.hf import HFEngine

    return HFEngine.load(hf_dir, dtype=_DTYPES[dtype_name], device=device)


def engine_vocab_size(engine) -> int:
    vocab_size = getattr(engine, "vocab_size", None) or getattr(getattr(engine, "config", None), "vocab_size", None)
    if not vocab_size:
        raise FoundryError(f"backend {engine.backend!r} exposes no vocab_size; cannot draw synthetic token ids")
    return int(vocab_size)


def format_summary(report: BenchmarkReport) -> str:
    header = f"{'backend':<16}{'conc':>5}{'ok/fail':>9}{'out tok/s':>11}{'TTFT p50':>10}{'TTFT p99':>10}{'TPOT p50':>10}{'TPOT p99':>10}"
    lines = [header]
    for lv in report.levels:
        def ms(stats, field):
            return f"{getattr(stats, field):.2f}" if stats else "–"
        lines.append(
            f"{report.backend:<16}{lv.concurrency:>5}{f'{lv.completed}/{lv.failed}':>9}"
            f"{lv.output_token_throughput_tok_s:>11.1f}{ms(lv.ttft, 'p50_ms'):>10}{ms(lv.ttft, 'p99_ms'):>10}"
            f"{ms(lv.tpot, 'p50_ms'):>10}{ms(lv.tpot, 'p99_ms'):>10}"
        )
    return "\n".join(lines)


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    lines = ["concurrency  speedup_output_tok_s  ttft_p50_ratio  tpot_p50_ratio   (engine / baseline)"]
    for r in rows:
        lines.append(f"{r.concurrency:>11}  {r.speedup_output_tok_s or float('nan'):>20.2f}"
                     f"  {r.ttft_p50_ratio or float('nan'):>14.2f}  {r.tpot_p50_ratio or float('nan'):>14.2f}")
    return "\n".join(lines)


def write_outputs(out: Path, report: BenchmarkReport, baseline: BenchmarkReport | None,
                  comparison: list[ComparisonRow] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_report_json(report, out / "report.json")
    save_records_csv(report.records, out / "requests.csv")
    if baseline is not None:
        save_report_json(baseline, out / "baseline_report.json")
        save_records_csv(baseline.records, out / "baseline_requests.csv")
    if comparison is not None:
        save_comparison_json(comparison, out / "comparison.json")
    (out / "report.html").write_text(render_html(report, baseline, comparison))


def run(args: argparse.Namespace) -> tuple[BenchmarkReport, BenchmarkReport | None, list[ComparisonRow] | None]:
    if args.engine_dir is not None:
        engine, model_name = load_reference_engine(args.engine_dir, args.device), args.engine_dir.name
    else:
        engine, model_name = load_hf_engine(args.hf_dir, args.device, args.hf_dtype), args.hf_dir.name
    vocab_size = engine_vocab_size(engine)
    requests, workload = synthetic_workload_with_description(
        args.seed, args.num_requests, args.warmup_requests, *args.input_len, *args.output_len,
        vocab_size=vocab_size, special_ids=getattr(engine, "special_token_ids", ()),
    )
    report = run_benchmark(engine, requests, args.concurrency, args.warmup_requests,
                           model=model_name, workload=workload)
    del engine  # free its memory before the baseline loads
    if args.baseline_hf_dir is None:
        return report, None, None
    baseline_engine = load_hf_engine(args.baseline_hf_dir, args.device, args.hf_dtype)
    if engine_vocab_size(baseline_engine) != vocab_size:
        raise FoundryError(f"baseline vocab_size {engine_vocab_size(baseline_engine)} != engine vocab_size "
                           f"{vocab_size}: the same token ids would mean different prompts")
    baseline = run_benchmark(baseline_engine, requests, args.concurrency, args.warmup_requests,
                             model=model_name, workload=workload)
    return report, baseline, compare_reports(report, baseline)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report, baseline, comparison = run(args)
        write_outputs(args.out, report, baseline, comparison)
    except FoundryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(report))
    if baseline is not None:
        print(format_summary(baseline).split("\n", 1)[1])
        print(format_comparison(comparison))
    print(f"wrote {args.out}/report.json, requests.csv, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
