"""Time the reference engine's captured decode step (compiled) under alternative settings, on a GPU.

    python benchmarks/decode_step_variants.py --out OUT [--variants bf16 fp8] [--batch 1 32]
        [--settings default coordinate_descent grouped_query_heads ...] [--replays 200] [--profile]

What it answers: where the decode step's time beyond the weight read goes, setting by setting,
without the scheduler or HTTP around it. Per (quantization variant, setting, batch bucket): the
engine is built from the same random Llama-3.1-8B-shaped weights (benchmarks/gpu_bench.py explains
why random), the step is compiled and captured exactly as DecodeRunner does in serving, then the
graph is replayed `--replays` times between CUDA events; the median step time gives the implied
decode tok/s and the bandwidth the step reached over the bytes it must read (linear weights +
lm_head + the KV it attends over; the embedding table is not read, one row is).

Settings (applied before the engine is built, undone after):
* default: the code as it ships.
* coordinate_descent: inductor's `coordinate_descent_tuning` (gpt-fast turns it on).
* sdpa_attention: decode attention through one `scaled_dot_product_attention` call with the
  boolean mask instead of matmul → mask → softmax → matmul (fewer kernels per layer) — the
  code ships this way since this measurement; the setting is a no-op now.
* scaled_mm_fp8: FP8 linears through `torch._scaled_mm` at every row count (16 padded rows at
  decode) instead of foundry's Triton kernel below 16 rows.
* grouped_query_heads: decode attention as a plain SDPA call with the query heads that share a KV
  head folded into its "query positions" (instead of `enable_gqa=True`).
* unfused_fp8_fc_gate: FP8 fc and gate as two GEMMs (before they were fused with per-row scales).
* sdpa_efficient_attention: decode attention pinned to SDPA's memory-efficient kernel (the shipped
  call lets SDPA choose; the folded form of run10 landed on cuDNN's flash kernel, ~11 µs a layer
  at batch 1 for ~1 MB of KV).
* triton_decode_attention / sdpa_decode_attention: decode attention through foundry's Triton
  kernel (reads only the columns each row sees, quantized codes in place) or through SDPA over
  the whole masked slot (a quantized cache dequantized first), whichever way the engine ships
  (reference.DECODE_ATTENTION_KERNEL).
* fused_linears / unfused_linears: float, FP8 and per-tensor W8A8 decode linears through foundry's fused kernel
  (RMSNorm / SiLU·mul prologue, residual epilogue, FP8 activation quantization; decode_linear.py)
  or as separate ops (inductor fuses the elementwise ones; cuBLAS or the FP8 kernel for the GEMM),
  whichever way the engine ships (reference.FUSED_DECODE_LINEARS). Either one also runs
  `fused_linear_agreement` and `fused_linear_timings` first.
* compiled_prefill / eager_prefill: the batched prefill's layers compiled with the decode step
  (dynamic shapes) or eager, whichever way the engine ships (EngineOptions.compile_prefill);
  measure with --prefill-prompts.
A setting that fails (e.g. a kernel the stack refuses for these shapes) is recorded under "failed"
and the others still run.
With --prefill-prompts N [N ...], the batched prefill of N fresh prompts is timed too (what stalls
decode when requests arrive). With --profile, OUT/profile_<variant>_<setting>_<batch>.txt lists
the kernels of 20 replays by GPU time (torch.profiler): where the step's time goes
(profile_<variant>_<setting>_prefill_<N>.txt: one batched prefill).
Results go to OUT/decode_step_variants.json and .md as each finishes (a cut-off run keeps its rows).
Needs torch, transformers, numpy, pydantic.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
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
from gpu_bench import copy_bandwidth_gb_s, random_hf_model  # noqa: E402

from foundry.runtime import linears, reference  # noqa: E402
from foundry.runtime.reference import ReferenceEngine  # noqa: E402
from foundry.runtime.scheduler import EngineOptions  # noqa: E402

SETTINGS = [
    "default",
    "coordinate_descent",
    "sdpa_attention",
    "scaled_mm_fp8",
    "grouped_query_heads",
    "unfused_fp8_fc_gate",
    "sdpa_efficient_attention",
    "compiled_prefill",
    "eager_prefill",
    "triton_decode_attention",
    "sdpa_decode_attention",
    "fused_linears",
    "unfused_linears",
]


def grouped_query_heads_attention(q, keys, values, allowed):
    rows, heads, _, head_size = q.shape
    kv_heads = keys.shape[1]
    grouped = q.reshape(rows, kv_heads, heads // kv_heads, head_size)
    attended = torch.nn.functional.scaled_dot_product_attention(
        grouped, keys, values, attn_mask=allowed[:, None, None, :]
    )
    return attended.reshape(rows, heads, 1, head_size)


def efficient_kernel_attention(q, keys, values, allowed):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, attn_mask=allowed[:, None, None, :], enable_gqa=True
        )


def fused_fc_gate_except_fp8(config, tensors, prefix, compute_dtype, shipped=reference._fused_fc_gate):
    return None if config.quant_algo == reference.FP8 else shipped(config, tensors, prefix, compute_dtype)


@contextlib.contextmanager
def setting(name: str):
    import torch._inductor.config as inductor

    saved = (
        inductor.coordinate_descent_tuning,
        linears.FP8_TRITON_BELOW_ROWS,
        reference.decode_attention,
        reference._fused_fc_gate,
        reference.DECODE_ATTENTION_KERNEL,
        reference.FUSED_DECODE_LINEARS,
    )
    try:
        inductor.coordinate_descent_tuning = name == "coordinate_descent"
        if name == "scaled_mm_fp8":
            linears.FP8_TRITON_BELOW_ROWS = 0
        if name == "grouped_query_heads":
            reference.decode_attention = grouped_query_heads_attention
        if name == "sdpa_efficient_attention":
            reference.decode_attention = efficient_kernel_attention
        if name in ("sdpa_decode_attention", "grouped_query_heads", "sdpa_efficient_attention"):
            reference.DECODE_ATTENTION_KERNEL = False  # these compare SDPA forms
        if name == "triton_decode_attention":
            reference.DECODE_ATTENTION_KERNEL = True
        if name == "unfused_fp8_fc_gate":
            reference._fused_fc_gate = fused_fc_gate_except_fp8
        if name in ("fused_linears", "unfused_linears"):
            reference.FUSED_DECODE_LINEARS = name == "fused_linears"
        yield
    finally:
        (
            inductor.coordinate_descent_tuning,
            linears.FP8_TRITON_BELOW_ROWS,
            reference.decode_attention,
            reference._fused_fc_gate,
            reference.DECODE_ATTENTION_KERNEL,
            reference.FUSED_DECODE_LINEARS,
        ) = saved


# Llama-3.1-8B's decode linears as the layer calls them: (name, out features, in features, prologue)
FUSED_LINEAR_CASES = (
    ("qkv (RMSNorm)", 6144, 4096, "norm"),
    ("dense (+ residual)", 4096, 4096, "residual"),
    ("fc+gate (RMSNorm)", 28672, 4096, "norm"),
    ("proj (SiLU·mul, + residual)", 4096, 14336, "silu_mul"),
)


FUSED_WEIGHTS = ("bf16", "fp8", "int8")


def _fused_linear_case(prologue: str, n: int, k: int, weights: str, rows: int, generator):
    """(make(dtype): a bf16 / FP8 / per-tensor W8A8 linear computing in dtype, unfused(linear, dtype),
    fused(linear), inputs)."""
    device = "cuda"
    weight = torch.randn(n, k, device=device, generator=generator) * 0.02
    width = 2 * k if prologue == "silu_mul" else k
    inputs = {
        "x": torch.randn(rows, width, device=device, generator=generator, dtype=torch.bfloat16) * 2,
        "norm": (1 + 0.1 * torch.randn(k, device=device, generator=generator)).to(torch.bfloat16),
        "residual": torch.randn(rows, n, device=device, generator=generator, dtype=torch.bfloat16),
    }

    def make(dtype):
        if weights == "bf16":
            return linears.FloatLinear(weight, dtype)
        if weights == "int8":  # per-channel weight scales, a smoothing vector, a static activation scale
            channel_scale = weight.abs().amax(dim=1) / 127
            return linears.SmoothQuantLinear(
                {
                    "l.weight": (weight / channel_scale[:, None]).round().clamp(-127, 127).to(torch.int8),
                    "l.weights_scaling_factor": channel_scale,
                    "l.activation_scaling_factor": torch.tensor(4.0 / 127, device=device),
                    "l.prequant_scaling_factor": 1 + 0.2 * torch.rand(k, device=device, generator=generator),
                },
                "l",
                dtype,
            )
        weight_scale = weight.abs().amax() / 448
        codes = (weight / weight_scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        activation_scale = torch.tensor(4.0 / 448, device=device)  # clips the largest activations, as calibration does
        return linears.Fp8Linear(codes, activation_scale, [(n, weight_scale)], dtype)

    def unfused(linear, dtype):
        x = inputs["x"].to(dtype)
        if prologue == "norm":
            return linear(reference.rms_norm(x, inputs["norm"].to(dtype), 1e-5))
        if prologue == "silu_mul":
            return inputs["residual"].to(dtype) + linear(torch.nn.functional.silu(x[:, :k]) * x[:, k:])
        return inputs["residual"].to(dtype) + linear(x)

    def fused(linear):
        from foundry.runtime.decode_linear import fused_linear

        x = inputs["x"]
        if prologue == "norm":
            return fused_linear(x, linear, norm_weight=inputs["norm"], epsilon=1e-5)
        return fused_linear(x, linear, silu_mul=prologue == "silu_mul", residual=inputs["residual"])

    return make, unfused, fused, inputs


def fused_linear_agreement() -> list[dict]:
    """foundry's fused decode linear against the unfused ops in bf16, both measured against the same
    unfused ops in float32 (FP8, W8A8: the same weight codes, activations quantized from float32)."""
    generator = torch.Generator(device="cuda").manual_seed(5)
    rows_out = []
    for (name, n, k, prologue), weights, rows in itertools.product(FUSED_LINEAR_CASES, FUSED_WEIGHTS, (1, 4, 32)):
        make, unfused, fused, _ = _fused_linear_case(prologue, n, k, weights, rows, generator)
        bf16_linear = make(torch.bfloat16)
        exact = unfused(make(torch.float32), torch.float32).double()
        magnitude = exact.abs().max()
        fused_error = float((fused(bf16_linear).double() - exact).abs().max() / magnitude)
        unfused_error = float((unfused(bf16_linear, torch.bfloat16).double() - exact).abs().max() / magnitude)
        rows_out.append(
            {
                "linear": name,
                "weights": weights,
                "rows": rows,
                "fused_max_rel_err": fused_error,
                "unfused_max_rel_err": unfused_error,
                # both round to bf16 at the same steps; only the order of the float32 sums differs
                "agrees": fused_error <= 2 * unfused_error + 1e-3,
            }
        )
    return rows_out


def _graph_time_us(work, calls: int = 50, replays: int = 20) -> float:
    """Median time of one `work()` call, `calls` of them captured in one CUDA graph (no launch gaps from Python)."""
    from foundry.runtime.decode_runner import capture_cuda_graph

    graph, _ = capture_cuda_graph(lambda: [work() for _ in range(calls)][-1], torch.device("cuda"), None)
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def fused_linear_timings(bandwidth_gb_s: float) -> list[dict]:
    """Each fused decode linear against its GEMM alone (cuBLAS `F.linear` for bf16, foundry's FP8 /
    int8 kernel on codes quantized beforehand): is the fused kernel's weight read as fast as the GEMM's?"""
    from foundry.runtime.scaled_gemm import fp8_matmul_scaled, int8_matmul_scaled

    generator = torch.Generator(device="cuda").manual_seed(6)
    rows_out = []
    for (name, n, k, prologue), weights, rows in itertools.product(FUSED_LINEAR_CASES, FUSED_WEIGHTS, (1, 32)):
        make, _, fused, inputs = _fused_linear_case(prologue, n, k, weights, rows, generator)
        linear = make(torch.bfloat16)
        x = inputs["x"][:, :k].contiguous()
        if weights == "fp8":
            codes = linear.quantize_activation(x)
            gemm_only = lambda: fp8_matmul_scaled(codes, linear.weight, linear.column_scale, torch.bfloat16)  # noqa: E731
        elif weights == "int8":
            codes = linear.quantize_activation(x)
            gemm_only = lambda: int8_matmul_scaled(codes, linear.weight_int8, None, linear.output_scale, torch.bfloat16)  # noqa: E731
        else:
            gemm_only = lambda: torch.nn.functional.linear(x, linear.weight)  # noqa: E731
        fused_us, gemm_us = _graph_time_us(lambda: fused(linear)), _graph_time_us(gemm_only)
        weight = linear.weight_int8 if weights == "int8" else linear.weight
        weight_bytes = weight.numel() * weight.element_size()
        rows_out.append(
            {
                "linear": name,
                "weights": weights,
                "rows": rows,
                "fused_us": round(fused_us, 2),
                "gemm_only_us": round(gemm_us, 2),
                "fused_pct_of_copy": round(100 * weight_bytes / (fused_us * 1e-6) / 1e9 / bandwidth_gb_s, 1),
                "gemm_pct_of_copy": round(100 * weight_bytes / (gemm_us * 1e-6) / 1e9 / bandwidth_gb_s, 1),
            }
        )
        print(rows_out[-1], flush=True)
    return rows_out


def fp8_kernel_agreement() -> list[dict]:
    """foundry's Triton FP8 kernel against `torch._scaled_mm` on the same E4M3 codes (Llama-3.1-8B
    shapes; rows padded to 16 for _scaled_mm): both accumulate exact E4M3 products in float32."""
    from foundry.runtime.scaled_gemm import fp8_matmul_scaled

    generator = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
        w = (torch.randn(n, k, device="cuda", generator=generator) * 0.02 / 0.002).clamp(-448, 448)
        w = w.to(torch.float8_e4m3fn)
        for m in (1, 2, 4, 8, 15):
            a = (torch.randn(m, k, device="cuda", generator=generator) * 8).clamp(-448, 448).to(torch.float8_e4m3fn)
            scale_a, scale_w = torch.tensor(0.01, device="cuda"), torch.tensor(0.002, device="cuda")
            ours = fp8_matmul_scaled(a, w, (scale_a * scale_w).expand(n).contiguous(), torch.float32)
            padded = torch.nn.functional.pad(a.view(torch.int8), (0, 0, 0, 16 - m)).view(torch.float8_e4m3fn)
            theirs = torch._scaled_mm(padded, w.t(), scale_a=scale_a, scale_b=scale_w, out_dtype=torch.float32)[:m]
            exact = (a.double() @ w.double().t()) * (scale_a.double() * scale_w.double())
            rows.append(
                {
                    "m": m,
                    "n": n,
                    "k": k,
                    "triton_max_rel_err": float(((ours.double() - exact).abs().max() / exact.abs().max())),
                    "scaled_mm_max_rel_err": float(((theirs.double() - exact).abs().max() / exact.abs().max())),
                }
            )
    return rows


def fp8_stacked_agreement() -> list[dict]:
    """A stacked Fp8Linear (the fused FP8 fc+gate: two row blocks, each with its own weight scale)
    against float64, at decode rows (Triton kernel) and prefill rows (`torch._scaled_mm` per block)."""
    generator = torch.Generator(device="cuda").manual_seed(1)
    n, k = 2 * 14336, 4096
    codes = (torch.randn(n, k, device="cuda", generator=generator) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    block_scales = [(n // 2, torch.tensor(0.002, device="cuda")), (n // 2, torch.tensor(0.0005, device="cuda"))]
    layer = linears.Fp8Linear(codes, torch.tensor(0.01, device="cuda"), block_scales, torch.bfloat16)
    rows = []
    for m in (1, 8, 16, 40, 256):
        x = torch.randn(m, k, device="cuda", generator=generator, dtype=torch.bfloat16)
        exact = (layer.quantize_activation(x).double() @ codes.double().t()) * layer.column_scale.double()
        error = (layer(x).double() - exact).abs().max() / exact.abs().max()
        rows.append({"m": m, "n": n, "k": k, "max_rel_err": float(error)})
    return rows


def decode_attention_agreement() -> list[dict]:
    """foundry's Triton decode attention against SDPA over the masked slot (the CPU path's call),
    both in float32 from the same bf16 inputs: bf16, int8 and E4M3 caches; 1, 4 and 32 rows (several
    splits, empty ones included, and one); Llama-3.1-8B heads (32 over 8) and SmolLM2's (9 over 3, head 64); a short
    and a long slot; rows at assorted positions, the last one on the scratch column."""
    from foundry.runtime.decode_attention import decode_attention_cuda
    from foundry.runtime.kv_pool import dequantize_kv, quantize_kv

    generator = torch.Generator(device="cuda").manual_seed(3)
    rows_out = []
    cases = [(32, 8, 128, 257), (9, 3, 64, 257), (32, 8, 128, 2049)]
    for (heads, kv_heads, head_size, capacity), rows, algo in itertools.product(
        cases, (1, 4, 32), (None, "INT8", "FP8")
    ):
        shape = (rows, kv_heads, capacity, head_size)
        stored = [torch.randn(shape, device="cuda", generator=generator, dtype=torch.bfloat16) for _ in range(2)]
        scale = torch.tensor(0.02, device="cuda")
        if algo:
            stored = [quantize_kv(t, algo, scale) for t in stored]
        keys, values = ([dequantize_kv(t, scale, torch.bfloat16) for t in stored]) if algo else stored
        q = torch.randn((rows, heads, 1, head_size), device="cuda", generator=generator, dtype=torch.bfloat16)
        # the last real column at most: a row on the scratch column (capacity - 1) is padding, read as one column
        positions = torch.randint(0, capacity - 1, (rows,), device="cuda", generator=generator)
        positions[-1] = capacity - 2
        allowed = torch.arange(capacity, device="cuda")[None, :] <= positions[:, None]
        expected = torch.nn.functional.scaled_dot_product_attention(
            q.float(), keys.float(), values.float(), attn_mask=allowed[:, None, None, :], enable_gqa=True
        )
        got = decode_attention_cuda(q, *stored, positions, scale if algo else None).float()
        error = float((got - expected).abs().max()) if torch.isfinite(got).all() else float("inf")
        sdpa_error = float((reference.decode_attention(q, keys, values, allowed).float() - expected).abs().max())
        rows_out.append(
            {
                "heads": f"{heads}/{kv_heads}x{head_size}",
                "capacity": capacity,
                "rows": rows,
                "kv": algo or "bf16",
                "max_abs_err": error,
                "sdpa_bf16_max_abs_err": sdpa_error,
                # both round to bf16 once; the kernel's float32 sums run in another order than SDPA's
                "agrees": error <= 4 * max(sdpa_error, 1e-2),
            }
        )
    return rows_out


def bytes_read_per_step(engine: ReferenceEngine, batch: int, kv_len: int) -> int:
    """The weights a step reads (engine.weight_bytes: the embedding table only where tied) + the KV attended."""
    return engine.weight_bytes() + batch * kv_len * engine.kv_bytes_per_token()


def time_replays(captured, replays: int) -> list[float]:
    """Each replay from the same inputs (a replay feeds its tokens back, one position further)."""
    tokens, positions = captured.tokens.clone(), captured.positions.clone()
    times = []
    for _ in range(replays):
        captured.tokens.copy_(tokens)
        captured.positions.copy_(positions)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        captured.graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def kernel_table(work, activities=("CUDA",)) -> str:
    """The kernels (and ops) `work()` runs, by total GPU time: torch.profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[getattr(ProfilerActivity, name) for name in activities]) as prof:
        work()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)


