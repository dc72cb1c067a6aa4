"""`python -m foundry.bench`: benchmark an in-process engine, or any OpenAI-compatible streaming
endpoint (--endpoint), and optionally the HF baseline, on one workload (seeded synthetic, or a
trtllm-bench JSONL --dataset), under concurrency levels or Poisson request rates; writes report.json,
requests.csv, report.html (and baseline_* / comparison.json). `--trtllm-report R.json` instead
normalizes a `trtllm-bench --report_json` file into the same report.json schema.

Needs only torch, transformers, pydantic, numpy (no pandas, zenml or mlflow): runs on the GPU machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from foundry.bench.metrics import (
    BenchmarkReport,
    ComparisonRow,
    save_comparison_json,
    save_records_csv,
    save_report_json,
)
from foundry.bench.report import render_html
from foundry.bench.session import LoadPlan, already_open, run_session
from foundry.bench.workload import (
    dataset_workload,
    describe_requests,
    synthetic_workload,
    synthetic_workload_with_description,
)
from foundry.errors import FoundryError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m foundry.bench", description=__doc__)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--engine-dir", type=Path, help="built engine directory (reference; trtllm with --served-by trtllm_serve)"
    )
    target.add_argument("--hf-dir", type=Path, help="HF model directory, benchmarked with transformers")
    target.add_argument("--endpoint", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000 (SSE streaming)")
    target.add_argument("--trtllm-report", type=Path, help="normalize a trtllm-bench --report_json file")
    parser.add_argument(
        "--served-by",
        choices=["in_process", "foundry_server", "trtllm_serve"],
        default=None,
        help="--engine-dir: run the engine behind its server (needs --tokenizer), as the pipeline does",
    )
    parser.add_argument("--endpoint-model", help="`model` field sent to --endpoint")
    parser.add_argument("--endpoint-vocab-size", type=int, help="vocab size for synthetic prompts sent to --endpoint")
    parser.add_argument("--baseline-hf-dir", type=Path, help="also run the same workload on HF transformers")
    parser.add_argument(
        "--baseline-batching",
        choices=["per_request", "static_batch"],
        default="static_batch",
        help="how HF transformers (--baseline-hf-dir, --hf-dir) serves concurrent requests: static_batch "
        "(left-padded batches in one model.generate; HF at its best) or per_request (a batch-1 "
        "model.generate per request, in threads)",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: the engine's engine.json device, else cpu"
    )
    parser.add_argument(
        "--hf-dtype",
        choices=sorted(_DTYPES),
        default="float32",
        help="dtype of HF models and of the reference runtime's compute",
    )
    parser.add_argument("--mode", choices=["concurrency", "request_rate"], default="concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rate", type=float, nargs="+", help="request rates (requests/s) for --mode request_rate")
    parser.add_argument("--max-concurrency", type=int, help="cap on requests in flight (request_rate mode)")
    parser.add_argument("--slo", help="SLOs for goodput, e.g. ttft_ms:500,tpot_ms:50 (keys: ttft_ms tpot_ms e2e_ms)")
    parser.add_argument("--dataset", type=Path, help="trtllm-bench JSONL (task_id, input_ids|prompt, output_tokens)")
    parser.add_argument("--tokenizer", type=Path, help="HF tokenizer directory for text prompts in --dataset")
    parser.add_argument("--input-dist", default="uniform", help="fixed | uniform | normal:MEAN:STD")
    parser.add_argument("--output-dist", default="uniform", help="fixed | uniform | normal:MEAN:STD")
    parser.add_argument("--no-telemetry", action="store_true", help="do not sample the GPU with NVML")
    parser.add_argument("--num-requests", type=int, default=8, help="timed requests per concurrency level")
    parser.add_argument("--warmup-requests", type=int, default=1, help="untimed requests before each level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-len", type=int, nargs=2, default=[32, 64], metavar=("MIN", "MAX"))
    parser.add_argument("--output-len", type=int, nargs=2, default=[16, 32], metavar=("MIN", "MAX"))
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = _engine_device(args.engine_dir) if args.engine_dir is not None else "cpu"
    return args


def _engine_device(engine_dir: Path) -> str:
    from foundry.builders.base import read_engine_info

    try:
        return read_engine_info(engine_dir).get("device", "cpu")
    except FoundryError:
        return "cpu"  # the engine-dir error is reported where the engine loads


def load_reference_engine(engine_dir: Path, device: str, dtype_name: str = "float32"):
    """The engine with its engine.json knobs (batching, graphs, compile), computing in `dtype_name`."""
    try:  # imported only when used
        from foundry.builders.base import load_engine
    except ImportError as error:
        raise FoundryError(
            f"--engine-dir needs foundry.runtime.reference, which cannot be imported: {error}"
        ) from error

    return load_engine(engine_dir, device=device, compute_dtype=_DTYPES[dtype_name])


def load_hf_engine(hf_dir: Path, device: str, dtype_name: str, batching: str = "per_request", max_batch_size: int = 32):
    from foundry.runtime.hf import HFEngine

    return HFEngine.load(
        hf_dir, dtype=_DTYPES[dtype_name], device=device, batching=batching, max_batch_size=max_batch_size
    )


def load_hf_engine_for(args: argparse.Namespace, hf_dir: Path):
    """The HF engine of the command line, batching as --baseline-batching says, every load level in one batch."""
    from foundry.runtime.hf import static_batch_size_for

    max_batch_size = static_batch_size_for(args.concurrency, args.max_concurrency)
    return load_hf_engine(hf_dir, args.device, args.hf_dtype, args.baseline_batching, max_batch_size)


def engine_vocab_size(engine) -> int:
    vocab_size = getattr(engine, "vocab_size", None) or getattr(getattr(engine, "config", None), "vocab_size", None)
    if not vocab_size:
        raise FoundryError(f"backend {engine.backend!r} exposes no vocab_size; cannot draw synthetic token ids")
    return int(vocab_size)


def format_summary(report: BenchmarkReport) -> str:
    header = (
        f"{'backend':<16}{'level':>18}{'ok/fail':>9}{'out tok/s':>11}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'TPOT p50':>10}{'TPOT p99':>10}{'goodput':>9}{'MBU':>7}"
    )
    lines = [header]
    for lv in report.levels:

        def ms(stats, field):
            return f"{getattr(stats, field):.2f}" if stats else "–"

        goodput = f"{lv.goodput_req_s:.2f}" if lv.goodput_req_s is not None else "–"
        mbu = f"{lv.mbu:.1%}" if lv.mbu is not None else "–"
        lines.append(
            f"{report.backend:<16}{lv.label:>18}{f'{lv.completed}/{lv.failed}':>9}"
            f"{lv.output_token_throughput_tok_s:>11.1f}{ms(lv.ttft, 'p50_ms'):>10}{ms(lv.ttft, 'p99_ms'):>10}"
            f"{ms(lv.tpot, 'p50_ms'):>10}{ms(lv.tpot, 'p99_ms'):>10}{goodput:>9}{mbu:>7}"
        )
    if report.slo is not None:
        best = (
            f"{report.max_output_tok_s_within_slo:.1f} tok/s at {report.best_level_within_slo}"
            if report.max_output_tok_s_within_slo is not None
            else "no level meets it"
        )
        lines.append(f"max throughput within SLO {report.slo.model_dump(exclude_none=True)}: {best}")
    if report.batching is not None:
        lines.append(f"{report.backend} batching: {report.batching}")
    return "\n".join(lines)


def format_comparison(rows: Sequence[ComparisonRow]) -> str:
    baseline = f"{rows[0].baseline_backend} {rows[0].baseline_batching or ''}".strip() if rows else "baseline"
    lines = [f"concurrency  speedup_output_tok_s  ttft_p50_ratio  tpot_p50_ratio   (engine / baseline {baseline})"]
    for r in rows:
        lines.append(
            f"{(r.concurrency if r.request_rate is None else f'{r.request_rate:g}/s'):>11}  {r.speedup_output_tok_s or float('nan'):>20.2f}"
            f"  {r.ttft_p50_ratio or float('nan'):>14.2f}  {r.tpot_p50_ratio or float('nan'):>14.2f}"
        )
    return "\n".join(lines)


def write_outputs(
    out: Path, report: BenchmarkReport, baseline: BenchmarkReport | None, comparison: list[ComparisonRow] | None
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_report_json(report, out / "report.json")
    save_records_csv(report.records, out / "requests.csv")
    if baseline is not None:
        save_report_json(baseline, out / "baseline_report.json")
        save_records_csv(baseline.records, out / "baseline_requests.csv")
    if comparison is not None:
        save_comparison_json(comparison, out / "comparison.json")
    (out / "report.html").write_text(render_html(report, baseline, comparison))


def _dist(spec: str, name: str) -> dict | None:
    kind, *params = spec.split(":")
    if kind == "uniform" and not params:
        return None
    if kind == "fixed" and not params:
        return {"distribution": "fixed"}
    if kind == "normal" and len(params) == 2:
        try:
            return {"distribution": "normal", "mean": float(params[0]), "std": float(params[1])}
        except ValueError:
            pass
    raise FoundryError(f"--{name}-dist {spec!r}: use fixed, uniform or normal:MEAN:STD")


def build_workload(args: argparse.Namespace, vocab_size: int, special_ids):
    if args.dataset is not None:
        tokenizer = None
        if args.tokenizer is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        return dataset_workload(args.dataset, args.warmup_requests, None, tokenizer=tokenizer, vocab_size=vocab_size)
    input_dist, output_dist = _dist(args.input_dist, "input"), _dist(args.output_dist, "output")
    if input_dist is None and output_dist is None:
        return synthetic_workload_with_description(
            args.seed,
            args.num_requests,
            args.warmup_requests,
            *args.input_len,
            *args.output_len,
            vocab_size=vocab_size,
            special_ids=special_ids,
        )
    requests = synthetic_workload(
        args.seed,
        args.num_requests + args.warmup_requests,
        *args.input_len,
        *args.output_len,
        vocab_size,
        special_ids,
        input_dist,
        output_dist,
    )
    description = describe_requests(
        requests, args.warmup_requests, source="synthetic", seed=args.seed, vocab_size=vocab_size
    )
    description.input_len_distribution = (input_dist or {"distribution": "uniform"})["distribution"]
    description.output_len_distribution = (output_dist or {"distribution": "uniform"})["distribution"]
    return requests, description


def load_plan(args: argparse.Namespace) -> LoadPlan:
    gpu_index = torch.cuda.current_device() if args.device == "cuda" and torch.cuda.is_available() else 0
    return LoadPlan(
        concurrency=args.concurrency,
        warmup_requests=args.warmup_requests,
        mode=args.mode,
        request_rates=args.rate,
        max_concurrency=args.max_concurrency,
        arrival_seed=args.seed,
        slo=args.slo,
        telemetry=not args.no_telemetry,
        gpu_index=gpu_index,
    )


def _served_engine(args: argparse.Namespace):
    """--engine-dir with --served-by: the engine behind its own server, as the pipeline runs it."""
    from foundry.builders.base import read_engine_info
    from foundry.config import RuntimeConfig
    from foundry.serving import open_engine

    if args.tokenizer is None:
        raise FoundryError("--served-by needs --tokenizer (the HF directory the server detokenizes with)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    info = read_engine_info(args.engine_dir)
    try:
        runtime = RuntimeConfig(served_by=args.served_by)
    except ValueError as error:
        raise FoundryError(f"--served-by: {error}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    opened = open_engine(
        args.engine_dir,
        info,
        None,
        runtime,
        args.tokenizer,
        args.out / "server.log",
        args.engine_dir.name,
        eos_ids=[tokenizer.eos_token_id],
        device=args.device,
    )
    return opened, len(tokenizer), list(tokenizer.all_special_ids)


def _target(args: argparse.Namespace):
    """(session target, model name, vocab size, special ids) for the command line's target."""
    if args.endpoint is not None:
        from foundry.bench.http_client import OpenAICompletionsTarget

        if args.dataset is None and not args.endpoint_vocab_size:
            raise FoundryError("--endpoint with synthetic prompts needs --endpoint-vocab-size (or use --dataset)")
        target = OpenAICompletionsTarget(args.endpoint, model=args.endpoint_model)
        return already_open(target), args.endpoint_model or args.endpoint, args.endpoint_vocab_size, ()
    if args.engine_dir is not None and args.served_by not in (None, "in_process"):
        opened, vocab_size, special_ids = _served_engine(args)
        return opened, args.engine_dir.name, vocab_size, special_ids
    if args.engine_dir is not None:
        engine, name = load_reference_engine(args.engine_dir, args.device, args.hf_dtype), args.engine_dir.name
    else:
        engine, name = load_hf_engine_for(args, args.hf_dir), args.hf_dir.name
    return already_open(engine), name, engine_vocab_size(engine), getattr(engine, "special_token_ids", ())


