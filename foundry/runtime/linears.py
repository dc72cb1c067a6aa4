"""The reference runtime's linear layers, one per TensorRT-LLM quantization mode, on CPU and CUDA.

Every class computes the checkpoint's quantization semantics exactly (the same integer codes on
both devices); only the GEMM kernel differs by device:
* float: `F.linear` in the compute dtype.
* W8A8 SmoothQuant (per-tensor and per-token): int8 × int8 → int32 with exact accumulation —
  `torch._int_mm` on CPU (oneDNN), foundry's Triton kernel on CUDA (`scaled_gemm.py`: cuBLAS int8 is
  slower than bf16 on Hopper and refuses fewer than 17 rows, and decode feeds 1).
* FP8: emulated in float32 on CPU (no FP8 GEMM there); on CUDA a real E4M3 × E4M3 GEMM with the
  checkpoint's static scales, fp32 accumulation: `torch._scaled_mm` from 16 rows, foundry's Triton
  kernel (`scaled_gemm.py`) below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foundry.runtime.kv_pool import INT8_MAX, e4m3_codes
from foundry.runtime.scaled_gemm import fp8_matmul_scaled, int8_matmul_scaled

SCALED_MM_ROW_MULTIPLE = 16  # cuBLASLt FP8 GEMMs want rows in multiples of 16
# Fewer rows than this (decode at small batch) go to foundry's Triton FP8 kernel instead of
# `torch._scaled_mm`, which would read the weight for 16 padded rows (docs/gpu-engine.md).
FP8_TRITON_BELOW_ROWS = 16


class FloatLinear:
    """y = x W^T with the weight held in the compute dtype."""

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype):
        self.weight = weight.to(compute_dtype).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class SmoothQuantLinear:
    """TensorRT-LLM W8A8_SQ_PER_CHANNEL: int8 weights with a per-output-channel scale, activations
    smoothed by `prequant_scaling_factor`, then quantized per tensor with a static scale.

    y = (round(x * s_pre / s_act) ∘ W_int8^T) * s_act * s_w, with the rounding and clamp of
    ModelOpt's fake quantizer (round half to even, clamp to ±127) so parity with it holds.
    On the 2-core CI CPU the int8 GEMM beat fp32 over dequantized weights (SmolLM2 128-token
    prefill 188 vs 352 ms); on CUDA it runs foundry's Triton kernel with the scaling fused.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype):
        weight = tensors[f"{name}.weight"]
        self.weight_int8 = weight.contiguous()  # [out, in]
        self.in_features = weight.shape[1]
        self.prequant_scale = tensors[f"{name}.prequant_scaling_factor"].float()
        self.activation_scale = tensors[f"{name}.activation_scaling_factor"].float().reshape(())
        self.inverse_activation_scale = 1.0 / self.activation_scale
        # act scale × weight scale, applied once to the int32 accumulator
        self.output_scale = (
            (self.activation_scale * tensors[f"{name}.weights_scaling_factor"].float()).reshape(-1).contiguous()
        )
        self.compute_dtype = compute_dtype

    def quantize_activation(self, x: torch.Tensor) -> torch.Tensor:
        smoothed = x.float() * self.prequant_scale
        scaled = smoothed * self.inverse_activation_scale
        return scaled.round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        leading_shape = x.shape[:-1]
        x_int8 = self.quantize_activation(x).reshape(-1, self.in_features)
        y = int8_matmul_scaled(x_int8, self.weight_int8, None, self.output_scale, self.compute_dtype)
        return y.reshape(*leading_shape, -1)


