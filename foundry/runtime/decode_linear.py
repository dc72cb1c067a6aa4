"""A decode step's linears with their neighbours fused in, on CUDA (one Triton kernel).

Why: at decode a layer's four GEMMs read the weights (bandwidth-bound) and everything between them
is a handful of tiny kernels — RMSNorm, the SiLU·mul, the residual adds, the activation quantization,
cuBLAS's split-K memsets and reductions — each a launch of 1–3 µs on a few KB. On an H100 those were
~12 µs of a layer's ~28 µs outside the GEMMs (docs/gpu-results/run10_profiles). Here each GEMM
takes its input's producer as a prologue and the residual add as an epilogue:

* `norm` — y = rms_norm(x) · Wᵀ (qkv, and fc+gate): the tile's rows are normalised in registers
  (their mean square computed by a first pass over the row, a few KB from L2);
* `silu_mul` — y = (silu(a) ∘ b) · Wᵀ with [a | b] the fused fc+gate output (the MLP's down proj);
* `residual` — y = residual + x · Wᵀ (attention output proj and down proj).

Each elementwise step rounds to the compute dtype where the unfused PyTorch code does (RMSNorm:
normalise in float32, round, times the weight, round; SiLU, round, times b, round; the GEMM's
output, round, plus the residual, round), and quantized layers quantize the activation in the
prologue exactly as their `quantize_activation` does — FP8: divide by the static scale, clamp to
±448, E4M3; W8A8 SmoothQuant (per tensor): times the smoothing scale, times 1 / the static scale,
round half to even, clamp to ±127 — then accumulate exactly (int32) or in float32 (FP8) and apply
the per-column scale. What differs from the unfused path is the order of float32 sums only (the
mean square, the float and FP8 dot products).

Float (bf16/fp16), FP8 and per-tensor W8A8 linears; per-token W8A8 (its scale needs the row's
amax first) keeps its own kernel (scaled_gemm.py). No CPU form: on CPU the layer runs its unfused code (which is what this must equal; the GPU check is
`benchmarks/decode_step_variants.py`'s `fused_linear_agreement`).
"""

from __future__ import annotations

import torch

from foundry.runtime.kv_pool import FP8_E4M3_MAX, INT8_MAX
from foundry.runtime.linears import FloatLinear, Fp8Linear, SmoothQuantLinear

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

NO_PROLOGUE, NORM_PROLOGUE, SILU_MUL_PROLOGUE = 0, 1, 2
FLOAT_WEIGHTS, FP8_WEIGHTS, INT8_WEIGHTS = 0, 1, 2
MAX_ROWS = 64  # decode batches; larger row counts keep the unfused path (cuBLAS wins there)


def serves(x: torch.Tensor, linear) -> bool:
    """Can the fused kernel run this linear on x ([rows, features])?"""
    return (
        triton is not None
        and x.is_cuda
        and x.shape[0] <= MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and isinstance(linear, (FloatLinear, Fp8Linear, SmoothQuantLinear))
    )


if triton is not None:
    from triton.language.extra import libdevice

    FP8_MAX = tl.constexpr(FP8_E4M3_MAX)
    INT8_LIMIT = tl.constexpr(INT8_MAX)

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
                (64, 256, 8, 4),
            )
        ]

    @triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "PROLOGUE", "WEIGHTS", "HAS_RESIDUAL"])
    @triton.jit
    def _fused_linear_kernel(
        x_ptr,
        w_ptr,
        out_ptr,
        norm_ptr,
        residual_ptr,
        column_scale_ptr,
        activation_scale_ptr,
        smoothing_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_om,
        stride_rm,
        epsilon,
        M_BUCKET,
        PROLOGUE: tl.constexpr,
        WEIGHTS: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        row_ok = offs_m < M
        compute_dtype = out_ptr.dtype.element_ty
        x_rows = x_ptr + offs_m[:, None] * stride_xm
        if PROLOGUE == 1:  # the rows' mean square first (the whole row is needed before any column)
            squares = tl.zeros((BLOCK_M,), dtype=tl.float32)
            for start in range(0, K, BLOCK_K):
                cols = start + offs_k
                x = tl.load(x_rows + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < K), other=0.0)
                x = x.to(tl.float32)
                squares += tl.sum(x * x, axis=1)
            inverse_rms = tl.rsqrt(squares / K + epsilon)
        if WEIGHTS != 0:  # FP8: the static scale; W8A8: 1 / the static scale
            activation_scale = tl.load(activation_scale_ptr)
        accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32 if WEIGHTS == 2 else tl.float32)
        for start in range(0, K, BLOCK_K):
            cols = start + offs_k
            x_mask = row_ok[:, None] & (cols[None, :] < K)
            x = tl.load(x_rows + cols[None, :], mask=x_mask, other=0.0)
            if PROLOGUE == 1:  # rms_norm: weight * (x * inverse_rms).to(dtype), rounded
                normed = (x.to(tl.float32) * inverse_rms[:, None]).to(compute_dtype)
                norm_weight = tl.load(norm_ptr + cols, mask=cols < K, other=0.0)
                x = (norm_weight[None, :].to(tl.float32) * normed.to(tl.float32)).to(compute_dtype)
            if PROLOGUE == 2:  # silu(a) * b with [a | b] in one row of 2K
                linear_part = tl.load(x_rows + K + cols[None, :], mask=x_mask, other=0.0)
                gate = x.to(tl.float32)
                activated = (gate * tl.sigmoid(gate)).to(compute_dtype)
                x = (activated.to(tl.float32) * linear_part.to(tl.float32)).to(compute_dtype)
            if WEIGHTS == 1:  # Fp8Linear.quantize_activation: x / s, clamp to ±448, E4M3
                scaled = x.to(tl.float32) / activation_scale
                scaled = tl.minimum(tl.maximum(scaled, -FP8_MAX), FP8_MAX)
                x = scaled.to(tl.float8e4nv)
            if WEIGHTS == 2:  # SmoothQuantLinear.quantize_activation: x · s_pre · (1/s), round half even, ±127
                smoothing = tl.load(smoothing_ptr + cols, mask=cols < K, other=0.0)
                scaled = (x.to(tl.float32) * smoothing[None, :]) * activation_scale
                scaled = tl.minimum(tl.maximum(libdevice.rint(scaled), -INT8_LIMIT), INT8_LIMIT)
                x = scaled.to(tl.int8)
            w = tl.load(
                w_ptr + offs_n[None, :] * stride_wn + cols[:, None],
                mask=(offs_n[None, :] < N) & (cols[:, None] < K),
                other=0.0,
            )  # a [BLOCK_K, BLOCK_N] tile of Wᵀ
            accumulator = tl.dot(x, w, accumulator, out_dtype=tl.int32 if WEIGHTS == 2 else tl.float32)
        y = accumulator.to(tl.float32)
        if WEIGHTS != 0:
            y = y * tl.load(column_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        y = y.to(compute_dtype)
        out_mask = row_ok[:, None] & (offs_n[None, :] < N)
        if HAS_RESIDUAL:
            residual = tl.load(residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :], mask=out_mask, other=0.0)
            y = (residual.to(tl.float32) + y.to(tl.float32)).to(compute_dtype)
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], y, mask=out_mask)


