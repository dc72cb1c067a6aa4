from typing import Annotated

import numpy as np
import torch
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry import alpha_search, diagnostics
from foundry.artifacts import HFCheckpoint, TrtllmCheckpoint
from foundry.calibrate import calibrate_to_trtllm_checkpoint
from foundry.config import CalibrationConfig
from foundry.state import scratch_dir
from materializers import ModelDirectoryMaterializer


def _report_html(summary: dict) -> str:
    parts = [
        "<html><body style='font-family:sans-serif'>",
        f"<h2>Calibration: {summary['quantization']} (KV cache {summary['kv_cache']}, tp {summary['tp_size']})</h2>",
        f"<p>quant_algo <b>{summary['quant_algo']}</b>, kv_cache_quant_algo <b>{summary['kv_cache_quant_algo']}</b>, "
        f"alpha <b>{summary['alpha']}</b>, {summary['num_samples']} × {summary['seq_len']} statistics tokens, "
        f"calibration {summary['calibration_seconds']} s, export {summary['export_seconds']} s, ModelOpt {summary['modelopt_version']}.</p>",
    ]
    if "alpha_sweep" in summary:
        parts.append(alpha_search.render_sweep_html(alpha_search.AlphaSweep(**summary["alpha_sweep"])))
    if summary.get("diagnostics"):
        parts.append(diagnostics.render_diagnostics_html(summary["diagnostics"]))
    parts.append("</body></html>")
    return "".join(parts)


@step(output_materializers={"trtllm_checkpoint": ModelDirectoryMaterializer})
def calibrate_checkpoint(
    checkpoint: HFCheckpoint, calibration_windows: np.ndarray, calibration: CalibrationConfig
) -> tuple[Annotated[TrtllmCheckpoint, "trtllm_checkpoint"], Annotated[HTMLString, "calibration_report"]]:
    """ModelOpt calibration (SmoothQuant with an optional alpha search, FP8, INT4-AWQ or none, KV-cache
    quantization, tensor parallelism) → TensorRT-LLM checkpoint, plus the sweep and diagnostics page.
    The request was checked against the backend and this checkpoint's metadata by resolve_source."""
    statistics_ids, held_out_ids = alpha_search.split_calibration_windows(
        torch.from_numpy(calibration_windows), calibration.num_samples
    )
    out = scratch_dir("trtllm-checkpoint")
    summary = calibrate_to_trtllm_checkpoint(
        checkpoint.path,
        calibration,
        statistics_ids,
        out,
        held_out_ids=held_out_ids if calibration.is_alpha_search else None,
        diagnostics=calibration.quantization == "int8_sq",
    )
    rows = summary.pop("diagnostics", None)
    report = _report_html({**summary, "diagnostics": rows})
    result = TrtllmCheckpoint(path=out, scratch=True)
    sealed = {k: v for k, v in summary.items() if k != "alpha_sweep"}
    result.seal({"calibration": sealed, "source_checkpoint": checkpoint.content_hash})
    metadata = {"calibration": sealed}
    if "alpha_sweep" in summary:
        sweep = summary["alpha_sweep"]
        metadata["alpha_sweep"] = {
            "chosen_alpha": sweep["best_alpha"],
            "table": {
                f"alpha={row['alpha']:g}": {k: row[k] for k in ("mean_kld", "top1_agreement", "perplexity")}
                for row in sweep["rows"]
            },
            "statistics_seconds": sweep["statistics_seconds"],
            "sweep_seconds": sweep["sweep_seconds"],
            "held_out_windows": sweep["num_held_out_windows"],
        }
    if rows:
        metadata["calibration_diagnostics"] = diagnostics.headline(rows)
    log_metadata(metadata=metadata)
    return result, HTMLString(report)
