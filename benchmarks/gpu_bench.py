"""The reference engine on a GPU, per quantization variant, against HF transformers (RANDOM weights).

    python benchmarks/gpu_bench.py --out OUT [--shape llama-3.1-8b] [--variants bf16 fp8 int8_sq ...]
        [--compile bf16 fp8] [--concurrency 1 32] [--input-len 128] [--output-len 128] [--hf-baseline]
        [--without-overlap bf16] [--ungraphed-prefill bf16] [--compiled-prefill bf16] [--step-timeline]

Why random weights: the lent GPU machine cannot download models and the working tree that travels
there is capped at 64 MiB. Speed does not depend on weight values (greedy decoding runs the
requested number of tokens; the engine never stops at EOS in a benchmark), so every engine gets the
same random weights of the real shapes; quantized variants are made from them by
benchmarks/checkpoint_variants.py (ModelOpt's tensor layout, max-calibrated scales). Every figure is
labelled "random weights". Quality on real weights: benchmarks/gpu_parity.py.

Per variant: one engine (continuous batching, CUDA-graph decode and lone-prompt prefill,
optionally torch.compile of the decode step and, where EngineOptions.compile_prefill, the batched
prefill), compiled and captured before traffic (capture and compile seconds are reported), then
each concurrency level through foundry.bench's run_benchmark (TTFT/TPOT/ITL percentiles, MBU, GPU
telemetry).
Baselines on the same workload: HF `generate` eager one request at a time (c=1), and HF's own
static batch (`model.generate` on `max(concurrency)` left-padded prompts at once).
Needs torch, transformers, numpy, pydantic (no zenml, mlflow or pandas).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from checkpoint_variants import VARIANTS, calibrate_amax, float_checkpoint, parsed_config, quantize_checkpoint  # noqa: E402

from foundry.bench.runner import engine_model_bytes, run_benchmark  # noqa: E402
from foundry.bench.telemetry import GPUTelemetry  # noqa: E402
from foundry.bench.workload import synthetic_workload_with_description  # noqa: E402
from foundry.runtime import pdl, reference  # noqa: E402
from foundry.runtime.reference import ReferenceEngine  # noqa: E402
from foundry.runtime.scheduler import EngineOptions  # noqa: E402

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct config.json
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    # meta-llama/Llama-3.1-8B config.json (rope_scaling left out: it changes no shape and no cost)
    "llama-3.1-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
}
SLO = "ttft_ms:500,tpot_ms:30"  # MLPerf Inference Llama3.1-8B interactive limits (p99)


def random_hf_model(shape: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def copy_bandwidth_gb_s() -> float:
    """Device-to-device copy of 4 GiB, bytes read + written over the median time: the roofline."""
    source = torch.empty(2**31, dtype=torch.int16, device="cuda").random_()
    target = torch.empty_like(source)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del source, target
    return 2 * 2**32 / sorted(times)[len(times) // 2] / 1e9


def workload(args, count: int, vocab_size: int, seed: int):
    return synthetic_workload_with_description(
        seed, count, 1, args.input_len, args.input_len, args.output_len, args.output_len, vocab_size=vocab_size
    )


class StepTimeline:
    """GPU-side timing of every decode graph replay while the engine serves (`--step-timeline`): how
    long each replay (with its token copy to the host) keeps the GPU busy, and how long the GPU sits
    idle between a step and the one `launch_next` queued after it. Their sum is what TPOT pays per
    token; against decode_step_variants' bare replay it says where serving loses time."""

    def __init__(self, runner):
        self.marks: list[tuple[torch.cuda.Event, torch.cuda.Event, bool]] = []  # (start, end, chained)
        self.launched_s: list[float] = []  # host clock at each replay call
        self._chained = False
        replay, launch_next = runner._replay, runner.launch_next

        def timed_replay(step):
            self.launched_s.append(time.perf_counter())
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            step = replay(step)
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.marks.append((start, end, self._chained))
            return step

        def timed_launch_next(previous):
            self._chained = True
            try:
                return launch_next(previous)
            finally:
                self._chained = False

        runner._replay, runner.launch_next = timed_replay, timed_launch_next

    def summary(self) -> dict:
        torch.cuda.synchronize()
        busy_ms = [start.elapsed_time(end) for start, end, _ in self.marks]
        chained = [(before, after) for before, after in zip(self.marks, self.marks[1:]) if after[2]]
        idle_ms = [before[1].elapsed_time(after[0]) for before, after in chained]
        period_ms = [before[0].elapsed_time(after[0]) for before, after in chained]
        host_period_ms = [
            (after_s - before_s) * 1e3
            for before_s, after_s, mark in zip(self.launched_s, self.launched_s[1:], self.marks[1:])
            if mark[2]
        ]
        chain_starts = [index for index, mark in enumerate(self.marks) if not mark[2]] + [len(self.marks)]
        chain_gpu_ms = [
            self.marks[first][0].elapsed_time(self.marks[following - 1][1])
            for first, following in zip(chain_starts, chain_starts[1:])
        ]
        self.marks, self.launched_s = [], []

        def quantile(values, q):
            return round(float(torch.tensor(values).quantile(q)), 4) if values else None

        def mean(values):
            return round(statistics.fmean(values), 4) if values else None

        return {
            "replays": len(busy_ms),
            "replay_ms_p50": quantile(busy_ms, 0.5),
            "replay_ms_mean": mean(busy_ms),
            "replay_ms_max": quantile(busy_ms, 1.0),
            "idle_between_chained_ms_p50": quantile(idle_ms, 0.5),
            "idle_between_chained_ms_max": quantile(idle_ms, 1.0),
            "idle_between_chained_ms_total": round(sum(idle_ms), 3),
            "idle_gaps_over_0_1_ms": sum(gap > 0.1 for gap in idle_ms),
            "chained_period_ms_p50": quantile(period_ms, 0.5),
            "chained_period_ms_mean": mean(period_ms),
            "host_launch_period_ms_p50": quantile(host_period_ms, 0.5),
            "host_launch_period_ms_mean": mean(host_period_ms),
            "chain_gpu_ms_mean": mean(chain_gpu_ms),
            "chains": len(chain_gpu_ms),
        }