def kernel_profile(captured, replays: int = 20) -> str:
    """The kernels of `replays` graph replays."""

    tokens, positions = captured.tokens.clone(), captured.positions.clone()

    def replay() -> None:
        for _ in range(replays):
            captured.tokens.copy_(tokens)  # as in time_replays: the same inputs each time
            captured.positions.copy_(positions)
            captured.graph.replay()

    return kernel_table(replay)


def time_prefill(engine: ReferenceEngine, prompts: int, prompt_len: int, profile_path: Path | None) -> dict:
    """The batched prefill the scheduler runs for fresh prompts: median of 5 after a first run (whose
    time, compilation included where the prefill is compiled, is reported too)."""
    ids = torch.randint(1, engine.config.vocab_size, (prompts, prompt_len), generator=torch.Generator().manual_seed(4))
    slots, prompt_lists = list(range(prompts)), ids.tolist()

    def run() -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        engine.prefill_batch(engine.scheduler.pool, slots, prompt_lists)
        torch.cuda.synchronize()
        return time.perf_counter() - started

    with torch.inference_mode():
        first_s, *times = [run() for _ in range(6)]
        if profile_path is not None:  # CPU ops too: the eager prefill's time is spread over many
            profile_path.write_text(kernel_table(run, ("CPU", "CUDA")) + "\n")
    return {
        "prompts": prompts,
        "prompt_len": prompt_len,
        "ms": round(statistics.median(times) * 1e3, 2),
        "first_ms": round(first_s * 1e3, 1),
    }


