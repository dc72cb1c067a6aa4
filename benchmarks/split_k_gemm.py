"""Experiment, not shipped: split-K for the FP8 decode GEMMs that leave SMs idle (run19), on a GPU.

    python benchmarks/split_k_gemm.py --out OUT [--rows 1 16] [--kinds fp8 int8]

Why: at one row the shipped tensor-core kernel (scaled_gemm.py) reads the FP8 qkv at 70 % and the
output projection at 62 % of copy bandwidth on an H100, against 83–90 % for the two large MLP GEMMs
(docs/gpu-results/run19_*). With 32-column tiles the output projection is 128 programs on 132
SMs, each reading a whole 32 × 4096 slice alone. Here each column tile's K range is split over
SPLIT_K programs; each stores its float32 (or int32) partial sums, and the last of them to finish
(an atomic counter per tile, reset by that program) adds the partials in split order — one kernel,
no memset, the same result whichever program finishes last — and applies the scales as the shipped
kernel does. int8 stays exact (int32 partials).

Per (kind, linear shape, rows): agreement with the shipped kernel (int8 bit-identical, FP8 against
float64 beside the shipped kernel's error), then µs per call for the shipped kernel and each
(SPLIT_K, BLOCK_N, BLOCK_K, warps) in one CUDA graph over weight copies > 4 × L2, as
benchmarks/decode_step_variants.py times the output projection. Results: OUT/split_k_gemm.json/.md.
If a configuration wins at the small shapes, the kernel belongs in scaled_gemm.py (with a counter
buffer per engine rather than this module's one) and decode_step_variants.py should time the step.
Needs torch with Triton (CUDA). The logic also runs in Triton's interpreter (TRITON_INTERPRET=1) on
CPU tensors with int8 and fp16 operands (random_codes' "fp16"; no PDL there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_step_variants import DECODE_LINEAR_SHAPES, _graph_time_us  # noqa: E402

from foundry.runtime import pdl, scaled_gemm  # noqa: E402

L2_MULTIPLE_BYTES = 400_000_000  # > 4 × the L2 of an H100 (50 MB) or H200 (60 MB)
MAX_TILES = 1 << 14  # counters: one per column tile of the widest GEMM


@triton.jit
def _split_k_kernel(
    a_ptr,
    w_ptr,
    out_ptr,
    row_scale_ptr,
    col_scale_ptr,
    partial_ptr,
    counter_ptr,
    M,
    N,
    K,
    stride_am,
    stride_wn,
    stride_om,
    k_per_split,
    HAS_ROW_SCALE: tl.constexpr,
    HAS_COL_SCALE: tl.constexpr,
    FLOAT_ACC: tl.constexpr,
    PDL: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    if PDL:
        tl.extra.cuda.gdc_wait()
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = split * k_per_split
    offs_k = k_start + tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # a [BLOCK_K, BLOCK_N] tile of Wᵀ
    acc_type = tl.float32 if FLOAT_ACC else tl.int32
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_type)
    k_stop = tl.minimum(K, k_start + k_per_split)
    for k in range(0, tl.cdiv(k_stop - k_start, BLOCK_K)):
        k_left = k_stop - k_start - k * BLOCK_K
        a_mask = (offs_m[:, None] < M) & (tl.arange(0, BLOCK_K)[None, :] < k_left)
        w_mask = (offs_n[None, :] < N) & (tl.arange(0, BLOCK_K)[:, None] < k_left)
        if FLOAT_ACC:
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
            w = tl.load(w_ptrs, mask=w_mask, other=0.0)
        else:
            a = tl.load(a_ptrs, mask=a_mask, other=0)
            w = tl.load(w_ptrs, mask=w_mask, other=0)
        accumulator = tl.dot(a, w, accumulator, out_dtype=acc_type)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    tile_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tile = offs_m[:, None] * N + offs_n[None, :]
    tl.store(partial_ptr + split * M * N + tile, accumulator, mask=tile_mask)
    tl.debug_barrier()  # every thread's partial is written before the counter says so
    finished = tl.atomic_add(counter_ptr + pid_n, 1, sem="acq_rel")
    if finished == SPLIT_K - 1:  # the last program of this tile: sum in split order (deterministic)
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_type)
        for part in range(0, SPLIT_K):
            total += tl.load(partial_ptr + part * M * N + tile, mask=tile_mask, other=0, cache_modifier=".cg")
        y = scaled_gemm.scale_epilogue(
            total, row_scale_ptr, col_scale_ptr, offs_m, offs_n, M, N, HAS_ROW_SCALE, HAS_COL_SCALE
        )
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=tile_mask)
        tl.atomic_xchg(counter_ptr + pid_n, 0)  # ready for the next call (graph replays included)
    if PDL:  # every input is read (the last program has summed the partials)
        tl.extra.cuda.gdc_launch_dependents()


_counters: dict[torch.device, torch.Tensor] = {}


def split_k_matmul(a, w, row_scale, col_scale, out_dtype, split_k, block_n=32, block_k=256, num_warps=4, stages=4):
    """scaled_gemm.triton_matmul_scaled's contract for M ≤ 16 rows, K split over `split_k` programs."""
    M, K = a.shape
    N = w.shape[0]
    if M > 16 or triton.cdiv(N, block_n) > MAX_TILES:
        raise ValueError(f"split_k_matmul serves up to 16 rows and {MAX_TILES} column tiles")
    a = a.contiguous()  # the kernel steps along K one element at a time
    counters = _counters.get(a.device)
    if counters is None:  # zeroed once; each tile's last program resets its counter
        counters = _counters[a.device] = torch.zeros(MAX_TILES, dtype=torch.int32, device=a.device)
    out = torch.empty((M, N), dtype=out_dtype, device=a.device)
    float_acc = a.dtype != torch.int8
    partial = torch.empty((split_k, M, N), dtype=torch.float32 if float_acc else torch.int32, device=a.device)
    k_per_split = triton.cdiv(triton.cdiv(K, split_k), block_k) * block_k
    programmatic = pdl.enabled(a.device)
    _split_k_kernel[(triton.cdiv(N, block_n), split_k)](
        a,
        w,
        out,
        row_scale if row_scale is not None else a,
        col_scale if col_scale is not None else a,
        partial,
        counters,
        M,
        N,
        K,
        a.stride(0),
        w.stride(0),
        out.stride(0),
        k_per_split,
        HAS_ROW_SCALE=row_scale is not None,
        HAS_COL_SCALE=col_scale is not None,
        FLOAT_ACC=float_acc,
        PDL=programmatic,
        SPLIT_K=split_k,
        BLOCK_M=16,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=num_warps,
        num_stages=stages,
        launch_pdl=programmatic,
    )
    return out