@torch.library.custom_op("foundry::fused_decode_linear", mutates_args=())
def fused_linear_cuda(
    x: torch.Tensor,
    weight: torch.Tensor,
    norm_weight: torch.Tensor | None,
    residual: torch.Tensor | None,
    column_scale: torch.Tensor | None,
    activation_scale: torch.Tensor | None,
    smoothing: torch.Tensor | None,
    prologue: int,
    epsilon: float,
) -> torch.Tensor:
    """x [M, K] (silu_mul: [M, 2K]), weight [N, K]: in the compute dtype; or E4M3 with column_scale [N]
    (activation × weight scale) and activation_scale [] (s); or int8 with column_scale [N],
    activation_scale [] (1 / s) and smoothing [K]. residual [M, N] → [M, N] in x's dtype."""
    if triton is None:
        raise RuntimeError("the fused decode linear needs Triton (it ships with CUDA builds of torch)")
    rows = x.shape[0]
    n, k = weight.shape
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    weights = {torch.float8_e4m3fn: FP8_WEIGHTS, torch.int8: INT8_WEIGHTS}.get(weight.dtype, FLOAT_WEIGHTS)
    m_bucket = max(16, triton.next_power_of_2(rows))
    block_m = min(m_bucket, MAX_ROWS)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(rows, block_m))

    _fused_linear_kernel[grid](
        x,
        weight,
        out,
        norm_weight if norm_weight is not None else x,  # unused pointers: any tensor
        residual if residual is not None else out,
        column_scale if column_scale is not None else x,
        activation_scale if activation_scale is not None else x,
        smoothing if smoothing is not None else x,
        rows,
        n,
        k,
        x.stride(0),
        weight.stride(0),
        out.stride(0),
        residual.stride(0) if residual is not None else 0,
        epsilon,
        m_bucket,
        PROLOGUE=prologue,
        WEIGHTS=weights,
        HAS_RESIDUAL=residual is not None,
        BLOCK_M=block_m,
    )
    return out


@fused_linear_cuda.register_fake
def _fused_linear_shape(x, weight, norm_weight, residual, column_scale, activation_scale, smoothing, prologue, epsilon):
    return x.new_empty((x.shape[0], weight.shape[0]))


def _weight_and_scales(linear) -> tuple:
    """(weight, column scale, activation scale, smoothing) as the kernel takes them."""
    if isinstance(linear, Fp8Linear):
        return linear.weight, linear.column_scale, linear.activation_scale, None
    if isinstance(linear, SmoothQuantLinear):
        return linear.weight_int8, linear.output_scale, linear.inverse_activation_scale, linear.prequant_scale
    return linear.weight, None, None, None


def fused_linear(
    x: torch.Tensor,
    linear: FloatLinear | Fp8Linear | SmoothQuantLinear,
    *,
    norm_weight: torch.Tensor | None = None,
    epsilon: float = 0.0,
    silu_mul: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """linear(prologue(x)) [+ residual] as one kernel; x [rows, features]."""
    prologue = NORM_PROLOGUE if norm_weight is not None else SILU_MUL_PROLOGUE if silu_mul else NO_PROLOGUE
    weight, column_scale, activation_scale, smoothing = _weight_and_scales(linear)
    residual = None if residual is None else residual.contiguous()
    return fused_linear_cuda(
        x.contiguous(), weight, norm_weight, residual, column_scale, activation_scale, smoothing, prologue, epsilon
    )