def run(args: argparse.Namespace) -> tuple[BenchmarkReport, BenchmarkReport | None, list[ComparisonRow] | None]:
    if args.trtllm_report is not None:
        from foundry.bench.trtllm_report import load_trtllm_bench_report

        return load_trtllm_bench_report(args.trtllm_report), None, None
    if args.mode == "request_rate" and not args.rate:
        raise FoundryError("--mode request_rate needs --rate R [R ...] (requests/s)")
    opened, model_name, vocab_size, special_ids = _target(args)
    requests, workload = build_workload(args, vocab_size, special_ids)

    def baseline():
        engine = load_hf_engine_for(args, args.baseline_hf_dir)
        if engine_vocab_size(engine) != vocab_size:
            raise FoundryError(
                f"baseline vocab_size {engine_vocab_size(engine)} != engine vocab_size "
                f"{vocab_size}: the same token ids would mean different prompts"
            )
        return engine

    results = run_session(
        opened,
        requests,
        workload,
        load_plan(args),
        model_name,
        baseline=baseline if args.baseline_hf_dir is not None else None,
    )
    return results.engine, results.baseline, (results.comparison if results.baseline is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report, baseline, comparison = run(args)
        write_outputs(args.out, report, baseline, comparison)
        if report.telemetry is not None:
            t = report.telemetry
            print(
                f"gpu telemetry: {t['status']}"
                + (
                    f" ({t['reason']})"
                    if t.get("reason")
                    else f" {t['gpu_name']} cc {t['compute_capability']} peak mem {t['memory_used_peak_mib']:.0f} MiB, "
                    f"util mean {t['gpu_utilization_mean_pct']}%, power max {t['power_max_w']} W, "
                    f"peak bandwidth {t['peak_bandwidth_gb_s']} GB/s"
                )
            )
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