def measure(config, tensors, args, bandwidth_gb_s: float, label: str, compile_prefill: bool | None = None) -> dict:
    options = EngineOptions(
        max_batch_size=max(args.batch),
        max_seq_len=args.max_seq_len,
        graph_batch_sizes=tuple(args.batch),
        torch_compile=True,
    )
    if compile_prefill is not None:  # None: as the engine ships
        options = dataclasses.replace(options, compile_prefill=compile_prefill)
    started = time.perf_counter()
    engine = ReferenceEngine(parsed_config(config), tensors, torch.bfloat16, device="cuda", options=options)
    runner = engine.scheduler.runner
    rows = {"load_s": round(time.perf_counter() - started, 1), "batches": {}}
    try:
        for batch in args.batch:
            width, kv_len = runner._batch_bucket(batch), runner._kv_len(0)
            started = time.perf_counter()
            captured = runner._graph(width, kv_len)
            # captured with padding rows (they read one column): every row at the slot's last real
            # column instead, so attention reads each row's whole context
            captured.positions.fill_(args.max_seq_len - 1)
            compile_s = time.perf_counter() - started
            median_ms = statistics.median(time_replays(captured, args.replays))
            read = bytes_read_per_step(engine, width, kv_len)
            rows["batches"][batch] = {
                "compile_capture_s": round(compile_s, 1),
                "step_ms": round(median_ms, 4),
                "tok_s": round(batch * 1000.0 / median_ms, 1),
                "bytes_read_gb": round(read / 1e9, 3),
                "bandwidth_pct_of_copy": round(100.0 * read / (median_ms / 1e3) / 1e9 / bandwidth_gb_s, 1),
            }
            print(rows["batches"][batch], flush=True)
            if args.profile:
                (args.out / f"profile_{label}_{batch}.txt").write_text(kernel_profile(captured) + "\n")
        rows["prefill"] = []
        for prompts in args.prefill_prompts:
            profile_path = args.out / f"profile_{label}_prefill_{prompts}.txt" if args.profile else None
            rows["prefill"].append(time_prefill(engine, prompts, args.prefill_len, profile_path))
            print(rows["prefill"][-1], flush=True)
    finally:
        engine.close()
    return rows


