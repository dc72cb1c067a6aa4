"""The attention output projection of a decode step, plus the residual, as one Triton GEMV (CUDA).

Why this one linear: in the compiled bf16 decode step cuBLAS reads qkv, fc+gate and the down proj
near copy bandwidth, but the 4096 × 4096 output projection at 1–32 rows took ~20 µs for 33.5 MB on
an H100 (~55 % of copy bandwidth; docs/gpu-results/run10_profiles), with a memset and a split-K
reduction beside it. Narrow N tiles give every SM a slice of the weight, and the residual add rides
in the epilogue (out = residual + round(x · Wᵀ), rounded as the unfused `x + dense(...)` is).

Tried and measured slower, so not here: the same kernel taking the RMSNorm, the SiLU·mul and the
FP8 / int8 activation quantization as prologues for the other three linears (run16: the prologue's
loads are not pipelined with the weight's; e.g. the down proj with SiLU·mul 133 µs against cuBLAS's
44 µs). Float weights only; the quantized layers keep scaled_gemm.py. No CPU form: the CPU runs
`x + dense(attended)`, which this must equal (checked on a GPU by decode_step_variants.py's
`output_projection_agreement`).
"""

from __future__ import annotations

import torch

from foundry.runtime.linears import FloatLinear

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

MAX_ROWS = 64  # decode batches; more rows (prefill) keep cuBLAS


def serves(x: torch.Tensor, linear) -> bool:
    """Can the kernel run this linear on x ([rows, features])?"""
    return (
        triton is not None
        and x.is_cuda
        and x.shape[0] <= MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and isinstance(linear, FloatLinear)
    )


if triton is not None:

    def _configs():
        # bound by the weight read: narrow N tiles so every SM has work, deep K pipelines
        return [
            triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for n, k, w, s in (
                (16, 256, 4, 4),
                (16, 512, 4, 3),
                (32, 256, 4, 4),
                (32, 512, 4, 3),
                (32, 128, 4, 6),
                (64, 256, 4, 4),
                (64, 128, 4, 5),
            )
        ]

    @triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K"])
    @triton.jit
    def _linear_residual_kernel(
        x_ptr,
        w_ptr,
        residual_ptr,
        out_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_rm,
        stride_om,
        M_BUCKET,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
        w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # a [BLOCK_K, BLOCK_N] tile of Wᵀ
        accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            k_left = K - start
            x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
            w = tl.load(w_ptrs, mask=(offs_n[None, :] < N) & (offs_k[:, None] < k_left), other=0.0)
            accumulator = tl.dot(x, w, accumulator, out_dtype=tl.float32)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        compute_dtype = out_ptr.dtype.element_ty
        out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        residual = tl.load(residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :], mask=out_mask, other=0.0)
        # as `residual + F.linear(x, W)`: the product rounded to the compute dtype, then the sum
        y = (residual.to(tl.float32) + accumulator.to(compute_dtype).to(tl.float32)).to(compute_dtype)
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], y, mask=out_mask)


# A custom op: torch.compile and CUDA-graph capture see one opaque kernel (dynamo cannot trace the
# Triton autotuner), its output shape from the fake implementation.
@torch.library.custom_op("foundry::linear_plus_residual", mutates_args=())
def linear_plus_residual_cuda(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """residual [M, N] + x [M, K] · weight [N, K]ᵀ, all in the compute dtype, on CUDA."""
    if triton is None:
        raise RuntimeError("the decode output projection kernel needs Triton (it ships with CUDA builds of torch)")
    x, residual = x.contiguous(), residual.contiguous()
    rows, k = x.shape
    n = weight.shape[0]
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    m_bucket = max(16, triton.next_power_of_2(rows))

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(rows, m_bucket))

    _linear_residual_kernel[grid](
        x,
        weight,
        residual,
        out,
        rows,
        n,
        k,
        x.stride(0),
        weight.stride(0),
        residual.stride(0),
        out.stride(0),
        m_bucket,
        BLOCK_M=m_bucket,
    )
    return out


@linear_plus_residual_cuda.register_fake
def _linear_plus_residual_shape(x, weight, residual):
    return residual.new_empty(residual.shape)
