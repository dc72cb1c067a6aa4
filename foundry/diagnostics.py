"""What SmoothQuant did, per linear layer, for a reviewer: activation outliers before and after
smoothing, weight ranges before and after, and the quantization error of each linear's output.

Read from a ModelOpt SmoothQuant fake-quant model before export (the export re-smooths q/k/v and
gate/up in place): `input_quantizer._amax_for_smoothing` holds the per-channel activation abs-max
ModelOpt calibrated, `pre_quant_scale` the smoother s (x·s enters the quantizer, W/s is stored).
"""

from __future__ import annotations

import html
import io

import torch
import torch.nn.functional as F


def _outlier_ratio(per_channel: torch.Tensor) -> float:
    """max / median over channels: how far the outlier channels stand out (1 = flat)."""
    return float(per_channel.max() / per_channel.median().clamp_min(1e-12))


@torch.no_grad()
def linear_diagnostics(model, sample_ids: torch.Tensor) -> list[dict]:
    """One row per smoothed linear. The output error is measured on `sample_ids` (a held-out
    calibration window): relative MSE of the fake-quant output against the same linear in float."""
    from modelopt.torch.quantization.utils import is_quantized_linear

    # not alpha_search.quantized_linears: under PerTokenActivations the static amax is gone
    linears = [
        (name, module)
        for name, module in model.named_modules()
        if is_quantized_linear(module)
        and module.input_quantizer.is_enabled
        and getattr(module.input_quantizer, "_amax_for_smoothing", None) is not None
    ]
    errors: dict[str, float] = {}

    def hook(name):
        def record(module, args, output):
            x = args[0]
            scale = module.input_quantizer.pre_quant_scale.float()
            exact = F.linear(
                x.float() * scale, module.weight.float(), None if module.bias is None else module.bias.float()
            )
            errors[name] = float(((output.float() - exact) ** 2).mean() / (exact**2).mean().clamp_min(1e-30))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in linears]
    try:
        model(input_ids=sample_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, module in linears:
        act_before = module.input_quantizer._amax_for_smoothing.float().flatten()
        scale = module.input_quantizer.pre_quant_scale.float().flatten()
        act_after = act_before * scale
        weight_after = module.weight.float()
        weight_before = weight_after * scale[None, :]  # ModelOpt stored W / s
        rows.append(
            {
                "linear": name.removeprefix("model."),
                "activation_absmax_before": float(act_before.max()),
                "activation_absmax_after": float(act_after.max()),
                "activation_outlier_ratio_before": _outlier_ratio(act_before),
                "activation_outlier_ratio_after": _outlier_ratio(act_after),
                "weight_absmax_before": float(weight_before.abs().max()),
                "weight_absmax_after": float(weight_after.abs().max()),
                "output_relative_mse": errors.get(name, float("nan")),
            }
        )
    return rows


def headline(rows: list[dict]) -> dict:
    """A few numbers for step metadata."""
    if not rows:
        return {}
    worst = max(rows, key=lambda row: row["output_relative_mse"])
    mean = lambda key: sum(row[key] for row in rows) / len(rows)  # noqa: E731
    return {
        "num_linears": len(rows),
        "max_activation_outlier_ratio_before": max(row["activation_outlier_ratio_before"] for row in rows),
        "max_activation_outlier_ratio_after": max(row["activation_outlier_ratio_after"] for row in rows),
        "mean_output_relative_mse": mean("output_relative_mse"),
        "worst_linear": worst["linear"],
        "worst_output_relative_mse": worst["output_relative_mse"],
    }


def render_diagnostics_svg(rows: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    index = list(range(len(rows)))
    figure = Figure(figsize=(10, 8))
    panels = [
        ("activation abs-max per linear (log)", "activation_absmax_before", "activation_absmax_after", True),
        (
            "activation outlier ratio max/median over channels (log)",
            "activation_outlier_ratio_before",
            "activation_outlier_ratio_after",
            True,
        ),
        ("weight abs-max per linear (log)", "weight_absmax_before", "weight_absmax_after", True),
    ]
    for position, (title, before, after, log) in enumerate(panels, start=1):
        axis = figure.add_subplot(4, 1, position)
        axis.plot(index, [row[before] for row in rows], ".-", label="before smoothing", color="tab:red")
        axis.plot(index, [row[after] for row in rows], ".-", label="after smoothing", color="tab:blue")
        axis.set_title(title, fontsize=9)
        if log:
            axis.set_yscale("log")
        axis.legend(fontsize=7)
    axis = figure.add_subplot(4, 1, 4)
    axis.bar(index, [row["output_relative_mse"] for row in rows], color="tab:purple")
    axis.set_yscale("log")
    axis.set_title("output relative MSE of each quantized linear (fake-quant vs float)", fontsize=9)
    axis.set_xlabel("linear index (layer-major: q, k, v, o, gate, up, down)")
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.find("<svg") :]


def render_diagnostics_html(rows: list[dict]) -> str:
    worst = sorted(rows, key=lambda row: -row["output_relative_mse"])[:10]
    table = "".join(
        f"<tr><td>{html.escape(row['linear'])}</td><td>{row['activation_absmax_before']:.3g} → {row['activation_absmax_after']:.3g}</td>"
        f"<td>{row['activation_outlier_ratio_before']:.1f} → {row['activation_outlier_ratio_after']:.1f}</td>"
        f"<td>{row['weight_absmax_before']:.3g} → {row['weight_absmax_after']:.3g}</td><td>{row['output_relative_mse']:.2e}</td></tr>"
        for row in worst
    )
    return (
        "<h2>SmoothQuant diagnostics</h2><p>Per linear: activation abs-max and outlier ratio (max/median over input "
        "channels) before and after smoothing, weight abs-max before and after, and the output relative MSE of the "
        "fake-quant linear on a held-out calibration window.</p>"
        f"{render_diagnostics_svg(rows)}<h3>10 linears with the largest output error</h3>"
        "<table border='1' cellpadding='4' style='border-collapse:collapse'><tr><th>linear</th><th>activation abs-max</th>"
        f"<th>outlier ratio</th><th>weight abs-max</th><th>output rel. MSE</th></tr>{table}</table>"
    )