class GCPauses:
    """Python's garbage collections while the engine serves, with their durations: a full collection
    walks every live object (the compiled model holds millions) on whichever thread triggered it. The
    one full collection per level seen on the H100 (0.4–0.65 s) is run_benchmark's own gc.collect()
    before its timed run (garbage_collection_frozen), outside every timing."""

    def __init__(self):
        self._started: float | None = None
        self.pauses_ms: dict[int, list[float]] = {}
        self._reset()
        gc.callbacks.append(self._callback)

    def _reset(self) -> None:
        self.pauses_ms = {generation: [] for generation in range(3)}

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.pauses_ms[info["generation"]].append((time.perf_counter() - self._started) * 1e3)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        result = {
            f"gen{generation}": {
                "count": len(pauses),
                "total_ms": round(sum(pauses), 2),
                "max_ms": round(max(pauses, default=0), 2),
            }
            for generation, pauses in self.pauses_ms.items()
        }
        self._reset()
        return result


def measure_engine(engine, args, label: str, vocab_size: int, bandwidth_gb_s: float) -> dict:
    levels = {}
    timeline = (
        StepTimeline(engine.scheduler.runner) if args.step_timeline and isinstance(engine, ReferenceEngine) else None
    )
    pauses = GCPauses() if timeline is not None else None
    for concurrency in args.concurrency:
        requests, description = workload(
            args, max(args.min_requests, args.waves * concurrency), vocab_size, concurrency
        )
        report = run_benchmark(
            engine,
            requests,
            [concurrency],
            warmup_requests=min(concurrency, 4),
            model=f"{args.shape} (random weights) {label}",
            workload=description,
            slo=SLO,
            telemetry=GPUTelemetry(0),
            model_bytes=engine_model_bytes(engine),
            peak_bandwidth_gb_s=bandwidth_gb_s,
        )
        levels[concurrency] = report.model_dump(mode="json")
        if timeline is not None:
            levels[concurrency]["step_timeline"] = {**timeline.summary(), "gc": pauses.summary()}
            print(f"{label} c={concurrency} step timeline: {levels[concurrency]['step_timeline']}", flush=True)
    if pauses is not None:
        pauses.close()
    return levels


