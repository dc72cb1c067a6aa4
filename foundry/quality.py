"""Quality of an engine against the unquantized model on held-out text.

Teacher-forced, where the engine gives logits (in process): perplexity ratio, mean KL divergence
KL(P_unquantized || P_engine) and top-1 agreement, per next-token position, as llama.cpp's
`perplexity --kl-divergence` reports them. Aggregate perplexity hides changed answers, so the gates
look at all three. For every engine, also through its server: the generation-based set of
foundry/generation_quality.py, and task accuracy where tasks are configured (foundry/task_accuracy.py). The unquantized model's own perplexity is always measured (the sanity gate).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from foundry.errors import FoundryError
from foundry.generation_quality import GenerationQuality, render_generation_html
from foundry.runtime.base import Engine
from foundry.task_accuracy import TaskAccuracyReport, render_tasks_html


class QualityReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    engine_backend: str
    unquantized_backend: str
    num_samples: int
    seq_len: int
    num_scored_tokens: int
    unquantized_perplexity: float
    # Teacher-forced: None when the engine runs behind a server (no logits to compare).
    engine_perplexity: float | None
    perplexity_ratio: float | None  # engine / unquantized; 1.0 = no loss
    mean_kld: float | None  # nats per token, KL(P_unquantized || P_engine)
    top1_agreement: float | None  # fraction of positions where both pick the same next token
    eval_data_hash: str
    served_by: str = "in-process"
    engine_content_hash: str | None = None  # the engine these numbers were measured on
    generation: GenerationQuality | None = None
    # The production engine (champion) scored on the same windows in the same pass, when it runs in process.
    champion_pair: PairedQuality | None = None
    champion_quality_note: str | None = None  # why the champion's quality was not re-measured
    # Task accuracy through lm-evaluation-harness (evaluation.tasks): the engine as it serves vs the unquantized model.
    tasks: TaskAccuracyReport | None = None


class PairedQuality(BaseModel):
    """This run's engine (the challenger) and the production engine (the champion), each against the
    same unquantized model on the same held-out windows: per-window values for intervals, and the
    positions where only one of them agrees with the unquantized model's top-1 (McNemar's discordant pairs)."""

    model_config = ConfigDict(frozen=True)

    champion_backend: str
    champion_engine_content_hash: str | None = None
    num_windows: int
    num_positions: int
    challenger_window_kld: list[float]  # mean KLD per window, nats/token
    champion_window_kld: list[float]
    challenger_window_top1: list[float]  # top-1 agreement per window (fraction)
    champion_window_top1: list[float]
    champion_only_top1: int  # positions where only the champion picks the unquantized model's top-1
    challenger_only_top1: int
    champion_perplexity_ratio: float
    champion_mean_kld: float
    champion_top1_agreement: float


QualityReport.model_rebuild()


class _Totals:
    def __init__(self) -> None:
        self.unquantized_nll = 0.0
        self.engine_nll = 0.0
        self.kld = 0.0
        self.agree = 0
        self.tokens = 0
        self.window_kld: list[float] = []
        self.window_top1: list[float] = []
        self.agree_mask: torch.Tensor | None = None  # [positions]: the last batch's top-1 agreement, flattened

    def add(self, unquantized_logits: torch.Tensor, engine_logits: torch.Tensor, targets: torch.Tensor) -> None:
        unquantized_logp = F.log_softmax(unquantized_logits.double(), dim=-1)
        eng_logp = F.log_softmax(engine_logits.double(), dim=-1)
        index = targets.unsqueeze(-1)
        self.unquantized_nll -= unquantized_logp.gather(-1, index).sum().item()
        self.engine_nll -= eng_logp.gather(-1, index).sum().item()
        kld = (unquantized_logp.exp() * (unquantized_logp - eng_logp)).sum(-1)  # [windows, positions]
        agree = unquantized_logp.argmax(-1) == eng_logp.argmax(-1)
        self.kld += kld.sum().item()
        self.agree += agree.sum().item()
        self.tokens += targets.numel()
        self.window_kld += kld.mean(-1).tolist()
        self.window_top1 += agree.double().mean(-1).tolist()
        self.agree_mask = agree.reshape(-1)


def _check_finite(logits: torch.Tensor, backend: str) -> None:
    if not torch.isfinite(logits).all():
        raise FoundryError(f"{backend} produced NaN/Inf logits on the evaluation data; the engine is broken")


def evaluate_quality(
    engine: Engine | None,
    unquantized: Engine,
    eval_ids: torch.Tensor,
    eval_data_hash: str,
    batch_size: int = 4,
    engine_backend: str | None = None,
    champion: Engine | None = None,
) -> QualityReport:
    """Score `engine` against `unquantized` on [num_samples, seq_len] token windows. With no in-process
    engine (it runs behind a server) only the unquantized model's perplexity is measured here. `champion`:
    the production engine, scored in the same pass on the same windows (`champion_pair`)."""
    if eval_ids.dim() != 2 or eval_ids.shape[1] < 2:
        raise FoundryError(f"evaluation windows must be [num_samples, seq_len >= 2], got {tuple(eval_ids.shape)}")
    if champion is not None and engine is None:
        raise FoundryError("the champion is compared only with an engine that gives logits in process")
    totals, champion_totals = _Totals(), _Totals()
    champion_only = challenger_only = 0
    for start in range(0, eval_ids.shape[0], batch_size):
        batch = eval_ids[start : start + batch_size]
        unquantized_logits = unquantized.logits(batch)[:, :-1]
        _check_finite(unquantized_logits, unquantized.backend)
        engine_logits = unquantized_logits
        if engine is not None:
            engine_logits = engine.logits(batch)[:, :-1]
            _check_finite(engine_logits, engine.backend)
        totals.add(unquantized_logits, engine_logits, batch[:, 1:])
        if champion is not None:
            champion_logits = champion.logits(batch)[:, :-1]
            _check_finite(champion_logits, champion.backend)
            champion_totals.add(unquantized_logits, champion_logits, batch[:, 1:])
            champion_only += (champion_totals.agree_mask & ~totals.agree_mask).sum().item()
            challenger_only += (totals.agree_mask & ~champion_totals.agree_mask).sum().item()
    unquantized_ppl = math.exp(totals.unquantized_nll / totals.tokens)
    engine_ppl = math.exp(totals.engine_nll / totals.tokens)
    teacher_forced = engine is not None
    champion_pair = None
    if champion is not None:
        champion_pair = PairedQuality(
            champion_backend=champion.backend,
            num_windows=eval_ids.shape[0],
            num_positions=totals.tokens,
            challenger_window_kld=totals.window_kld,
            champion_window_kld=champion_totals.window_kld,
            challenger_window_top1=totals.window_top1,
            champion_window_top1=champion_totals.window_top1,
            champion_only_top1=int(champion_only),
            challenger_only_top1=int(challenger_only),
            champion_perplexity_ratio=math.exp(champion_totals.engine_nll / champion_totals.tokens) / unquantized_ppl,
            champion_mean_kld=champion_totals.kld / champion_totals.tokens,
            champion_top1_agreement=champion_totals.agree / champion_totals.tokens,
        )
    return QualityReport(
        engine_backend=engine.backend if engine is not None else (engine_backend or "served"),
        unquantized_backend=unquantized.backend,
        num_samples=eval_ids.shape[0],
        seq_len=eval_ids.shape[1],
        num_scored_tokens=totals.tokens,
        unquantized_perplexity=unquantized_ppl,
        engine_perplexity=engine_ppl if teacher_forced else None,
        perplexity_ratio=engine_ppl / unquantized_ppl if teacher_forced else None,
        mean_kld=totals.kld / totals.tokens if teacher_forced else None,
        top1_agreement=totals.agree / totals.tokens if teacher_forced else None,
        eval_data_hash=eval_data_hash,
        champion_pair=champion_pair,
    )


def _fmt(value: float | None, spec: str) -> str:
    return "— (served: no logits)" if value is None else format(value, spec)


def render_quality_html(report: QualityReport) -> str:
    rows = [
        (
            "engine",
            f"{report.engine_backend}",
            f"served by {report.served_by}; engine {(report.engine_content_hash or '?')[:16]}",
        ),
        ("unquantized perplexity", f"{report.unquantized_perplexity:.3f}", report.unquantized_backend),
        ("engine perplexity", _fmt(report.engine_perplexity, ".3f"), "teacher-forced"),
        ("perplexity ratio (engine / unquantized)", _fmt(report.perplexity_ratio, ".4f"), ""),
        ("mean KL divergence (nats/token)", _fmt(report.mean_kld, ".4f"), ""),
        ("top-1 agreement", _fmt(report.top1_agreement, ".2%"), ""),
        ("scored tokens", f"{report.num_scored_tokens} ({report.num_samples} × {report.seq_len - 1})", ""),
        ("evaluation data hash", report.eval_data_hash[:16] + "…", "held out from calibration"),
    ]
    body = "".join(f"<tr><td>{a}</td><td><b>{b}</b></td><td>{c}</td></tr>" for a, b, c in rows)
    return (
        "<html><body style='font-family:sans-serif'><h2>Quality: engine vs unquantized model</h2>"
        "<table border='1' cellpadding='6' style='border-collapse:collapse'>"
        f"<tr><th>metric</th><th>value</th><th>note</th></tr>{body}</table>"
        + (render_generation_html(report.generation) if report.generation else "")
        + (render_tasks_html(report.tasks) if report.tasks else "")
        + "</body></html>"
    )
