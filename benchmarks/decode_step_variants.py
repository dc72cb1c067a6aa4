"""Time the reference engine's captured decode step (compiled) under alternative settings, on a GPU.

    python benchmarks/decode_step_variants.py --out OUT [--variants bf16 fp8] [--batch 1 32]
        [--settings default coordinate_descent grouped_query_heads ...] [--replays 200] [--profile]

What it answers: where the decode step's time beyond the weight read goes, setting by setting,
without the scheduler or HTTP around it. Per (quantization variant, setting, batch bucket): the
engine is built from the same random Llama-3.1-8B-shaped weights (benchmarks/gpu_bench.py explains
why random), the step is compiled and captured exactly as DecodeRunner does in serving, then the
graph is replayed `--replays` times between CUDA events; the median step time gives the implied
decode tok/s and the bandwidth the step reached over the bytes it must read (linear weights +
lm_head + the KV it attends over; the embedding table is not read, one row is). "chained step ms"
is the wall time per step of 50 steps launched as the scheduler launches them (`launch_next`, then
the host reads the previous step's tokens): its excess over the replay is what passes between two
graphs.

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
* cublas_output_projection / triton_output_projection / triton_residual_linears: a float
  layer's decode linears that feed the residual — none, the attention output projection, or it and
  the MLP's down projection — through foundry's Triton GEMV with the add in its epilogue
  (decode_linear.py; reference.TRITON_RESIDUAL_LINEARS) instead of cuBLAS + add. Any of them also
  runs `output_projection_agreement` and `output_projection_timings` first (every decode linear's
  shape, Triton GEMV + residual against cuBLAS + add). (A kernel with the RMSNorm, SiLU·mul and
  activation quantization as prologues was measured here too and lost: run16.)
* pdl / no_pdl: programmatic dependent launch (foundry/runtime/pdl.py) on or off for foundry's
  Triton kernels and inductor's (run19).
* fp8_codes_from_attention / fp8_quantize_kernel: an FP8 layer's attention kernel writes the E4M3
  codes for the output projection, or the step quantizes its bf16 output in a kernel of its own
  (reference.FP8_CODES_FROM_ATTENTION).
* fused_rope_kv / inductor_rope_kv: RoPE on q and k and the KV write as one Triton kernel
  (rope_kv_write.py) or as inductor's kernels (reference.FUSED_ROPE_KV_WRITE). Either runs
  `rope_kv_agreement` first.
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

from foundry.runtime import linears, pdl, reference  # noqa: E402
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
    "triton_output_projection",
    "cublas_output_projection",
    "triton_residual_linears",
    "pdl",
    "no_pdl",
    "fp8_codes_from_attention",
    "fp8_quantize_kernel",
    "fused_rope_kv",
    "inductor_rope_kv",
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


RESIDUAL_LINEAR_SETTINGS = {  # setting → reference.TRITON_RESIDUAL_LINEARS
    "cublas_output_projection": frozenset(),
    "triton_output_projection": frozenset({"dense"}),
    "triton_residual_linears": frozenset({"dense", "proj"}),
}


def fused_fc_gate_except_fp8(config, tensors, prefix, compute_dtype, shipped=reference._fused_fc_gate):
    return None if config.quant_algo == reference.FP8 else shipped(config, tensors, prefix, compute_dtype)


# (on setting, off setting) → the switch they set: (module, attribute)
SWITCH_SETTINGS = {
    ("pdl", "no_pdl"): (pdl, "ENABLED"),
    ("fp8_codes_from_attention", "fp8_quantize_kernel"): (reference, "FP8_CODES_FROM_ATTENTION"),
    ("fused_rope_kv", "inductor_rope_kv"): (reference, "FUSED_ROPE_KV_WRITE"),
}


@contextlib.contextmanager
def setting(name: str):
    import torch._inductor.config as inductor

    patched = [
        (inductor, "coordinate_descent_tuning"),
        (linears, "FP8_TRITON_BELOW_ROWS"),
        (reference, "decode_attention"),
        (reference, "_fused_fc_gate"),
        (reference, "DECODE_ATTENTION_KERNEL"),
        (reference, "TRITON_RESIDUAL_LINEARS"),
        *SWITCH_SETTINGS.values(),
    ]
    saved = [getattr(module, attribute) for module, attribute in patched]
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
        if name in RESIDUAL_LINEAR_SETTINGS:
            reference.TRITON_RESIDUAL_LINEARS = RESIDUAL_LINEAR_SETTINGS[name]
        for (on, off), (module, attribute) in SWITCH_SETTINGS.items():
            if name in (on, off):
                setattr(module, attribute, name == on)
        yield
    finally:
        for (module, attribute), value in zip(patched, saved):
            setattr(module, attribute, value)


# Llama-3.1-8B's decode linears: (name, out features, in features)
DECODE_LINEAR_SHAPES = (
    ("qkv", 6144, 4096),
    ("output proj", 4096, 4096),
    ("fc+gate", 28672, 4096),
    ("down proj", 4096, 14336),
)


def output_projection_agreement() -> list[dict]:
    """foundry's output-projection kernel (residual + x · Wᵀ) against the unfused bf16 ops, both
    measured against the same ops in float64."""
    from foundry.runtime.decode_linear import linear_plus_residual_cuda

    generator = torch.Generator(device="cuda").manual_seed(5)
    rows_out = []
    for (name, n, k), rows in itertools.product(DECODE_LINEAR_SHAPES, (1, 4, 32)):
        weight = (torch.randn(n, k, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
        x = torch.randn(rows, k, device="cuda", generator=generator, dtype=torch.bfloat16)
        residual = torch.randn(rows, n, device="cuda", generator=generator, dtype=torch.bfloat16)
        exact = residual.double() + x.double() @ weight.double().t()
        magnitude = exact.abs().max()
        kernel_error = float((linear_plus_residual_cuda(x, weight, residual).double() - exact).abs().max() / magnitude)
        unfused = residual + torch.nn.functional.linear(x, weight)
        unfused_error = float((unfused.double() - exact).abs().max() / magnitude)
        rows_out.append(
            {
                "linear": name,
                "rows": rows,
                "kernel_max_rel_err": kernel_error,
                "unfused_max_rel_err": unfused_error,
                # both round the product and the sum to bf16; only the order of the float32 sums differs
                "agrees": kernel_error <= 2 * unfused_error + 1e-3,
            }
        )
    return rows_out


def _graph_time_us(calls: list, replays: int = 20) -> float:
    """Median time of one call, the `calls` captured in one CUDA graph (no launch gaps from Python)."""
    from foundry.runtime.decode_runner import capture_cuda_graph

    graph, _ = capture_cuda_graph(lambda: [call() for call in calls][-1], torch.device("cuda"), None)
    return statistics.median(replay_ms(graph) * 1e3 / len(calls) for _ in range(replays))


def output_projection_timings(bandwidth_gb_s: float) -> list[dict]:
    """foundry's GEMV + residual against cuBLAS `residual + F.linear` at each decode linear's shape
    (graph-captured; the calls cycle over weight copies > 4× the L2 cache, so weights come from HBM
    as in a real step). In the compiled step inductor folds the add into the next RMSNorm."""
    from foundry.runtime.decode_linear import linear_plus_residual_cuda

    generator = torch.Generator(device="cuda").manual_seed(6)
    rows_out = []
    for (name, n, k), rows in itertools.product(DECODE_LINEAR_SHAPES, (1, 32)):
        weight_bytes = n * k * 2
        copies = max(2, -(-400_000_000 // weight_bytes))
        weights = [
            (torch.randn(n, k, device="cuda", generator=generator) * 0.02).to(torch.bfloat16) for _ in range(copies)
        ]
        x = torch.randn(rows, k, device="cuda", generator=generator, dtype=torch.bfloat16)
        residual = torch.randn(rows, n, device="cuda", generator=generator, dtype=torch.bfloat16)
        kernel_us = _graph_time_us([lambda w=w: linear_plus_residual_cuda(x, w, residual) for w in weights * 4])
        cublas_us = _graph_time_us([lambda w=w: residual + torch.nn.functional.linear(x, w) for w in weights * 4])
        del weights
        rows_out.append(
            {
                "linear": name,
                "rows": rows,
                "triton_us": round(kernel_us, 2),
                "cublas_us": round(cublas_us, 2),
                "triton_pct_of_copy": round(100 * weight_bytes / (kernel_us * 1e-6) / 1e9 / bandwidth_gb_s, 1),
                "cublas_pct_of_copy": round(100 * weight_bytes / (cublas_us * 1e-6) / 1e9 / bandwidth_gb_s, 1),
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
        kv_scale = scale if algo else None
        got_bf16 = decode_attention_cuda(q, *stored, positions, kv_scale)
        # the codes the FP8 output projection gets from the kernel = quantizing its bf16 output,
        # at a scale that uses E4M3's range and at one that saturates (clamps at ±448)
        codes_identical = True
        for range_used in (300, 600):
            activation_scale = got_bf16.float().abs().amax() / range_used
            codes = decode_attention_cuda(q, *stored, positions, kv_scale, activation_scale)
            expected_codes = quantize_kv(got_bf16, "FP8", activation_scale)  # = Fp8Linear.quantize_activation
            codes_identical &= bool(torch.equal(codes.view(torch.int8), expected_codes.view(torch.int8)))
        got = got_bf16.float()
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
                "fp8_codes_identical": codes_identical,
                # both round to bf16 once; the kernel's float32 sums run in another order than SDPA's
                "agrees": error <= 4 * max(sdpa_error, 1e-2),
            }
        )
    return rows_out


def steps_apart(got: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """How many representable steps apart, element by element: the sign-magnitude bits (bf16 as
    int16, E4M3 as int8) mapped onto a line where adjacent values are one apart and +0 = −0."""
    view = {torch.bfloat16: torch.int16, torch.float8_e4m3fn: torch.int8}.get(got.dtype)
    if view is None:  # integer codes (INT8): already on a line
        return (got.int() - expected.int()).abs()
    magnitude_bits = torch.iinfo(view).max

    def on_line(t: torch.Tensor) -> torch.Tensor:
        bits = t.view(view).int()
        return torch.where(bits < 0, -(bits & magnitude_bits), bits)

    return (on_line(got) - on_line(expected)).abs()


def rope_kv_agreement(device: str = "cuda") -> list[dict]:
    """foundry's RoPE + KV write kernel (it looks each row's cos/sin up in the tables by position)
    against the eager formula in float32 with one rounding to bf16, then kv_pool.quantize_kv, on
    bf16, INT8 and FP8 caches, Llama-3.1-8B and SmolLM2 heads, 1 and 32 rows (one on the scratch
    column), the op compiled as the step compiles it: q, and the whole pool after the write (other
    columns untouched). Triton contracts x·cos + r·sin into an FMA where eager rounds the product
    first, so a float32 result may differ in its last bit and then, rarely, a bf16 value or a code
    by one step: "agrees" allows one step (adjacent codes) and the counts say how many differ.
    (Inductor's own step differs from both more: it divides approximately and quantizes k without
    rounding it to bf16 first.)"""
    from foundry.runtime.kv_pool import STORAGE_DTYPES, quantize_kv
    from foundry.runtime.rope_kv_write import rope_kv_write_cuda

    generator = torch.Generator(device=device).manual_seed(8)
    results = []
    for (heads, kv_heads, head_size), rows, algo in itertools.product(
        ((32, 8, 128), (9, 3, 64)), (1, 32), (None, "INT8", "FP8")
    ):
        capacity = 130
        width = (heads + 2 * kv_heads) * head_size
        qkv = torch.randn((rows, width), device=device, generator=generator).to(torch.bfloat16)
        angles = torch.rand((capacity, head_size // 2), device=device, generator=generator) * 100
        cos, sin = (torch.cat([f(angles)] * 2, dim=-1).to(torch.bfloat16) for f in (torch.cos, torch.sin))
        positions = torch.randint(0, capacity - 1, (rows,), device=device, generator=generator)
        positions[-1] = capacity - 1  # an idle row writes the scratch column
        storage = STORAGE_DTYPES[algo] or torch.bfloat16
        scale = torch.tensor(0.02, device=device) if algo else None
        shape = (rows, kv_heads, capacity, head_size)
        keys, values = (torch.randn(shape, device=device, generator=generator).to(storage) for _ in range(2))
        expected_keys, expected_values = keys.clone(), values.clone()
        torch._dynamo.reset()  # a fresh compile per case (the cases differ in shapes and scale)
        q = torch.compile(rope_kv_write_cuda, fullgraph=True)(qkv, cos, sin, positions, keys, values, scale, heads)
        x = qkv.float().reshape(rows, -1, head_size)
        cos_at, sin_at = cos[positions].float()[:, None], sin[positions].float()[:, None]  # the kernel looks them up
        roped = (x * cos_at + reference.rotate_half(x) * sin_at).to(torch.bfloat16)
        store = (lambda t: quantize_kv(t, algo, scale)) if algo else (lambda t: t)
        slots = torch.arange(rows, device=device)
        expected_keys[slots, :, positions] = store(roped[:, heads : heads + kv_heads])
        expected_values[slots, :, positions] = store(qkv.reshape(rows, -1, head_size)[:, heads + kv_heads :])

        q_steps = steps_apart(q[:, :, 0], roped[:, :heads].contiguous())
        key_steps, value_steps = steps_apart(keys, expected_keys), steps_apart(values, expected_values)
        results.append(
            {
                "heads": f"{heads}/{kv_heads}x{head_size}",
                "rows": rows,
                "kv": algo or "bf16",
                "q_differing": int((q_steps > 0).sum()),
                "keys_differing": int((key_steps > 0).sum()),
                "values_differing": int((value_steps > 0).sum()),  # v is stored as it comes: 0
                "agrees": bool(q_steps.max() <= 1 and key_steps.max() <= 1 and value_steps.max() == 0),
            }
        )
    return results


def bytes_read_per_step(engine: ReferenceEngine, batch: int, kv_len: int) -> int:
    """The weights a step reads (engine.weight_bytes: the embedding table only where tied) + the KV attended."""
    return engine.weight_bytes() + batch * kv_len * engine.kv_bytes_per_token()


def replay_ms(graph) -> float:
    """One replay of `graph` between CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_replays(captured, replays: int) -> list[float]:
    """Each replay from the same inputs (a replay feeds its tokens back, one position further)."""
    tokens, positions = captured.tokens.clone(), captured.positions.clone()
    times = []
    for _ in range(replays):
        captured.tokens.copy_(tokens)  # outside the timed span
        captured.positions.copy_(positions)
        times.append(replay_ms(captured.graph))
    return times


