"""Quality metrics against hand-computed values, with small engines whose logits are known."""

import math

import pytest
import torch
import torch.nn.functional as F

from foundry.errors import FoundryError
from foundry.quality import evaluate_quality, render_quality_html

VOCAB = 5


class TableEngine:
    """Logits depend only on the current token: row `table[token]` (a bigram model)."""

    def __init__(self, table: torch.Tensor, backend: str):
        self.table, self.backend = table, backend

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]

    def generate(self, input_ids, max_new_tokens, on_token=None):  # not used by the quality metrics
        raise NotImplementedError


@pytest.fixture
def windows():
    return torch.tensor([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 1]])


def test_identical_engines_score_perfectly(windows):
    table = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(0))
    report = evaluate_quality(TableEngine(table, "a"), TableEngine(table.clone(), "b"), windows, "hash", batch_size=1)
    assert report.perplexity_ratio == pytest.approx(1.0)
    assert report.mean_kld == pytest.approx(0.0, abs=1e-12)
    assert report.top1_agreement == 1.0
    assert report.num_scored_tokens == 10


def test_metrics_match_a_hand_computation(windows):
    generator = torch.Generator().manual_seed(1)
    unquantized_table = torch.randn(VOCAB, VOCAB, generator=generator)
    engine_table = unquantized_table + 0.5 * torch.randn(VOCAB, VOCAB, generator=generator)
    report = evaluate_quality(TableEngine(engine_table, "eng"), TableEngine(unquantized_table, "unq"), windows, "h")

    inputs, targets = windows[:, :-1].reshape(-1), windows[:, 1:].reshape(-1)
    unquantized_logp = F.log_softmax(unquantized_table[inputs].double(), -1)
    eng_logp = F.log_softmax(engine_table[inputs].double(), -1)
    unquantized_ppl = math.exp(-unquantized_logp[range(len(targets)), targets].mean().item())
    eng_ppl = math.exp(-eng_logp[range(len(targets)), targets].mean().item())
    kld = (unquantized_logp.exp() * (unquantized_logp - eng_logp)).sum(-1).mean().item()
    agree = (unquantized_logp.argmax(-1) == eng_logp.argmax(-1)).double().mean().item()

    assert report.unquantized_perplexity == pytest.approx(unquantized_ppl)
    assert report.engine_perplexity == pytest.approx(eng_ppl)
    assert report.perplexity_ratio == pytest.approx(eng_ppl / unquantized_ppl)
    assert report.mean_kld == pytest.approx(kld)
    assert report.top1_agreement == pytest.approx(agree)
    assert report.mean_kld > 0 and report.engine_backend == "eng" and report.unquantized_backend == "unq"
    html = render_quality_html(report)
    assert f"{report.perplexity_ratio:.4f}" in html and "held out" in html


def test_nan_logits_are_refused_naming_the_backend(windows):
    table = torch.randn(VOCAB, VOCAB)
    broken = table.clone()
    broken[2, 3] = float("nan")
    with pytest.raises(FoundryError, match="broken-engine produced NaN"):
        evaluate_quality(TableEngine(broken, "broken-engine"), TableEngine(table, "unq"), windows, "h")


def test_windows_must_be_two_dimensional():
    table = torch.randn(VOCAB, VOCAB)
    with pytest.raises(FoundryError, match="num_samples, seq_len"):
        evaluate_quality(TableEngine(table, "a"), TableEngine(table, "b"), torch.tensor([1, 2, 3]), "h")
