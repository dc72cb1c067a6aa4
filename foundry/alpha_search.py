"""SmoothQuant alpha search with the activation statistics collected once.

The statistics SmoothQuant needs (per-input-channel activation abs-max of every linear) do not
depend on alpha. So: one ModelOpt max-calibration pass with per-channel input quantizers (the
exact pass `mtq.quantize(..., INT8_SMOOTHQUANT_CFG)` runs first), then, for each candidate alpha, a
copy of that calibrated model is smoothed analytically with ModelOpt's own formula and helper
(`s_j = max|W_:,j|^(1-α) / max|X_j|^α` multiplies the input, `apply_pre_quant_scale_and_smooth`
divides the weight and re-calibrates the weight quantizer), and scored against the unquantized
model on held-out calibration windows (mean KL divergence, top-1 agreement, perplexity — the
evaluation set is never touched). The chosen alpha's model is the one exported, so the checkpoint
is ModelOpt's; tests/test_alpha_search.py proves it equals `mtq.quantize` with that alpha tensor
for tensor.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch

from foundry.errors import FoundryError
from foundry.hashing import sha256_json
from foundry.modelopt_recipes import kv_cache_quant_cfg, make_forward_loop, quantized_linears
from foundry.quality import evaluate_quality
from foundry.smoothquant_per_token import PerTokenActivations, resmooth_gate_and_up

SCORING_BATCH_SIZE = 4


def split_calibration_windows(windows: torch.Tensor, num_statistics_windows: int) -> tuple[torch.Tensor, torch.Tensor]:
    if windows.shape[0] < num_statistics_windows:
        raise FoundryError(
            f"calibration_windows: {windows.shape[0]} windows, but calibration.num_samples is {num_statistics_windows}"
        )
    return windows[:num_statistics_windows], windows[num_statistics_windows:]


def per_channel_max_config(kv_cache: str = "none") -> dict:
    """INT8_SMOOTHQUANT_CFG's quantizers with plain max calibration and per-channel input amax:
    exactly the statistics pass ModelOpt's `smoothquant` runs before smoothing."""
    import modelopt.torch.quantization as mtq

    config = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    entries = [entry for entry in config["quant_cfg"] if entry.get("quantizer_name") == "*input_quantizer"]
    if len(entries) != 1 or "cfg" not in entries[0]:
        raise FoundryError(
            "ModelOpt's INT8_SMOOTHQUANT_CFG has no single '*input_quantizer' entry; pin nvidia-modelopt 0.47"
        )
    entries[0]["cfg"] = {**entries[0]["cfg"], "axis": -1}
    config["quant_cfg"] = list(config["quant_cfg"]) + kv_cache_quant_cfg(kv_cache)
    config["algorithm"] = "max"
    return config


def collect_statistics(model, calibration_ids: torch.Tensor, kv_cache: str = "none"):
    """One forward pass over the statistics windows; returns the model with per-channel input amax."""
    import modelopt.torch.quantization as mtq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(model, per_channel_max_config(kv_cache), make_forward_loop(calibration_ids))
    if not quantized_linears(model):
        raise FoundryError("ModelOpt calibrated no linear layer; the model has nothing SmoothQuant can smooth")
    return model


