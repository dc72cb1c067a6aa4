from typing import Annotated

import numpy as np
from transformers import AutoTokenizer
from zenml import log_metadata, step

from foundry import data
from foundry.artifacts import HFCheckpoint
from foundry.config import CalibrationConfig, EvaluationConfig
from foundry.data_validation import DataValidationResult, raise_on_failure


@step
def prepare_data(
    checkpoint: HFCheckpoint,
    calibration: CalibrationConfig,
    evaluation: EvaluationConfig,
    calibration_data_validation: dict,
    calibration_data_fingerprint: str,
) -> tuple[
    Annotated[np.ndarray, "calibration_windows"],
    Annotated[np.ndarray, "evaluation_windows"],
    Annotated[dict, "data_lineage"],
]:
    """Tokenize validated calibration text and held-out evaluation text into windows.

    Refuses to run when the Great Expectations suite failed (so nothing is calibrated) and refuses
    any document shared between calibration and evaluation. `calibration_data_fingerprint` (the
    data's SHA-256) is an input so that a rewritten file is re-read instead of served from the cache. The calibration windows are
    `num_samples` statistics windows followed by the alpha search's held-out windows, if any.
    """
    raise_on_failure(
        DataValidationResult.from_dict(calibration_data_validation), f"calibration data ({calibration.source})"
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    documents = data.clean_documents(
        data.load_documents(calibration.source, calibration.path, calibration.field, calibration.hf_split)
    )
    num_windows = calibration.calibration_windows_needed
    calib = data.token_windows(documents, tokenizer, num_windows, calibration.seq_len, "calibration")
    held_out = data.token_windows(
        data.builtin_documents("evaluation"), tokenizer, evaluation.num_samples, evaluation.seq_len, "evaluation"
    )
    data.assert_disjoint(calib, held_out)
    lineage = {
        "calibration_data_hash": calib.documents_hash,
        "calibration_data_fingerprint": calibration_data_fingerprint,
        "calibration_windows_hash": calib.windows_hash,
        "calibration_tokens_available": calib.tokens_available,
        "calibration_statistics_windows": calibration.num_samples,
        "calibration_held_out_windows": calibration.held_out_windows,
        "evaluation_data_hash": held_out.documents_hash,
        "evaluation_windows_hash": held_out.windows_hash,
        "evaluation_tokens_available": held_out.tokens_available,
        "source": calibration.source,
        "source_path": calibration.path,
    }
    log_metadata(metadata={"data": lineage})
    return calib.input_ids.numpy(), held_out.input_ids.numpy(), lineage