def hf_static_batch(model, args, batch: int, vocab_size: int) -> dict:
    """HF at its best at concurrency `batch`: one `model.generate` over the whole batch."""
    ids = torch.randint(1, vocab_size, (batch, args.input_len), generator=torch.Generator().manual_seed(3)).cuda()
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=args.output_len, min_new_tokens=args.output_len)
    with torch.inference_mode():
        model.generate(ids[:, :16], **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4}, do_sample=False)
        torch.cuda.synchronize()
        started = time.perf_counter()
        model.generate(ids, **kwargs, do_sample=False)
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"batch": batch, "seconds": seconds, "output_tok_s": batch * args.output_len / seconds}


def build_engine(config, tensors, variant: str, args, overlap: bool = True, **changed) -> tuple[ReferenceEngine, dict]:
    """The engine as it ships for this variant, but for the EngineOptions fields in `changed`."""
    options = EngineOptions(
        max_batch_size=max(args.concurrency),
        max_seq_len=args.input_len + args.output_len,
        graph_batch_sizes=tuple(args.concurrency),
        torch_compile=variant in args.compile,
        prefill_chunk_tokens=args.prefill_chunk_tokens,
    )
    options = dataclasses.replace(options, **changed)
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    engine = ReferenceEngine(parsed_config(config), tensors, torch.bfloat16, device="cuda", options=options)
    engine.scheduler.runner.overlap = overlap  # off: each step's tokens are handed out before the next launch
    engine.scheduler.warm_up(list(args.concurrency))
    setup = {
        "load_s": round(time.perf_counter() - started, 2),
        **engine.scheduler.stats(),
        "weight_bytes": engine.weight_bytes(),
    }
    return engine, setup


def level_row(name: str, level: dict) -> str:
    lv = level["levels"][0]
    mbu = f"{lv['mbu']:.0%}" if lv.get("mbu") is not None else "–"
    return (
        f"| {name} | {lv['concurrency']} | {lv['output_token_throughput_tok_s']:.1f} "
        f"| {lv['ttft']['p50_ms']:.1f} / {lv['ttft']['p99_ms']:.1f} | {lv['tpot']['p50_ms']:.2f} / {lv['tpot']['p99_ms']:.2f} "
        f"| {mbu} |"
    )