def random_codes(kind: str, shape: tuple[int, int], device) -> torch.Tensor:
    values = torch.randn(shape, device=device)
    if kind == "int8":
        return (values * 40).round().clamp(-127, 127).to(torch.int8)
    if kind == "fp16":  # the interpreter's check (its E4M3 conversions are not exact)
        return (values * 0.05).half()
    return (values * 60).clamp(-448, 448).to(torch.float8_e4m3fn)


def operands(kind: str, rows: int, n: int, k: int, device) -> dict:
    return {
        "a": random_codes(kind, (rows, k), device),
        "row_scale": torch.rand(rows, device=device) if kind == "int8" else None,
        "col_scale": torch.rand(n, device=device) * 1e-3,
        "out_dtype": torch.bfloat16 if kind != "fp16" else torch.float32,
    }


def shipped(w, ops):
    return scaled_gemm.triton_matmul_scaled(ops["a"], w, ops["row_scale"], ops["col_scale"], ops["out_dtype"])


def exact(w, ops):
    y = ops["a"].double() @ w.double().t()
    if ops["row_scale"] is not None:
        y = y * ops["row_scale"].double()[:, None]
    return y * ops["col_scale"].double()


def agreement(kind: str, rows: int, n: int, k: int, split_k: int, device, reference=shipped) -> dict:
    w = random_codes(kind, (n, k), device)
    ops = operands(kind, rows, n, k, device)
    ours = split_k_matmul(ops["a"], w, ops["row_scale"], ops["col_scale"], ops["out_dtype"], split_k)
    theirs = reference(w, ops)
    if kind == "int8":
        return {"bit_identical_to_shipped": bool(torch.equal(ours, theirs))}
    expected = exact(w, ops)
    error = float((ours.double() - expected).abs().max() / expected.abs().max())
    shipped_error = float((theirs.double() - expected).abs().max() / expected.abs().max())
    return {
        "max_rel_err": error,
        "shipped_max_rel_err": shipped_error,
        "agrees": error <= max(2 * shipped_error, 2**-8),
    }