class SmoothQuantPerTokenLinear:
    """TensorRT-LLM W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN (tensorrt_llm/quantization/layers.py):
    int8 weights with `per_channel_scale`; the input, divided by `smoother` where the layer has one
    (dense, proj; qkv/fc/gate have theirs folded into the preceding norm), is quantized per token
    at run time: s_t = amax(|x_t|) / 127 (amax floored at 1e-6 like the kernel), round to nearest
    even, saturate to ±127. y = (q ∘ W_int8^T) · s_t · s_w, on the same int8 GEMM as above."""

    AMAX_FLOOR = 1e-6

    def __init__(self, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype):
        weight = tensors[f"{name}.weight"]
        self.weight_int8 = weight.contiguous()
        self.in_features = weight.shape[1]
        smoother = tensors.get(f"{name}.smoother")
        self.inverse_smoother = None if smoother is None else (1.0 / smoother.float()).reshape(-1)
        self.weight_scale = tensors[f"{name}.per_channel_scale"].float().reshape(-1).contiguous()
        self.compute_dtype = compute_dtype

    def quantize_activation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, per-token scale [..., 1])."""
        x = x.float()
        if self.inverse_smoother is not None:
            x = x * self.inverse_smoother
        token_scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=self.AMAX_FLOOR) / INT8_MAX
        return (x / token_scale).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), token_scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        leading_shape = x.shape[:-1]
        x_int8, token_scale = self.quantize_activation(x)
        y = int8_matmul_scaled(
            x_int8.reshape(-1, self.in_features),
            self.weight_int8,
            token_scale.reshape(-1),
            self.weight_scale,
            self.compute_dtype,
        )
        return y.reshape(*leading_shape, -1)


class Fp8Linear:
    """TensorRT-LLM FP8 (ModelOpt FP8_DEFAULT_CFG): E4M3 weight with a per-tensor scale, activations
    cast to E4M3 with a static per-tensor scale. y = (fp8(x / s_a) · fp8(W)^T) · s_a · s_w.
    Several such layers that share their input and activation scale (fc and gate, fused on CUDA)
    can be one GEMM: `stacked` stacks their weights by rows, each block keeping its own s_w.
    CPU: emulated in float32 (E4M3 values are exact there; matches an FP8 GEMM with float32
    accumulation up to summation order). CUDA: foundry's Triton kernel below 16 rows (one scale
    per output column), `torch._scaled_mm` from 16, per-tensor on each block."""

    def __init__(
        self,
        weight: torch.Tensor,
        activation_scale: torch.Tensor,
        block_scales: list[tuple[int, torch.Tensor]],
        compute_dtype: torch.dtype,
    ):
        """weight [N, K]; block_scales: (rows, per-tensor weight scale) of each row block, summing to N."""
        self.on_cuda = weight.is_cuda
        # CUDA keeps the E4M3 codes (1 byte each); the CPU emulation holds them as float32, exactly.
        self.weight = weight.to(torch.float8_e4m3fn).contiguous() if self.on_cuda else weight.float()
        self.activation_scale = activation_scale.float().reshape(())
        self.blocks = [(rows, scale.float().reshape(())) for rows, scale in block_scales]
        self.column_scale = torch.cat([(self.activation_scale * scale).expand(rows) for rows, scale in self.blocks])
        self.compute_dtype = compute_dtype

    @classmethod
    def from_checkpoint(cls, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype) -> "Fp8Linear":
        return cls.stacked(tensors, [name], compute_dtype)

    @classmethod
    def stacked(cls, tensors: dict[str, torch.Tensor], names: list[str], compute_dtype: torch.dtype) -> "Fp8Linear":
        """The layers `names` (one activation scale between them) as one GEMM over their stacked weights."""
        weights = [tensors[f"{name}.weight"] for name in names]
        blocks = [(w.shape[0], tensors[f"{name}.weights_scaling_factor"]) for name, w in zip(names, weights)]
        weight = weights[0] if len(weights) == 1 else torch.cat(weights)
        return cls(weight, tensors[f"{names[0]}.activation_scaling_factor"], blocks, compute_dtype)

    def quantize_activation(self, x: torch.Tensor) -> torch.Tensor:
        """E4M3 codes of x (float8_e4m3fn)."""
        return e4m3_codes(x, self.activation_scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x in the compute dtype, or already its E4M3 codes (CUDA decode attention writes them for the
        output projection: decode_attention.py)."""
        codes = x if x.dtype == torch.float8_e4m3fn else self.quantize_activation(x)
        if not self.on_cuda:
            return (F.linear(codes.float(), self.weight) * self.column_scale).to(self.compute_dtype)
        leading_shape = codes.shape[:-1]
        rows = codes.reshape(-1, codes.shape[-1])
        if rows.shape[0] < FP8_TRITON_BELOW_ROWS:
            y = fp8_matmul_scaled(rows, self.weight, self.column_scale, self.compute_dtype)
        else:
            y = self._scaled_mm(rows)
        return y.reshape(*leading_shape, -1)

    def _scaled_mm(self, rows: torch.Tensor) -> torch.Tensor:
        padded = (-rows.shape[0]) % SCALED_MM_ROW_MULTIPLE
        if padded:
            rows = F.pad(rows.view(torch.int8), (0, 0, 0, padded)).view(torch.float8_e4m3fn)
        outputs, start = [], 0
        for block_rows, weight_scale in self.blocks:  # row blocks of the weight: contiguous, per-tensor scaled
            block = self.weight[start : start + block_rows]
            outputs.append(
                torch._scaled_mm(
                    rows, block.t(), scale_a=self.activation_scale, scale_b=weight_scale, out_dtype=self.compute_dtype
                )
            )
            start += block_rows
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        return y[: y.shape[0] - padded]
