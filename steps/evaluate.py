from typing import Annotated

import numpy as np
import torch
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.artifacts import EngineArtifact, HFCheckpoint
from foundry.builders import load_engine
from foundry.quality import QualityReport, evaluate_quality, render_quality_html
from foundry.runtime.hf import HFEngine


@step
def evaluate_engine_quality(
    engine: EngineArtifact, checkpoint: HFCheckpoint, evaluation_windows: np.ndarray, data_lineage: dict
) -> tuple[Annotated[QualityReport, "quality_report"], Annotated[HTMLString, "quality_report_html"]]:
    """The engine against the unquantized HF model on held-out windows (never calibration data)."""
    report = evaluate_quality(
        engine=load_engine(engine.path),
        reference=HFEngine.load(checkpoint.path),
        eval_ids=torch.from_numpy(evaluation_windows),
        eval_data_hash=data_lineage["evaluation_data_hash"],
    )
    log_metadata(
        metadata={
            "quality": {
                "perplexity_ratio": report.perplexity_ratio,
                "mean_kld": report.mean_kld,
                "top1_agreement": report.top1_agreement,
                "reference_perplexity": report.reference_perplexity,
                "engine_perplexity": report.engine_perplexity,
            }
        }
    )
    return report, HTMLString(render_quality_html(report))