@torch.no_grad()
def smooth_in_place(model, alpha: float) -> None:
    """ModelOpt 0.47 `smoothquant`'s per-linear postprocess, applied to a statistics-calibrated model."""
    from modelopt.torch.quantization.model_calib import apply_pre_quant_scale_and_smooth

    if not 0.0 <= alpha <= 1.0:
        raise FoundryError(f"calibration.alpha: {alpha} is outside [0, 1]")
    for name, module in quantized_linears(model):
        quantizer = module.input_quantizer
        if quantizer.axis != -1 or quantizer.amax is None or quantizer.amax.numel() <= 1:
            raise FoundryError(f"{name}: input statistics are not per-channel; run collect_statistics first")
        act_amax = quantizer.amax.float()
        weight_scale = module.weight.abs().amax(dim=0, keepdim=True)
        device, dtype = module.weight.device, module.weight.dtype
        scale = (weight_scale.pow(1 - alpha) / act_amax.pow(alpha)).squeeze()
        quantizer._amax_for_smoothing = act_amax.cpu()
        quantizer.reset_amax()
        quantizer.axis = None
        quantizer.amax = act_amax.amax().to(dtype=dtype, device=device)
        epsilon = 1.0 / (1 << 31)
        if scale.min() <= epsilon:
            scale[act_amax <= epsilon] = 1
        scale = scale.clamp(min=1e-4, max=1e4)
        apply_pre_quant_scale_and_smooth(module, scale)


class ModelLogits:
    """An HF causal LM as a foundry Engine for scoring (`logits` only)."""

    def __init__(self, model, backend: str):
        self.model, self.backend = model, backend

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(input_ids=input_ids, use_cache=False).logits.float()


class CachedLogits:
    """The unquantized model's logits computed once per batch and reused for every alpha."""

    def __init__(self, engine):
        self.engine, self.backend, self._cache = engine, engine.backend, {}

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        key = input_ids.numpy().tobytes()
        if key not in self._cache:
            self._cache[key] = self.engine.logits(input_ids)
        return self._cache[key]


@dataclass
class AlphaSweep:
    rows: list[
        dict
    ]  # alpha, mean_kld, top1_agreement, perplexity, perplexity_ratio, smoothing_seconds, scoring_seconds
    best_alpha: float
    num_statistics_windows: int
    num_held_out_windows: int
    seq_len: int
    held_out_windows_hash: str
    unquantized_perplexity: float
    statistics_seconds: float
    unquantized_seconds: float
    sweep_seconds: float = 0.0
    criterion: str = "lowest mean KL divergence vs the unquantized model on held-out calibration windows"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def score_alphas(
    model,
    statistics_ids: torch.Tensor,
    held_out_ids: torch.Tensor,
    alphas: list[float],
    kv_cache: str = "none",
    per_token: bool = False,
) -> tuple[AlphaSweep, object]:
    """Collect statistics once (in place on `model`), score every alpha; returns the sweep and the
    smoothed fake-quant model of the best alpha (ready for ModelOpt's export). `per_token`: each
    candidate gets the shared gate/up smoothing and is scored with per-token activation scales,
    the numerics of TensorRT-LLM's per-token SmoothQuant checkpoint."""
    if held_out_ids.ndim != 2 or held_out_ids.shape[0] < 1 or held_out_ids.shape[1] < 2:
        raise FoundryError(
            f"alpha search: need held-out calibration windows [n >= 1, seq_len >= 2], got {tuple(held_out_ids.shape)}; "
            "raise calibration.held_out_fraction"
        )
    if not alphas:
        raise FoundryError("calibration.alpha: no candidate alpha to search")
    started = time.perf_counter()
    unquantized = CachedLogits(ModelLogits(model, "hf-fp32"))
    for start in range(0, held_out_ids.shape[0], SCORING_BATCH_SIZE):
        unquantized.logits(held_out_ids[start : start + SCORING_BATCH_SIZE])
    unquantized_seconds = time.perf_counter() - started

    started = time.perf_counter()
    collect_statistics(model, statistics_ids, kv_cache)
    statistics_seconds = time.perf_counter() - started

    held_out_hash = sha256_json(held_out_ids.tolist())
    rows, best_model, best_kld, unquantized_perplexity = [], None, math.inf, math.nan
    for alpha in alphas:
        started = time.perf_counter()
        candidate = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smooth_in_place(candidate, alpha)
            if per_token:
                resmooth_gate_and_up(candidate)
        smoothing_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with PerTokenActivations(candidate) if per_token else contextlib.nullcontext():
            report = evaluate_quality(
                ModelLogits(candidate, "modelopt-fake-quant"),
                unquantized,
                held_out_ids,
                held_out_hash,
                SCORING_BATCH_SIZE,
            )
        unquantized_perplexity = report.unquantized_perplexity
        rows.append(
            {
                "alpha": float(alpha),
                "mean_kld": report.mean_kld,
                "top1_agreement": report.top1_agreement,
                "perplexity": report.engine_perplexity,
                "perplexity_ratio": report.perplexity_ratio,
                "smoothing_seconds": round(smoothing_seconds, 3),
                "scoring_seconds": round(time.perf_counter() - started, 3),
            }
        )
        if report.mean_kld < best_kld:
            best_kld, best_model = report.mean_kld, candidate
        else:
            del candidate
    best = min(rows, key=lambda row: row["mean_kld"])
    sweep = AlphaSweep(
        rows=rows,
        best_alpha=best["alpha"],
        num_statistics_windows=int(statistics_ids.shape[0]),
        num_held_out_windows=int(held_out_ids.shape[0]),
        seq_len=int(held_out_ids.shape[1]),
        held_out_windows_hash=held_out_hash,
        unquantized_perplexity=unquantized_perplexity,
        statistics_seconds=round(statistics_seconds, 3),
        unquantized_seconds=round(unquantized_seconds, 3),
    )
    return sweep, best_model