def time_chain(runner, batch: int, max_seq_len: int, steps: int = 50, repeats: int = 4) -> float:
    """Wall time per step (ms, median of `repeats`) of `steps` steps launched as the scheduler does —
    `launch`, then `launch_next` before reading each step's tokens on the host — ending at the slot's
    last real column like the replays above. Against the bare replay time it shows what a step
    costs between graphs (the token copy to the host, the event, the graph launch)."""
    rows = [(1, max_seq_len - 1 - steps)] * batch
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        step = runner.launch(rows)
        for index in range(steps):
            following = runner.launch_next(step) if index + 1 < steps else None
            step.result()
            step = following
        times.append((time.perf_counter() - started) / steps * 1e3)
    return statistics.median(times)


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
                "chained_step_ms": round(time_chain(runner, batch, args.max_seq_len), 4),
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
        "| variant | setting | batch | step ms | implied tok/s | bytes read GB | % of copy bandwidth "
        "| chained step ms | compile+capture s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results["rows"].items():
        variant, name = key.split("/")
        for batch, b in row["batches"].items():
            lines.append(
                f"| {variant} | {name} | {batch} | {b['step_ms']:.3f} | {b['tok_s']:.1f} | {b['bytes_read_gb']:.2f} "
                f"| {b['bandwidth_pct_of_copy']:.1f} | {b.get('chained_step_ms', '')} | {b['compile_capture_s']} |"
            )
    agreement = results.get("output_projection_agreement") or []
    if agreement:
        lines.append(f"output projection kernel agrees with residual + F.linear: {all(r['agrees'] for r in agreement)}")
    timings = results.get("output_projection_timings") or []
    if timings:
        lines += [
            "| linear shape, + residual | rows | Triton GEMV µs | cuBLAS + add µs | Triton % of copy bw | cuBLAS % |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {t['linear']} | {t['rows']} | {t['triton_us']} | {t['cublas_us']} "
            f"| {t['triton_pct_of_copy']} | {t['cublas_pct_of_copy']} |"
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
    failing = [r for r in attention if not r["fp8_codes_identical"]]
    print(
        f"decode attention's FP8 codes = quantized output: {len(attention) - len(failing)}/{len(attention)}",
        failing[:2],
    )
    if "fp8" in args.variants:
        results["fp8_kernel_agreement"] = agreement = fp8_kernel_agreement()
        worst = max(agreement, key=lambda r: r["triton_max_rel_err"])
        print(f"FP8 Triton kernel vs exact: worst relative error {worst}", flush=True)
        results["fp8_stacked_agreement"] = stacked = fp8_stacked_agreement()
        print(f"FP8 stacked linear (two weight scales) vs exact: {stacked}", flush=True)
    if {"fused_rope_kv", "inductor_rope_kv"} & set(args.settings):
        results["rope_kv_agreement"] = rope_kv = rope_kv_agreement()
        for row in rope_kv:
            print("RoPE + KV write kernel vs eager:", row, flush=True)
    if set(RESIDUAL_LINEAR_SETTINGS) & set(args.settings):
        results["output_projection_agreement"] = agreement = output_projection_agreement()
        worst = max(agreement, key=lambda r: r["kernel_max_rel_err"] - 2 * r["unfused_max_rel_err"])
        print(f"output projection kernel vs unfused: all agree {all(r['agrees'] for r in agreement)}, worst {worst}")
        results["output_projection_timings"] = output_projection_timings(results["copy_bandwidth_gb_s"])
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
