"""The quantized GEMMs of the reference runtime: y = (A · Wᵀ) · row_scale · col_scale, in the output dtype.
(Its Triton kernel also serves decode_linear.py's float GEMV with a residual epilogue.)

* int8 × int8 (W8A8 SmoothQuant), accumulated in int32 (exact): `int8_matmul_scaled`.
* E4M3 × E4M3 (FP8), accumulated in float32: `fp8_matmul_scaled` (CUDA only; on a GPU this kernel
  replaces `torch._scaled_mm`, which wants rows in multiples of 16 and so reads the weight for 16
  rows when decode has 1: measured in docs/gpu-engine.md).

int8: On CPU: `torch._int_mm` (oneDNN) and the
scaling in float32. On CUDA: a Triton kernel written here, because the library kernel does not
serve this case on Hopper: cuBLAS int8 (`torch._int_mm`) refuses fewer than 17 rows (decode feeds
one per sequence) and measured 4–6× slower than a bf16 GEMM on an H200 (docs/benchmark-definitions
and shared measurements). The kernel accumulates in int32 (exact, like the CPU path) and applies
the scales in the epilogue in the same order as the CPU code, so both devices compute the same
function up to the final rounding to the compute dtype.
"""

from __future__ import annotations

import torch

from foundry.runtime import pdl

try:  # Triton ships with CUDA builds of torch; CPU-only installs run the CPU path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None