def table(results: dict) -> str:
    agreement = results.get("fp8_kernel_agreement") or []
    lines = [
        *(
            [
                "FP8 GEMM vs exact (float64) over {} shapes: Triton kernel max rel err {:.2e}, _scaled_mm {:.2e}".format(
                    len(agreement),
                    max(r["triton_max_rel_err"] for r in agreement),
                    max(r["scaled_mm_max_rel_err"] for r in agreement),
                )
            ]
            if agreement
            else []
        ),
        f"{results['device']}; copy bandwidth {results['copy_bandwidth_gb_s']:.0f} GB/s; llama-3.1-8b RANDOM weights; "
        f"graph replays of the compiled decode step, median of {results['replays']}",
        "| variant | setting | batch | step ms | implied tok/s | bytes read GB | % of copy bandwidth | compile+capture s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results["rows"].items():
        variant, name = key.split("/")
        for batch, b in row["batches"].items():
            lines.append(
                f"| {variant} | {name} | {batch} | {b['step_ms']:.3f} | {b['tok_s']:.1f} | {b['bytes_read_gb']:.2f} "
                f"| {b['bandwidth_pct_of_copy']:.1f} | {b['compile_capture_s']} |"
            )
    fused = results.get("fused_linear_agreement") or []
    if fused:
        lines.append(
            f"fused decode linears agree with the unfused ops (bf16 vs float32): {all(r['agrees'] for r in fused)}"
        )
    timings = results.get("fused_linear_timings") or []
    if timings:
        lines += [
            "| linear | weights | rows | fused µs | GEMM alone µs | fused % of copy bw | GEMM % |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['linear']} | {t['weights']} | {t['rows']} | {t['fused_us']} | {t['gemm_only_us']} "
            f"| {t['fused_pct_of_copy']} | {t['gemm_pct_of_copy']} |"
            for t in timings
        ]
    for key, row in results["rows"].items():
        for p in row.get("prefill", []):
            tok_s = p["prompts"] * p["prompt_len"] / p["ms"] * 1e3
            lines.append(
                f"{key}: batched prefill of {p['prompts']} × {p['prompt_len']} tokens {p['ms']} ms ({tok_s:,.0f} tok/s; "
                f"first run {p['first_ms']} ms)"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["bf16", "fp8"], choices=list(VARIANTS))
    parser.add_argument("--settings", nargs="+", default=["default"], choices=SETTINGS)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument(
        "--prefill-prompts", type=int, nargs="*", default=[], help="also time a batched prefill of N prompts (per N)"
    )
    parser.add_argument("--prefill-len", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="also write each step's kernels by GPU time")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "copy_bandwidth_gb_s": copy_bandwidth_gb_s(),
        "replays": args.replays,
        "command": "python benchmarks/decode_step_variants.py " + " ".join(sys.argv[1:]),
        "rows": {},
    }
    results["decode_attention_agreement"] = attention = decode_attention_agreement()
    worst = max(attention, key=lambda r: r["max_abs_err"])
    print(f"decode attention kernel vs SDPA (float32): all agree {all(r['agrees'] for r in attention)}, worst {worst}")
    if "fp8" in args.variants:
        results["fp8_kernel_agreement"] = agreement = fp8_kernel_agreement()
        worst = max(agreement, key=lambda r: r["triton_max_rel_err"])
        print(f"FP8 Triton kernel vs exact: worst relative error {worst}", flush=True)
        results["fp8_stacked_agreement"] = stacked = fp8_stacked_agreement()
        print(f"FP8 stacked linear (two weight scales) vs exact: {stacked}", flush=True)
    if {"fused_linears", "unfused_linears"} & set(args.settings):
        results["fused_linear_agreement"] = fused_agreement = fused_linear_agreement()
        worst = max(fused_agreement, key=lambda r: r["fused_max_rel_err"] - 2 * r["unfused_max_rel_err"])
        print(f"fused decode linears vs unfused: all agree {all(r['agrees'] for r in fused_agreement)}, worst {worst}")
        results["fused_linear_timings"] = fused_linear_timings(results["copy_bandwidth_gb_s"])
        (args.out / "decode_step_variants.json").write_text(json.dumps(results, indent=1))
    model = random_hf_model("llama-3.1-8b", torch.bfloat16)
    amax = calibrate_amax(model, torch.randint(1, 128256, (1, 128), generator=torch.Generator().manual_seed(2)))
    base_config, base_tensors = float_checkpoint(model, "bfloat16")
    del model
    torch.cuda.empty_cache()
    for variant in args.variants:
        config, tensors = quantize_checkpoint(base_config, base_tensors, amax, variant)
        for name in args.settings:
            print(f"{variant} / {name}", flush=True)
            torch._dynamo.reset()
            try:
                with setting(name):
                    results["rows"][f"{variant}/{name}"] = measure(
                        config,
                        tensors,
                        args,
                        results["copy_bandwidth_gb_s"],
                        f"{variant}_{name}",
                        compile_prefill={"compiled_prefill": True, "eager_prefill": False}.get(name),
                    )
            except Exception as error:  # a setting the stack refuses: recorded, the others still run
                results.setdefault("failed", {})[f"{variant}/{name}"] = repr(error)[:2000]
                print(f"{variant} / {name} failed: {error!r}"[:2000], flush=True)
            torch.cuda.empty_cache()
            (args.out / "decode_step_variants.json").write_text(json.dumps(results, indent=1))
            (args.out / "decode_step_variants.md").write_text(table(results) + "\n")
        del tensors
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
