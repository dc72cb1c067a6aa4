from typing import Annotated

from transformers import AutoTokenizer
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry import data, data_validation
from foundry.artifacts import HFCheckpoint
from foundry.config import CalibrationConfig


@step
def validate_calibration_data(
    checkpoint: HFCheckpoint, calibration: CalibrationConfig, calibration_data_fingerprint: str
) -> tuple[Annotated[dict, "calibration_data_validation"], Annotated[HTMLString, "calibration_data_validation_html"]]:
    """Great Expectations suite over the raw calibration documents. The result is always saved (with
    its HTML); `prepare_data` refuses to continue when it failed, so no calibration runs.
    `calibration_data_fingerprint` (the data's SHA-256) is an input so that it enters the cache key."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    documents = data.load_documents(calibration.source, calibration.path, calibration.field, calibration.hf_split)
    evaluation_paragraphs = data.builtin_evaluation_paragraph_hashes()
    frame = data_validation.documents_frame(documents, tokenizer, evaluation_paragraphs)
    result = data_validation.validate_calibration_documents(
        frame,
        tokens_needed=calibration.calibration_windows_needed * calibration.seq_len,
        max_duplicate_rate=calibration.max_duplicate_rate,
        min_text_chars=calibration.min_text_chars,
        max_text_chars=calibration.max_text_chars,
    )
    log_metadata(metadata={"calibration_data_validation": result.as_metadata()})
    return result.to_dict(), HTMLString(data_validation.render_validation_html(result))