def render_sweep_svg(sweep: AlphaSweep) -> str:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    alphas = [row["alpha"] for row in sweep.rows]
    figure = Figure(figsize=(6.4, 3.4))
    axis = figure.add_subplot(1, 1, 1)
    axis.plot(alphas, [row["mean_kld"] for row in sweep.rows], "o-", color="tab:blue", label="mean KLD (nats/token)")
    axis.axvline(sweep.best_alpha, color="tab:green", linestyle="--", label=f"chosen alpha {sweep.best_alpha:g}")
    axis.set_xlabel("SmoothQuant alpha")
    axis.set_ylabel("mean KLD vs fp32", color="tab:blue")
    second = axis.twinx()
    second.plot(
        alphas, [row["top1_agreement"] for row in sweep.rows], "s:", color="tab:orange", label="top-1 agreement"
    )
    second.set_ylabel("top-1 agreement", color="tab:orange")
    axis.legend(loc="upper center", fontsize=8)
    axis.set_title("Alpha sweep on held-out calibration windows", fontsize=10)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]


def render_sweep_html(sweep: AlphaSweep) -> str:
    chosen_style = " style='background:#e8f5e9;font-weight:bold'"
    rows = "".join(
        f"<tr{chosen_style if row['alpha'] == sweep.best_alpha else ''}>"
        f"<td>{row['alpha']:g}</td><td>{row['mean_kld']:.4f}</td><td>{row['top1_agreement']:.2%}</td>"
        f"<td>{row['perplexity']:.3f}</td><td>{row['perplexity_ratio']:.4f}</td></tr>"
        for row in sweep.rows
    )
    return (
        "<h2>SmoothQuant alpha sweep</h2>"
        f"<p>Chosen alpha <b>{sweep.best_alpha:g}</b> ({sweep.criterion}). Statistics collected once on "
        f"{sweep.num_statistics_windows} windows ({sweep.statistics_seconds:.1f} s); each alpha scored on "
        f"{sweep.num_held_out_windows} held-out calibration windows × {sweep.seq_len} tokens; fp32 perplexity "
        f"{sweep.unquantized_perplexity:.3f}. Total sweep {sweep.sweep_seconds:.1f} s.</p>"
        "<table border='1' cellpadding='5' style='border-collapse:collapse'>"
        "<tr><th>alpha</th><th>mean KLD</th><th>top-1 agreement</th><th>perplexity</th><th>perplexity ratio</th></tr>"
        f"{rows}</table>{render_sweep_svg(sweep)}"
    )
