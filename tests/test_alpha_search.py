"""Alpha search: statistics once, ModelOpt-identical smoothing per alpha, held-out scoring, export of
the chosen alpha; SmoothQuant diagnostics. All on the tiny random Llama (fast)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from foundry import alpha_search
from foundry.alpha_search import AlphaSweep, render_sweep_html, score_alphas
from foundry.calibrate import (
    calibrate_to_trtllm_checkpoint,
    export_trtllm_checkpoint,
    load_hf_model_fp32,
    quantize_smoothquant,
)
from foundry.config import CalibrationConfig, parse_config
from foundry.diagnostics import headline, linear_diagnostics, render_diagnostics_html
from foundry.errors import FoundryError

ALPHAS = [0.3, 0.8, 1.0]


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 49152, (6, 32), generator=generator)


@pytest.fixture(scope="module")
def sweep_export(tiny_llama_hf_dir, windows, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_sweep")
    summary = calibrate_to_trtllm_checkpoint(
        tiny_llama_hf_dir, CalibrationConfig(alpha=ALPHAS), windows[:4], out, held_out_ids=windows[4:], diagnostics=True
    )
    return out, summary


def test_config_alpha_search_spec():
    fixed = CalibrationConfig(alpha=0.8)
    assert not fixed.is_alpha_search and fixed.held_out_windows == 0 and fixed.calibration_windows_needed == 64
    ranged = CalibrationConfig(alpha={"start": 0.6, "stop": 1.0, "step": 0.1}, num_samples=64, held_out_fraction=0.125)
    assert ranged.alpha_candidates() == [0.6, 0.7, 0.8, 0.9, 1.0]
    assert ranged.held_out_windows == 8 and ranged.calibration_windows_needed == 72
    assert CalibrationConfig(alpha=[1.0, 0.5, 0.5]).alpha_candidates() == [0.5, 1.0]


def test_split_refuses_too_few_windows():
    with pytest.raises(FoundryError, match="calibration.num_samples is 8"):
        alpha_search.split_calibration_windows(torch.zeros(4, 8, dtype=torch.int64), 8)


def test_statistics_are_collected_once(tiny_llama_hf_dir, windows, monkeypatch):
    passes = []
    original = alpha_search.make_forward_loop
    monkeypatch.setattr(
        alpha_search, "make_forward_loop", lambda ids, **kw: passes.append(ids.shape) or original(ids, **kw)
    )
    sweep, _ = score_alphas(load_hf_model_fp32(tiny_llama_hf_dir), windows[:4], windows[4:], ALPHAS)
    assert passes == [torch.Size([4, 32])]
    assert [row["alpha"] for row in sweep.rows] == ALPHAS


def test_sweep_picks_the_lowest_kld_and_records_every_alpha(sweep_export):
    _, summary = sweep_export
    sweep = summary["alpha_sweep"]
    klds = {row["alpha"]: row["mean_kld"] for row in sweep["rows"]}
    assert summary["alpha"] == sweep["best_alpha"] == min(klds, key=klds.get)
    assert len(set(klds.values())) == len(ALPHAS)  # alphas really differ
    assert all(0 <= row["top1_agreement"] <= 1 and row["perplexity"] > 0 for row in sweep["rows"])
    assert (sweep["num_statistics_windows"], sweep["num_held_out_windows"]) == (4, 2)
    assert summary["alpha_candidates"] == ALPHAS
    json.dumps(summary)
    page = render_sweep_html(AlphaSweep(**sweep))
    assert "<svg" in page and page.count("<tr") == len(ALPHAS) + 1


def test_search_model_equals_modelopt_smoothquant_at_the_chosen_alpha(
    tiny_llama_hf_dir, windows, sweep_export, tmp_path
):
    """The analytic per-alpha smoothing over once-collected statistics is ModelOpt's own: the exported
    checkpoint is identical, tensor for tensor, to mtq.quantize(INT8_SMOOTHQUANT, alpha) + export."""
    out, summary = sweep_export
    model = load_hf_model_fp32(tiny_llama_hf_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_smoothquant(model, windows[:4], summary["alpha"])
    export_trtllm_checkpoint(model, tmp_path, "float16")
    searched, direct = load_file(out / "rank0.safetensors"), load_file(tmp_path / "rank0.safetensors")
    assert searched.keys() == direct.keys()
    for name in direct:
        assert torch.equal(searched[name], direct[name]), name
    assert json.loads((out / "config.json").read_text()) == json.loads((tmp_path / "config.json").read_text())


def test_search_needs_held_out_windows_and_int8_sq(tiny_llama_hf_dir, windows, tmp_path):
    with pytest.raises(FoundryError, match="held-out calibration windows"):
        calibrate_to_trtllm_checkpoint(tiny_llama_hf_dir, CalibrationConfig(alpha=ALPHAS), windows[:4], tmp_path)
    # the request itself is the config's to validate, once
    with pytest.raises(FoundryError, match="calibration: .*alpha: a search needs quantization int8_sq"):
        parse_config({"calibration": {"quantization": "fp8", "alpha": ALPHAS}})
    with pytest.raises(FoundryError, match=r"calibration.alpha.*\[0, 1\]"):
        parse_config({"calibration": {"alpha": 1.5}})


def test_diagnostics_show_smoothing_and_quantization_error(sweep_export):
    _, summary = sweep_export
    rows = summary["diagnostics"]
    assert len(rows) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert all(row["output_relative_mse"] > 0 and row["activation_absmax_before"] > 0 for row in rows)
    facts = headline(rows)
    assert facts["num_linears"] == 14 and facts["worst_output_relative_mse"] >= facts["mean_output_relative_mse"]
    page = render_diagnostics_html(rows)
    assert "<svg" in page and facts["worst_linear"] in page


def test_alpha_one_flattens_every_activation_channel(tiny_llama_hf_dir, windows):
    """s_j = max|W_j|^0 / max|X_j|^1: after smoothing every input channel's abs-max is exactly 1, so
    the outlier ratio is 1 — the migration the diagnostics must show."""
    model = load_hf_model_fp32(tiny_llama_hf_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alpha_search.collect_statistics(model, windows[:4])
        alpha_search.smooth_in_place(model, 1.0)
    rows = linear_diagnostics(model, windows[4:5])
    assert all(row["activation_outlier_ratio_after"] == pytest.approx(1.0, abs=1e-5) for row in rows)
    assert max(row["activation_outlier_ratio_before"] for row in rows) > 1.5
