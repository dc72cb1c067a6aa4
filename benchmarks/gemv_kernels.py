"""Decode-shaped GEMMs (1–4 rows) on a GPU: scaled_gemm.py's CUDA-core GEMV kernel against its
tensor-core kernel (and cuBLAS for bf16), per Llama-3.1-8B decode linear, per weight kind.

    python benchmarks/gemv_kernels.py --out OUT [--kinds fp8 int8 bf16] [--rows 1 2 4] [--sweep]

What it answers: how close each kernel comes to the weight read a decode step must pay. Every call
is timed inside one CUDA graph over weight copies that together exceed the L2 cache four times, so
weights come from HBM as in a real step; the figure is µs per call and the weight bytes over it as
a share of this card's device-to-device copy bandwidth. Agreement first, per shape and row count:
E4M3 and bf16 against float64 of the same codes (relative error, beside the tensor-core kernel's),
int8 bit-identical to the tensor-core kernel (both sum exact int32 products).
With --sweep, every GEMV config (BLOCK_N, BLOCK_K, warps, stages) is timed at each shape (FP8 only;
the autotuner's choice is in the main table): which tiles feed this card best.
Results: OUT/gemv_kernels.json and .md. Needs torch (with Triton) only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_step_variants import DECODE_LINEAR_SHAPES, _graph_time_us  # noqa: E402
from gpu_bench import copy_bandwidth_gb_s  # noqa: E402

from foundry.runtime import scaled_gemm  # noqa: E402

L2_MULTIPLE_BYTES = 400_000_000  # > 4 × the L2 of an H100 (50 MB) or H200 (60 MB)
TORCH_DTYPES = {"fp8": torch.float8_e4m3fn, "int8": torch.int8, "bf16": torch.bfloat16}


def random_codes(kind: str, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    values = torch.randn(shape, device="cuda", generator=generator)
    if kind == "int8":
        return (values * 40).round().clamp(-127, 127).to(torch.int8)
    if kind == "fp8":
        return (values * 60).clamp(-448, 448).to(torch.float8_e4m3fn)
    return (values * 0.02).to(torch.bfloat16)


def operands(kind: str, rows: int, n: int, k: int, generator: torch.Generator) -> dict:
    """The kernels' arguments apart from the weight: activations, scales, output dtype."""
    scaled = kind != "bf16"
    return {
        "a": random_codes(kind, (rows, k), generator) if scaled else torch.randn(rows, k, device="cuda").bfloat16(),
        "row_scale": torch.rand(rows, device="cuda", generator=generator) if kind == "int8" else None,
        "col_scale": torch.rand(n, device="cuda", generator=generator) * 1e-3 if scaled else None,
        "out_dtype": torch.bfloat16,
    }


def tensor_core(w: torch.Tensor, ops: dict) -> torch.Tensor:
    saved, scaled_gemm.GEMV_MAX_ROWS = scaled_gemm.GEMV_MAX_ROWS, 0
    try:
        return scaled_gemm.triton_matmul_scaled(ops["a"], w, ops["row_scale"], ops["col_scale"], ops["out_dtype"])
    finally:
        scaled_gemm.GEMV_MAX_ROWS = saved


def gemv(w: torch.Tensor, ops: dict, config: dict | None = None) -> torch.Tensor:
    return scaled_gemm.triton_gemv_scaled(
        ops["a"], w, ops["row_scale"], ops["col_scale"], ops["out_dtype"], config=config
    )


def exact(w: torch.Tensor, ops: dict) -> torch.Tensor:
    y = ops["a"].double() @ w.double().t()
    if ops["row_scale"] is not None:
        y = y * ops["row_scale"].double()[:, None]
    return y if ops["col_scale"] is None else y * ops["col_scale"].double()


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected).abs().max() / expected.abs().max())


def agreement(kind: str, rows: int, n: int, k: int, generator: torch.Generator) -> dict:
    w = random_codes(kind, (n, k), generator)
    ops = operands(kind, rows, n, k, generator)
    ours, theirs = gemv(w, ops), tensor_core(w, ops)
    if kind == "int8":  # both kernels scale the same int32 sums in the same order
        return {"bit_identical_to_tensor_core": bool(torch.equal(ours, theirs))}
    expected = exact(w, ops)
    gemv_error, tensor_core_error = relative_error(ours, expected), relative_error(theirs, expected)
    # both round once to bf16 (2^-8 relative); the float32 sums differ only in order
    return {
        "gemv_max_rel_err": gemv_error,
        "tensor_core_max_rel_err": tensor_core_error,
        "agrees": gemv_error <= max(2 * tensor_core_error, 2**-8),
    }


