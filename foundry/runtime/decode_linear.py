"""A decode step's linears that feed the residual, plus the residual, as one Triton GEMV (CUDA).

The GEMM is scaled_gemm.py's Triton kernel (float operands, no scales) with its residual epilogue.
Which linears: reference.TRITON_RESIDUAL_LINEARS — the attention output projection ("dense") and
the MLP's down projection ("proj"). In the compiled bf16 decode step cuBLAS took the 4096 × 4096
output projection at 1–32 rows in ~20 µs for 33.5 MB on an H100 (~55 % of copy bandwidth;
docs/gpu-results/run10_profiles), with a memset and a split-K reduction beside it; here narrow N
tiles give every SM a slice of the weight, and the residual add rides in the epilogue
(out = residual + round(x · Wᵀ), rounded as the unfused `x + dense(...)` is). On an H100 the step
went 6.240 → 6.149 ms with "dense", → 6.025 with "proj" too (run18).

Tried and measured slower, so not here: the same kernel taking the RMSNorm, the SiLU·mul and the
FP8 / int8 activation quantization as prologues (run16: the prologue's loads are not pipelined with
the weight's; e.g. the down proj with SiLU·mul 133 µs against cuBLAS's 44 µs). Float weights only;
the quantized layers keep scaled_gemm.py. No CPU form: the CPU runs `x + linear(inputs)`, which
this must equal (checked on a GPU by decode_step_variants.py's `output_projection_agreement`, at
every decode linear's shape).
"""

from __future__ import annotations

import torch

from foundry.runtime import scaled_gemm
from foundry.runtime.linears import FloatLinear

MAX_ROWS = 64  # decode batches; more rows (prefill) keep cuBLAS


def serves(x: torch.Tensor, linear) -> bool:
    """Can the kernel run this linear on x ([rows, features])?"""
    return (
        scaled_gemm.triton is not None
        and x.is_cuda
        and x.shape[0] <= MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and isinstance(linear, FloatLinear)
    )


# A custom op: torch.compile and CUDA-graph capture see one opaque kernel (dynamo cannot trace the
# Triton autotuner), its output shape from the fake implementation.
@torch.library.custom_op("foundry::linear_plus_residual", mutates_args=())
def linear_plus_residual_cuda(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """residual [M, N] + x [M, K] · weight [N, K]ᵀ, all in the compute dtype, on CUDA."""
    if scaled_gemm.triton is None:
        raise RuntimeError("the decode GEMV + residual kernel needs Triton (it ships with CUDA builds of torch)")
    return scaled_gemm.triton_matmul_scaled(x, weight, None, None, x.dtype, residual=residual.contiguous())


@linear_plus_residual_cuda.register_fake
def _linear_plus_residual_shape(x, weight, residual):
    return residual.new_empty(residual.shape)
