from typing import Annotated

import numpy as np
import torch
from zenml import log_metadata, step

from foundry.artifacts import HFCheckpoint, TrtllmCheckpoint
from foundry.calibrate import calibrate_to_trtllm_checkpoint
from foundry.config import CalibrationConfig
from foundry.state import scratch_dir
from materializers import ModelDirectoryMaterializer


@step(output_materializers=ModelDirectoryMaterializer)
def calibrate_checkpoint(
    checkpoint: HFCheckpoint, calibration_windows: np.ndarray, calibration: CalibrationConfig
) -> Annotated[TrtllmCheckpoint, "trtllm_checkpoint"]:
    """SmoothQuant (ModelOpt) calibration → TensorRT-LLM checkpoint (config.json + rank0.safetensors)."""
    out = scratch_dir("trtllm-checkpoint")
    summary = calibrate_to_trtllm_checkpoint(
        hf_checkpoint_dir=checkpoint.path,
        calibration_ids=torch.from_numpy(calibration_windows),
        output_dir=out,
        quantization=calibration.quantization,
        alpha=calibration.alpha,
        export_dtype=calibration.export_dtype,
    )
    result = TrtllmCheckpoint(path=out, scratch=True)
    result.seal({"calibration": summary, "source_checkpoint": checkpoint.content_hash})
    log_metadata(metadata={"calibration": summary})
    return result
