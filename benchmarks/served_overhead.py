"""Served vs in-process overhead of the reference engine on this machine (not a test).

Builds the SmolLM2 smoke engine (embedded GGUF → SmoothQuant per-token, 8 × 64 calibration tokens →
reference build), then runs the same seeded workload twice through `python -m foundry.bench`: in
process, and behind `python -m foundry.bench.server` (runtime.served_by foundry_server: the path
a trtllm-serve engine takes). Prints TTFT / TPOT p50 and output tok/s for both.

    .venv/bin/python benchmarks/served_overhead.py [--work DIR] [--concurrency 1] [--num-requests 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_smoke_engine(work: Path) -> tuple[Path, Path]:
    from transformers import AutoTokenizer

    from foundry import data
    from foundry.builders.reference import ReferenceBuilder
    from foundry.calibrate import calibrate_to_trtllm_checkpoint
    from foundry.checkpoint import ingest_checkpoint, source_fingerprint
    from foundry.config import BuildConfig, CalibrationConfig, CheckpointSource

    hf_dir, engine_dir = work / "hf", work / "engine"
    if not engine_dir.is_dir():
        source = CheckpointSource(kind="embedded")
        ingest_checkpoint(source, hf_dir, source_fingerprint(source))
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        windows = data.token_windows(data.builtin_documents("calibration"), tokenizer, 8, 64, "calibration")
        calibration = CalibrationConfig(alpha=0.6, activation_scaling="per_token")
        calibrate_to_trtllm_checkpoint(hf_dir, calibration, windows.input_ids, work / "ckpt")
        ReferenceBuilder().build(work / "ckpt", engine_dir, BuildConfig(max_seq_len=512))
    return hf_dir, engine_dir


def bench(engine_dir: Path, tokenizer: Path, out: Path, served_by: str, args) -> dict:
    argv = [
        sys.executable,
        "-m",
        "foundry.bench",
        "--engine-dir",
        str(engine_dir),
        "--tokenizer",
        str(tokenizer),
        "--served-by",
        served_by,
        "--concurrency",
        *map(str, args.concurrency),
        "--num-requests",
        str(args.num_requests),
        "--warmup-requests",
        "2",
        "--input-len",
        "64",
        "128",
        "--output-len",
        "32",
        "32",
        "--no-telemetry",
        "--out",
        str(out),
    ]
    subprocess.run(argv, cwd=ROOT, check=True)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "foundry-served-overhead")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--num-requests", type=int, default=16)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    hf_dir, engine_dir = build_smoke_engine(args.work)
    reports = {
        mode: bench(engine_dir, hf_dir, args.work / mode, mode, args) for mode in ("in_process", "foundry_server")
    }
    print(f"{'served by':<16}{'level':>8}{'TTFT p50 ms':>13}{'TPOT p50 ms':>13}{'out tok/s':>11}")
    for mode, report in reports.items():
        for level in report["levels"]:
            print(
                f"{mode:<16}{level['concurrency']:>8}{level['ttft']['p50_ms']:>13.2f}{level['tpot']['p50_ms']:>13.2f}"
                f"{level['output_token_throughput_tok_s']:>11.1f}"
            )


if __name__ == "__main__":
    main()
