"""ModelOpt recipe helpers shared by calibration, the alpha search and the per-token rewrite.

A module of their own, so calibrate, alpha_search and smoothquant_per_token import these (and each
other) at the top, one way, instead of through function-level imports that hid a circle.
"""

from __future__ import annotations

import torch

CALIBRATION_BATCH_SIZE = 4  # windows per forward: bounded memory, few Python round trips


def kv_cache_quant_cfg(kv_cache: str) -> list[dict]:
    """ModelOpt quant_cfg entries for the K/V outputs (`*[kv]_bmm_quantizer`); ModelOpt 0.47 ships
    FP8_KV_CFG, and INT8 is the same entry with 8 integer bits (TRT-LLM's INT8 KV cache)."""
    if kv_cache == "none":
        return []
    num_bits = {"int8": 8, "fp8": (4, 3)}[kv_cache]
    return [{"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": num_bits, "axis": None}}]


def make_forward_loop(calibration_ids: torch.Tensor, batch_size: int = CALIBRATION_BATCH_SIZE):
    """The callable ModelOpt calls with the model to collect activation statistics."""

    def forward_loop(model) -> None:
        with torch.no_grad():
            for start in range(0, calibration_ids.shape[0], batch_size):
                model(input_ids=calibration_ids[start : start + batch_size], use_cache=False)

    return forward_loop


def quantized_linears(model) -> list[tuple[str, torch.nn.Module]]:
    from modelopt.torch.quantization.utils import is_quantized_linear

    return [
        (name, module)
        for name, module in model.named_modules()
        if is_quantized_linear(module)
        and module.input_quantizer.is_enabled
        and hasattr(module.input_quantizer, "_amax")
    ]
