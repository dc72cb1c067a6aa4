from typing import Annotated

import numpy as np
from transformers import AutoTokenizer
from zenml import log_metadata, step

from foundry import data
from foundry.artifacts import HFCheckpoint
from foundry.config import CalibrationConfig, EvaluationConfig


@step
def prepare_data(
    checkpoint: HFCheckpoint, calibration: CalibrationConfig, evaluation: EvaluationConfig
) -> tuple[
    Annotated[np.ndarray, "calibration_windows"],
    Annotated[np.ndarray, "evaluation_windows"],
    Annotated[dict, "data_lineage"],
]:
    """Tokenize calibration and evaluation text into windows; refuse any shared document."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    calib = data.token_windows(
        data.builtin_documents("calibration"), tokenizer, calibration.num_samples, calibration.seq_len, "calibration"
    )
    held_out = data.token_windows(
        data.builtin_documents("evaluation"), tokenizer, evaluation.num_samples, evaluation.seq_len, "evaluation"
    )
    data.assert_disjoint(calib, held_out)
    lineage = {
        "calibration_data_hash": calib.documents_hash,
        "calibration_windows_hash": calib.windows_hash,
        "calibration_tokens_available": calib.tokens_available,
        "evaluation_data_hash": held_out.documents_hash,
        "evaluation_windows_hash": held_out.windows_hash,
        "evaluation_tokens_available": held_out.tokens_available,
        "source": calibration.source,
    }
    log_metadata(metadata={"data": lineage})
    return calib.input_ids.numpy(), held_out.input_ids.numpy(), lineage
