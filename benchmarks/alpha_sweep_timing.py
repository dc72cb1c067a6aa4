"""Alpha sweep (statistics once, N alphas scored on held-out calibration windows) vs one fixed-alpha
calibration, same data, SmolLM2-135M-Instruct, wall seconds of calibrate_to_trtllm_checkpoint
(calibration + export). The issue's target: a sweep of 5 alphas costs at most 2x one calibration.

    python benchmarks/alpha_sweep_timing.py [--num-samples 64] [--seq-len 256] [--held-out-fraction 0.125]
        [--alphas 0.4,0.5,0.6,0.7,0.8] [--activation-scaling per_token]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--held-out-fraction", type=float, default=0.125)
    parser.add_argument("--alphas", default="0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--activation-scaling", choices=("per_tensor", "per_token"), default="per_tensor")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from foundry.calibrate import calibrate_to_trtllm_checkpoint
    from foundry.checkpoint import embedded_gguf_path, ingest_checkpoint, source_fingerprint
    from foundry.config import CalibrationConfig, CheckpointSource
    from foundry.data import builtin_documents, token_windows

    work = Path(tempfile.mkdtemp(prefix="alpha-sweep-"))
    hf_dir = work / "hf"
    source = CheckpointSource(kind="gguf", path=str(embedded_gguf_path()))
    ingest_checkpoint(source, hf_dir, source_fingerprint(source))
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    alphas = [float(a) for a in args.alphas.split(",")]
    common = dict(num_samples=args.num_samples, seq_len=args.seq_len, activation_scaling=args.activation_scaling)
    fixed = CalibrationConfig(alpha=0.8, **common)
    search = CalibrationConfig(alpha=alphas, held_out_fraction=args.held_out_fraction, **common)
    held_out = search.held_out_windows
    windows = token_windows(
        builtin_documents("calibration"), tokenizer, search.calibration_windows_needed, args.seq_len, "calibration"
    ).input_ids
    statistics_ids, held_out_ids = windows[: args.num_samples], windows[args.num_samples :]

    started = time.perf_counter()
    single = calibrate_to_trtllm_checkpoint(hf_dir, fixed, statistics_ids, work / "single")
    single_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sweep = calibrate_to_trtllm_checkpoint(hf_dir, search, statistics_ids, work / "sweep", held_out_ids=held_out_ids)
    sweep_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "torch_threads": torch.get_num_threads(),
                "activation_scaling": args.activation_scaling,
                "statistics_windows": args.num_samples,
                "held_out_windows": held_out,
                "seq_len": args.seq_len,
                "alphas": alphas,
                "single_calibration_total_seconds": round(single_seconds, 2),
                "single_calibration_seconds": single["calibration_seconds"],
                "single_export_seconds": single["export_seconds"],
                "sweep_total_seconds": round(sweep_seconds, 2),
                "sweep_calibration_seconds": sweep["calibration_seconds"],
                "sweep_export_seconds": sweep["export_seconds"],
                "sweep_over_single": round(sweep_seconds / single_seconds, 3),
                "chosen_alpha": sweep["alpha"],
                "rows": [{k: round(v, 4) for k, v in row.items()} for row in sweep["alpha_sweep"]["rows"]],
                "statistics_seconds": sweep["alpha_sweep"]["statistics_seconds"],
                "unquantized_seconds": sweep["alpha_sweep"]["unquantized_seconds"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
