"""int8_sq with per-tensor (static) vs per-token (dynamic) activation scales on SmolLM2-135M-Instruct:
the same data, the same alpha, the same evaluation windows as configs/default.yaml; quality of the
reference backend running each exported TensorRT-LLM checkpoint against the unquantized HF model.

    python benchmarks/per_token_quality.py [--alpha 0.9] [--num-samples 64] [--seq-len 256] [--eval-samples 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--eval-seq-len", type=int, default=256)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from foundry.calibrate import calibrate_to_trtllm_checkpoint
    from foundry.checkpoint import embedded_gguf_path, ingest_checkpoint, source_fingerprint
    from foundry.config import CalibrationConfig, CheckpointSource
    from foundry.data import builtin_documents, token_windows
    from foundry.quality import evaluate_quality
    from foundry.runtime.hf import HFEngine
    from foundry.runtime.reference import ReferenceEngine

    work = Path(tempfile.mkdtemp(prefix="per-token-quality-"))
    hf_dir = work / "hf"
    source = CheckpointSource(kind="gguf", path=str(embedded_gguf_path()))
    ingest_checkpoint(source, hf_dir, source_fingerprint(source))
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    calibration_ids = token_windows(
        builtin_documents("calibration"), tokenizer, args.num_samples, args.seq_len, "calibration"
    ).input_ids
    evaluation = token_windows(
        builtin_documents("evaluation"), tokenizer, args.eval_samples, args.eval_seq_len, "evaluation"
    )
    unquantized = HFEngine.load(hf_dir)
    results = {}
    for scaling in ("per_tensor", "per_token"):
        started = time.perf_counter()
        calibration = CalibrationConfig(alpha=args.alpha, activation_scaling=scaling)
        summary = calibrate_to_trtllm_checkpoint(hf_dir, calibration, calibration_ids, work / scaling)
        engine = ReferenceEngine.load(work / scaling)
        report = evaluate_quality(engine, unquantized, evaluation.input_ids, "benchmark")
        results[scaling] = {
            "quant_algo": summary["quant_algo"],
            "perplexity_ratio": round(report.perplexity_ratio, 4),
            "mean_kld": round(report.mean_kld, 4),
            "top1_agreement": round(report.top1_agreement, 4),
            "calibrate_and_score_seconds": round(time.perf_counter() - started, 1),
        }
    print(
        json.dumps(
            {
                "alpha": args.alpha,
                "calibration_windows": args.num_samples,
                "seq_len": args.seq_len,
                "evaluation_windows": args.eval_samples,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