def weight_copies(kind: str, n: int, k: int, generator: torch.Generator) -> list[torch.Tensor]:
    count = max(2, -(-L2_MULTIPLE_BYTES // (n * k * TORCH_DTYPES[kind].itemsize)))
    return [random_codes(kind, (n, k), generator) for _ in range(count)]


def timed(run, weights: list[torch.Tensor], weight_bytes: int, bandwidth_gb_s: float) -> dict:
    us = _graph_time_us([lambda w=w: run(w) for w in weights * 4])
    return {"us": round(us, 2), "pct_of_copy": round(100 * weight_bytes / (us * 1e-6) / 1e9 / bandwidth_gb_s, 1)}


def best_gemv_config(kind: str, rows: int, n: int, k: int) -> str:
    """The autotuner's pick for this shape (after a call has tuned it)."""
    for key, config in scaled_gemm._gemv_kernel.cache.items():
        dtypes = [part for part in key if isinstance(part, str) and part.startswith("torch.")]
        if key[:3] == (triton_rows(rows), n, k) and dtypes[:1] == [str(TORCH_DTYPES[kind])]:  # a's dtype first
            return str(config)
    return "?"


def triton_rows(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


def measure_shape(kind: str, rows: int, n: int, k: int, bandwidth_gb_s: float, generator) -> dict:
    weights = weight_copies(kind, n, k, generator)
    ops = operands(kind, rows, n, k, generator)
    weight_bytes = n * k * TORCH_DTYPES[kind].itemsize
    result = {
        "gemv": timed(lambda w: gemv(w, ops), weights, weight_bytes, bandwidth_gb_s),
        "tensor_core": timed(lambda w: tensor_core(w, ops), weights, weight_bytes, bandwidth_gb_s),
    }
    result["gemv"]["config"] = best_gemv_config(kind, rows, n, k)
    if kind == "bf16":
        a = ops["a"]
        result["cublas"] = timed(lambda w: torch.nn.functional.linear(a, w), weights, weight_bytes, bandwidth_gb_s)
    return result


def sweep(rows: int, n: int, k: int, bandwidth_gb_s: float, generator) -> list[dict]:
    weights = weight_copies("fp8", n, k, generator)
    ops = operands("fp8", rows, n, k, generator)
    found = []
    for config in scaled_gemm._gemv_configs():
        meta = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
        if rows * meta["BLOCK_N"] * meta["BLOCK_K"] > 64 * 32 * meta["num_warps"]:
            continue  # the autotuner prunes these too (register budget)
        try:
            found.append({**meta, **timed(lambda w: gemv(w, ops, meta), weights, n * k, bandwidth_gb_s)})
        except Exception as error:  # a config the compiler refuses: recorded
            found.append({**meta, "failed": repr(error)[:300]})
    return sorted(found, key=lambda r: r.get("us", float("inf")))


def table(results: dict) -> str:
    lines = [
        f"# Decode GEMMs on {results['device']} (copy bandwidth {results['copy_bandwidth_gb_s']:.0f} GB/s)",
        "",
        "| kind | linear | rows | GEMV µs (% of copy) | tensor-core µs (%) | cuBLAS µs (%) | GEMV config | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        cells = [
            f"{row[name]['us']} ({row[name]['pct_of_copy']} %)" if name in row else "–"
            for name in ("gemv", "tensor_core", "cublas")
        ]
        lines.append(
            f"| {row['kind']} | {row['linear']} | {row['rows']} | {' | '.join(cells)} | {row['gemv']['config']} "
            f"| {row['agreement']} |"
        )
    for shape, found in results.get("sweep", {}).items():
        lines += ["", f"## FP8 GEMV configs, {shape} (fastest first)", "", "```"]
        lines += [json.dumps(r) for r in found[:12]]
        lines += ["```"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", default=["fp8", "int8", "bf16"], choices=list(TORCH_DTYPES))
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4], choices=[1, 2, 3, 4])
    parser.add_argument("--sweep", action="store_true", help="time every FP8 GEMV config at one row")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device="cuda").manual_seed(0)
    results = {
        "device": torch.cuda.get_device_name(0),
        "copy_bandwidth_gb_s": copy_bandwidth_gb_s(),
        "command": "python benchmarks/gemv_kernels.py " + " ".join(sys.argv[1:]),
        "rows": [],
    }

    def save() -> None:
        (args.out / "gemv_kernels.json").write_text(json.dumps(results, indent=1))
        (args.out / "gemv_kernels.md").write_text(table(results) + "\n")

    for kind, (name, n, k), rows in itertools.product(args.kinds, DECODE_LINEAR_SHAPES, args.rows):
        row = {"kind": kind, "linear": name, "rows": rows, "agreement": agreement(kind, rows, n, k, generator)}
        row.update(measure_shape(kind, rows, n, k, results["copy_bandwidth_gb_s"], generator))
        results["rows"].append(row)
        print(row, flush=True)
        save()
    if args.sweep:
        results["sweep"] = {}
        for name, n, k in DECODE_LINEAR_SHAPES:
            results["sweep"][f"{name} {n}x{k}"] = found = sweep(1, n, k, results["copy_bandwidth_gb_s"], generator)
            print(name, found[:3], flush=True)
            save()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