def table(results: dict) -> str:
    lines = [
        f"copy bandwidth {results['copy_bandwidth_gb_s']:.0f} GB/s; {results['shape']} RANDOM weights; "
        f"ISL {results['input_len']} / OSL {results['output_len']}"
        + f"; Triton GEMV + residual for: {', '.join(results.get('triton_residual_linears') or ['none'])}"
        + f"; programmatic dependent launch: {'on' if results.get('programmatic_dependent_launch') else 'off'}",
        "| engine | concurrency | out tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | MBU |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results["engines"].items():
        for level in result["levels"].values():
            lines.append(level_row(name, level))
    for name, result in results["engines"].items():
        setup = result["setup"]
        lines.append(
            f"{name}: load+capture {setup['load_s']} s (first capture incl. compile/autotune {setup['first_capture_s']} s, "
            f"prefill compile {setup.get('prefill_compile_s')} s, "
            f"{setup.get('prefill_graphs', 0)} prefill graphs in {setup.get('prefill_capture_s', 0)} s), "
            f"weights read per step {setup['weight_bytes'] / 1e9:.2f} GB, KV pool {setup['kv_pool_bytes'] / 1e9:.2f} GB, "
            f"peak GPU memory {result['peak_memory_gb']:.1f} GB"
        )
    for name, value in results.get("hf_static_batch", {}).items():
        lines.append(f"HF static batch {name}: {value['output_tok_s']:.1f} out tok/s ({value['seconds']:.1f} s)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", default="llama-3.1-8b", choices=list(SHAPES))
    parser.add_argument("--variants", nargs="+", default=["bf16", "fp8", "int8_sq"], choices=list(VARIANTS))
    parser.add_argument("--compile", nargs="*", default=[], choices=list(VARIANTS), help="variants to torch.compile")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument(
        "--waves",
        type=int,
        default=8,
        help="requests per level: waves × concurrency (at least --min-requests). Identical requests at "
        "concurrency N arrive in waves of N; with few waves the ramp-up and drain weigh more (2 waves "
        "averaged about 21 rows a step at c=32 on an H100; run18)",
    )
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--prefill-chunk-tokens", type=int, default=2048)
    parser.add_argument("--hf-baseline", action="store_true", help="also HF eager (c=1) and HF static batches")
    parser.add_argument(
        "--triton-residual-linears",
        nargs="*",
        choices=["dense", "proj"],
        help="float layers' decode linears that feed the residual through foundry's Triton GEMV, for the whole "
        "run (reference.TRITON_RESIDUAL_LINEARS; default: as it ships)",
    )
    parser.add_argument(
        "--step-timeline",
        action="store_true",
        help="time every decode graph replay on the GPU while serving (CUDA events; see StepTimeline)",
    )
    extra_runs = {  # variants measured once more, with one thing changed
        "--without-overlap": "with the host's hand-out not overlapped with the next step",
        "--ungraphed-prefill": "with a lone prompt's prefill launched op by op, not replayed from a graph",
        "--compiled-prefill": "compiled, with the batched prefill compiled too",
    }
    for flag, change in extra_runs.items():
        parser.add_argument(
            flag, nargs="*", default=[], choices=list(VARIANTS), help=f"variants also measured {change}"
        )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.triton_residual_linears is not None:
        reference.TRITON_RESIDUAL_LINEARS = frozenset(args.triton_residual_linears)
    results = {
        "triton_residual_linears": sorted(reference.TRITON_RESIDUAL_LINEARS),
        "programmatic_dependent_launch": pdl.enabled(torch.device("cuda")),
        "shape": args.shape,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "copy_bandwidth_gb_s": copy_bandwidth_gb_s(),
        "command": "python benchmarks/gpu_bench.py " + " ".join(sys.argv[1:]),
        "engines": {},
    }
    model = random_hf_model(args.shape, torch.bfloat16)
    vocab_size = model.config.vocab_size
    amax = calibrate_amax(model, torch.randint(1, vocab_size, (1, 128), generator=torch.Generator().manual_seed(2)))
    base_config, base_tensors = float_checkpoint(model, "bfloat16")

    def save():
        (args.out / "gpu_results.json").write_text(json.dumps(results, indent=1))
        (args.out / "gpu_table.md").write_text(table(results) + "\n")

    runs = (  # (variant, overlapped hand-out, EngineOptions changed from what ships, label)
        [(variant, True, {}, "") for variant in args.variants]
        + [(variant, False, {}, " (no overlap)") for variant in args.without_overlap]
        + [(variant, True, {"graph_prefill": False}, " (ungraphed prefill)") for variant in args.ungraphed_prefill]
        + [(variant, True, {"compile_prefill": True}, " (compiled prefill)") for variant in args.compiled_prefill]
    )
    for variant, overlap, changed, label in runs:
        name = variant + (" +compile" if variant in args.compile else "") + label
        config, tensors = quantize_checkpoint(base_config, base_tensors, amax, variant)
        engine, setup = build_engine(config, tensors, variant, args, overlap, **changed)
        print(f"{name}: ready {setup}", flush=True)
        levels = measure_engine(engine, args, name, vocab_size, results["copy_bandwidth_gb_s"])
        results["engines"][name] = {
            "setup": setup,
            "levels": levels,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
        }
        engine.close()
        del engine, tensors
        torch.cuda.empty_cache()
        save()
        print(table(results), flush=True)
    if args.hf_baseline:
        from foundry.runtime.hf import HFEngine

        hf = HFEngine(model, torch.device("cuda"), name=args.shape)
        one = argparse.Namespace(**{**vars(args), "concurrency": [1], "min_requests": 4, "waves": 1})
        results["engines"]["hf eager (per request)"] = {
            "setup": {"load_s": 0, "first_capture_s": None, "weight_bytes": 0, "kv_pool_bytes": 0},
            "levels": measure_engine(hf, one, "hf eager", vocab_size, results["copy_bandwidth_gb_s"]),
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
        }
        results["hf_static_batch"] = {
            f"batch {batch}": hf_static_batch(model, args, batch, vocab_size) for batch in args.concurrency
        }
        save()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
