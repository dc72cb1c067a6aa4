"""Split-K for the decode GEMMs that leave SMs idle (scaled_gemm.py), kernel by kernel, on a GPU.

    python benchmarks/split_k_gemm.py --out OUT [--rows 1 16] [--kinds fp8 int8]

Why: at one row the tensor-core kernel without split-K read the FP8 qkv at 70 % and the output
projection at 62 % of copy bandwidth on an H100, against 83–90 % for the two large MLP GEMMs
(docs/gpu-results/run19_*). With 32-column tiles the output projection is 128 programs on 132
SMs, each reading a whole 32 × 4096 slice alone. scaled_gemm.py's kernel can split each column
tile's K range over SPLIT_K programs (its docstring says how the partials are added up); its
autotuner chooses split-K configurations up to scaled_gemm.SPLIT_K_MAX_ROWS rows.

Per (kind, linear shape, rows): agreement of every split with the kernel unsplit (int8
bit-identical, FP8 against float64 beside the unsplit kernel's error), then µs per call — the
autotuner without split-K, the autotuner with it (and the configuration it chose), and each
(SPLIT_K, BLOCK_N, BLOCK_K) configuration — in one CUDA graph over weight copies > 4 × L2, as
benchmarks/decode_step_variants.py times the output projection. Results: OUT/split_k_gemm.json/.md.
decode_step_variants.py's settings split_k / no_split_k time the whole step.
Needs torch with Triton (CUDA). The kernel also runs in Triton's interpreter (TRITON_INTERPRET=1) on
CPU tensors with int8 and fp16 operands (random_codes' "fp16"; no PDL there).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from decode_step_variants import DECODE_LINEAR_SHAPES, _graph_time_us  # noqa: E402

from foundry.runtime import scaled_gemm  # noqa: E402

L2_MULTIPLE_BYTES = 400_000_000  # > 4 × the L2 of an H100 (50 MB) or H200 (60 MB)
SPLITS = (2, 4, 8)


def config(split_k: int, block_n: int = 32, block_k: int = 256, stages: int = 4) -> dict:
    return {
        "BLOCK_M": 16,
        "BLOCK_N": block_n,
        "BLOCK_K": block_k,
        "SPLIT_K": split_k,
        "num_warps": 4,
        "num_stages": stages,
    }


@contextlib.contextmanager
def split_k_allowed(allowed: bool):
    saved = scaled_gemm.SPLIT_K_MAX_ROWS
    scaled_gemm.SPLIT_K_MAX_ROWS = saved if allowed else 0
    try:
        yield
    finally:
        scaled_gemm.SPLIT_K_MAX_ROWS = saved


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


def gemm(w, ops, config=None):
    return scaled_gemm.triton_matmul_scaled(
        ops["a"], w, ops["row_scale"], ops["col_scale"], ops["out_dtype"], config=config
    )


def unsplit(w, ops):
    return gemm(w, ops, config(1))


def exact(w, ops):
    y = ops["a"].double() @ w.double().t()
    if ops["row_scale"] is not None:
        y = y * ops["row_scale"].double()[:, None]
    return y * ops["col_scale"].double()


def agreement(kind: str, rows: int, n: int, k: int, split_k: int, device, reference=unsplit) -> dict:
    w = random_codes(kind, (n, k), device)
    ops = operands(kind, rows, n, k, device)
    ours = gemm(w, ops, config(split_k, block_k=128))
    again = gemm(w, ops, config(split_k, block_k=128))  # the counters were reset: same result
    theirs = reference(w, ops)
    if kind == "int8":
        return {
            "bit_identical_to_unsplit": bool(torch.equal(ours, theirs)),
            "repeatable": bool(torch.equal(ours, again)),
        }
    expected = exact(w, ops)
    error = float((ours.double() - expected).abs().max() / expected.abs().max())
    shipped_error = float((theirs.double() - expected).abs().max() / expected.abs().max())
    return {
        "max_rel_err": error,
        "unsplit_max_rel_err": shipped_error,
        "agrees": error <= max(2 * shipped_error, 2**-8),
        "repeatable": bool(torch.equal(ours, again)),
    }


def timings(kind: str, rows: int, n: int, k: int) -> dict:
    count = max(2, -(-L2_MULTIPLE_BYTES // (n * k)))
    weights = [random_codes(kind, (n, k), "cuda") for _ in range(count)] * 4
    ops = operands(kind, rows, n, k, "cuda")

    def time_us(config=None) -> float:
        return round(_graph_time_us([lambda w=w: gemm(w, ops, config) for w in weights]), 2)

    found = {}
    with split_k_allowed(False):
        found["autotuned_without_split_k_us"] = time_us()
    with split_k_allowed(True):
        found["autotuned_with_split_k_us"] = time_us()
        found["autotuner_chose"] = str(getattr(scaled_gemm._scaled_gemm_kernel, "best_config", None))
        found["configs"] = []
        for split_k, block_n, block_k in itertools.product((1, *SPLITS), (16, 32, 64), (128, 256)):
            if k // split_k < block_k:
                continue
            entry = {"split_k": split_k, "block_n": block_n, "block_k": block_k}
            try:
                entry["us"] = time_us(config(split_k, block_n, block_k))
            except Exception as error:  # a configuration the compiler refuses: recorded
                entry["failed"] = repr(error)[:200]
            found["configs"].append(entry)
    found["configs"].sort(key=lambda r: r.get("us", float("inf")))
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
        row["agreement"] = {s: agreement(kind, rows, n, k, s, "cuda") for s in SPLITS}
        row.update(timings(kind, rows, n, k))
        results["rows"].append(row)
        print(kind, name, rows, {key: row[key] for key in row if key != "configs"}, row["configs"][:3], flush=True)
        (args.out / "split_k_gemm.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| kind | linear | rows | autotuned, no split-K µs | autotuned with split-K µs | best config µs | its config |"
        " agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        best = row["configs"][0] if row["configs"] else {}
        lines.append(
            f"| {row['kind']} | {row['linear']} | {row['rows']} | {row['autotuned_without_split_k_us']} "
            f"| {row['autotuned_with_split_k_us']} | {best.get('us')} "
            f"| { ({key: best[key] for key in ('split_k', 'block_n', 'block_k') if key in best}) } | {row['agreement']} |"
        )
    (args.out / "split_k_gemm.md").write_text(f"{results['device']}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