def timings(kind: str, rows: int, n: int, k: int) -> dict:
    count = max(2, -(-L2_MULTIPLE_BYTES // (n * k)))
    weights = [random_codes(kind, (n, k), "cuda") for _ in range(count)] * 4
    ops = operands(kind, rows, n, k, "cuda")
    found = {"shipped_us": round(_graph_time_us([lambda w=w: shipped(w, ops) for w in weights]), 2), "split_k": []}
    for split_k, block_n, block_k, warps in itertools.product((2, 4, 8), (16, 32, 64), (128, 256), (4,)):
        if k // split_k < block_k:
            continue
        try:
            us = _graph_time_us(
                [
                    lambda w=w: split_k_matmul(
                        ops["a"],
                        w,
                        ops["row_scale"],
                        ops["col_scale"],
                        ops["out_dtype"],
                        split_k,
                        block_n,
                        block_k,
                        warps,
                    )
                    for w in weights
                ]
            )
            found["split_k"].append({"split_k": split_k, "block_n": block_n, "block_k": block_k, "us": round(us, 2)})
        except Exception as error:  # a configuration the compiler refuses: recorded
            found["split_k"].append(
                {"split_k": split_k, "block_n": block_n, "block_k": block_k, "failed": repr(error)[:200]}
            )
    found["split_k"].sort(key=lambda r: r.get("us", float("inf")))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", default=["fp8", "int8"], choices=["fp8", "int8"])
    parser.add_argument("--rows", type=int, nargs="+", default=[1], choices=range(1, 17))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {
        "device": torch.cuda.get_device_name(0),
        "command": "python benchmarks/split_k_gemm.py " + " ".join(sys.argv[1:]),
        "rows": [],
    }
    for kind, (name, n, k), rows in itertools.product(args.kinds, DECODE_LINEAR_SHAPES, args.rows):
        row = {"kind": kind, "linear": name, "rows": rows}
        row["agreement"] = {s: agreement(kind, rows, n, k, s, "cuda") for s in (2, 4, 8)}
        row.update(timings(kind, rows, n, k))
        results["rows"].append(row)
        best = row["split_k"][0] if row["split_k"] else {}
        print(kind, name, rows, "shipped", row["shipped_us"], "best split-K", best, row["agreement"], flush=True)
        (args.out / "split_k_gemm.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| kind | linear | rows | shipped µs | best split-K µs | its config | agrees |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        best = row["split_k"][0] if row["split_k"] else {}
        lines.append(
            f"| {row['kind']} | {row['linear']} | {row['rows']} | {row['shipped_us']} | {best.get('us')} "
            f"| { ({key: best[key] for key in ('split_k', 'block_n', 'block_k') if key in best}) } | {row['agreement']} |"
        )
    (args.out / "split_k_gemm.md").write_text(f"{results['device']}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