def int8_matmul_scaled(
    a_int8: torch.Tensor,
    w_int8: torch.Tensor,
    row_scale: torch.Tensor | None,
    col_scale: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """a_int8 [M, K], w_int8 [N, K] (row-major, as the checkpoint stores it), row_scale [M] or None,
    col_scale [N] float32 → [M, N] in out_dtype."""
    if a_int8.is_cuda:
        return scaled_matmul_cuda(a_int8, w_int8, row_scale, col_scale, out_dtype)
    accumulator = torch._int_mm(a_int8, w_int8.t())
    y = accumulator.float()
    if row_scale is not None:
        y = y * row_scale.reshape(-1, 1)
    return (y * col_scale).to(out_dtype)


if triton is not None:

    def _configs():
        # Small M (decode) is bound by reading the weight: narrow N tiles so every SM has work, and
        # deep K pipelines. Large M (prefill) is bound by the int8 tensor cores: wide tiles.
        small = [
            triton.Config({"BLOCK_M": 16, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for n, k, w, s in ((32, 256, 4, 4), (64, 256, 4, 4), (32, 512, 4, 3), (64, 128, 4, 5), (16, 512, 2, 4))
        ]
        # 17–32 rows (decode at batch 32) in one row block: with 16-row blocks every weight tile is
        # read twice (on an H100 the 28672 × 4096 bf16 GEMV took 158 µs at 32 rows against 81 µs at
        # one: run17; 89.9 µs with these tiles among the choices, cuBLAS 88.5: run18).
        small += [
            triton.Config({"BLOCK_M": 32, "BLOCK_N": n, "BLOCK_K": 256}, num_warps=4, num_stages=4) for n in (32, 64)
        ]
        large = [
            triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": 128}, num_warps=w, num_stages=4)
            for m, n, w in ((64, 64, 4), (64, 128, 4), (128, 128, 8), (128, 64, 4))
        ]
        return small + large

    def _prune(configs, named_args, **kwargs):
        m_bucket = named_args["M_BUCKET"]
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, m_bucket)]
        return kept or configs[:1]

    @triton.jit
    def scale_epilogue(
        accumulator,
        row_scale_ptr,
        col_scale_ptr,
        offs_m,
        offs_n,
        M,
        N,
        HAS_ROW_SCALE: tl.constexpr,
        HAS_COL_SCALE: tl.constexpr,
    ):
        """The GEMM epilogue's scaling, in float32: accumulator × row_scale[m] × col_scale[n]."""
        y = accumulator.to(tl.float32)
        if HAS_ROW_SCALE:
            y = y * tl.load(row_scale_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
        if HAS_COL_SCALE:
            y = y * tl.load(col_scale_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
        return y

    # (the autotuner's key also holds the tensors' dtypes: bf16, E4M3 and int8 operands tune apart)
    @triton.autotune(
        configs=_configs(),
        key=["M_BUCKET", "N", "K", "FLOAT_ACC", "HAS_RESIDUAL", "PDL"],
        prune_configs_by={"early_config_prune": _prune},
    )
    @triton.jit
    def _scaled_gemm_kernel(
        a_ptr,
        w_ptr,
        out_ptr,
        row_scale_ptr,
        col_scale_ptr,
        residual_ptr,
        M,
        N,
        K,
        stride_am,
        stride_wn,
        stride_om,
        M_BUCKET,
        HAS_ROW_SCALE: tl.constexpr,
        HAS_COL_SCALE: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr,
        FLOAT_ACC: tl.constexpr,
        PDL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        if PDL:  # the activations (and the residual) come from the previous kernel: pdl.py
            tl.extra.cuda.gdc_wait()
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :]
        w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # a [BLOCK_K, BLOCK_N] tile of Wᵀ
        accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32 if FLOAT_ACC else tl.int32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            k_left = K - k * BLOCK_K
            a_mask = (offs_m[:, None] < M) & (offs_k[None, :] < k_left)
            w_mask = (offs_n[None, :] < N) & (offs_k[:, None] < k_left)
            if FLOAT_ACC:  # E4M3 or bf16/fp16 operands: the padding value must be a float
                a = tl.load(a_ptrs, mask=a_mask, other=0.0)
                w = tl.load(w_ptrs, mask=w_mask, other=0.0)
            else:
                a = tl.load(a_ptrs, mask=a_mask, other=0)
                w = tl.load(w_ptrs, mask=w_mask, other=0)
            accumulator = tl.dot(a, w, accumulator, out_dtype=tl.float32 if FLOAT_ACC else tl.int32)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        y = scale_epilogue(
            accumulator, row_scale_ptr, col_scale_ptr, offs_m, offs_n, M, N, HAS_ROW_SCALE, HAS_COL_SCALE
        )
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        out_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        y = y.to(out_ptr.dtype.element_ty)
        if HAS_RESIDUAL:  # as `residual + linear(x)`: the product rounded to the output dtype, then the sum
            residual = tl.load(residual_ptr + offs_m[:, None] * stride_om + offs_n[None, :], mask=out_mask, other=0.0)
            y = (residual.to(tl.float32) + y.to(tl.float32)).to(out_ptr.dtype.element_ty)
        if PDL:  # every input is read: the next kernel may be scheduled (it waits for this one to end)
            tl.extra.cuda.gdc_launch_dependents()
        tl.store(out_ptrs, y, mask=out_mask)

    def triton_matmul_scaled(a, w, row_scale, col_scale, out_dtype, residual=None):
        """a [M, K] and w [N, K], both int8, both float8_e4m3fn, or both the output's float dtype
        (then col_scale None); residual [M, N] contiguous, added in the epilogue, or None."""
        a = a.contiguous()
        M, K = a.shape
        N = w.shape[0]
        out = torch.empty((M, N), dtype=out_dtype, device=a.device)
        m_bucket = min(128, triton.next_power_of_2(M))
        programmatic = pdl.enabled(a.device)

        def grid(meta):
            return (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(M, meta["BLOCK_M"]))

        _scaled_gemm_kernel[grid](
            a,
            w,
            out,
            row_scale if row_scale is not None else a,  # pointers of absent operands: any tensor
            col_scale if col_scale is not None else a,
            residual if residual is not None else out,
            M,
            N,
            K,
            a.stride(0),
            w.stride(0),
            out.stride(0),
            m_bucket,
            HAS_ROW_SCALE=row_scale is not None,
            HAS_COL_SCALE=col_scale is not None,
            HAS_RESIDUAL=residual is not None,
            FLOAT_ACC=a.dtype != torch.int8,
            PDL=programmatic,
            launch_pdl=programmatic,
        )
        return out


# A custom op: torch.compile and CUDA-graph capture see one opaque kernel (dynamo cannot trace the
# Triton autotuner's config pruning), with its output shape from the fake implementation.
@torch.library.custom_op("foundry::scaled_matmul", mutates_args=())
def scaled_matmul_cuda(
    a: torch.Tensor, w: torch.Tensor, row_scale: torch.Tensor | None, col_scale: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """a [M, K] and w [N, K], both int8 or both float8_e4m3fn, on CUDA."""
    if triton is None:
        raise RuntimeError("quantized GEMMs on CUDA need Triton (it ships with CUDA builds of torch)")
    return triton_matmul_scaled(a, w, row_scale, col_scale, out_dtype)


@scaled_matmul_cuda.register_fake
def _scaled_matmul_shape(a, w, row_scale, col_scale, out_dtype):
    return a.new_empty((a.shape[0], w.shape[0]), dtype=out_dtype)


def fp8_matmul_scaled(
    a_fp8: torch.Tensor, w_fp8: torch.Tensor, col_scale: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """a_fp8 [M, K] and w_fp8 [N, K] float8_e4m3fn on CUDA, col_scale [N] float32 (activation scale ×
    weight scale) → [M, N]: float32 accumulation of the exact E4M3 products, then the scale."""
    return scaled_matmul_cuda(a_fp8, w_fp8, None, col_scale, out_dtype)
