"""Decode attention on CUDA: one query token per row against its slot of the KV pool (Triton).

Why not SDPA: the compiled decode step has one shape per batch bucket, so it attends over the whole
slot (`max_seq_len` columns) behind a mask — SDPA reads every column, masked or not, and a quantized
cache is first dequantized into a bf16 copy of the slot. This kernel reads only the columns a row
may see (0..its position), straight from the pool's storage (bf16, int8 or E4M3 codes, dequantized
in registers exactly as `kv_pool.dequantize_kv` rounds them), and splits a row's columns across
programs (flash-decoding) when the batch alone would leave most SMs idle. The query heads that share
a KV head are one program's rows, so each key and value is read once per KV head.

Two kernels: the split pass writes each split's running max, normaliser and weighted values; the
merge pass combines the splits (skipped when one split covers the slot). Merging in the split
pass's last program of each (row, KV head) instead (a counter per pair) measured slower on an
H100: that program merges its group's heads alone, at the tail (compiled step at batch 1: FP8
3.721 → 3.797 ms, bf16 6.068 → 6.140; docs/gpu-results/run21_*; code at d957253).
For an FP8 output projection the kernel writes the E4M3 codes that `Fp8Linear.quantize_activation`
would make of its output (`out_scale`), so no quantization kernel runs between attention and that
GEMM (bit-identical on an H100 in 27 of 27 cases of decode_step_variants' agreement check).
No CPU equivalent: on CPU the reference runtime keeps SDPA, and the GPU parity script checks both
against each other.
"""

from __future__ import annotations

import math

import torch

from foundry.runtime import pdl

try:  # Triton ships with CUDA builds of torch; CPU-only installs run SDPA
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

BLOCK_COLUMNS = 64  # KV columns per inner step
TARGET_PROGRAMS_PER_SM = 2

if triton is not None:

    @triton.jit
    def e4m3_codes(x, scale):
        """The E4M3 codes of x / scale as torch makes them (Fp8Linear.quantize_activation,
        kv_pool.quantize_kv): IEEE division in float32, clamp to ±FP8_E4M3_MAX (448), nearest even."""
        return tl.minimum(tl.maximum(tl.math.div_rn(x.to(tl.float32), scale), -448.0), 448.0).to(tl.float8e4nv)

    @triton.jit
    def _store_output(out, q_ptr, out_ptr, out_scale, offsets, mask, QUANTIZE_OUT: tl.constexpr):
        """out rounded to the compute dtype; for an FP8 output projection, the E4M3 codes of that."""
        y = out.to(q_ptr.dtype.element_ty)
        if QUANTIZE_OUT:
            y = e4m3_codes(y, out_scale)
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _split_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        positions_ptr,
        scale_ptr,
        out_ptr,
        out_scale_ptr,
        partial_ptr,
        stats_ptr,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kh,
        stride_kn,
        stride_ob,
        stride_oh,
        sm_scale,
        capacity,
        split_columns,
        num_splits,
        GROUP: tl.constexpr,
        GROUP_PAD: tl.constexpr,
        HEAD: tl.constexpr,
        BLOCK_N: tl.constexpr,
        QUANTIZED: tl.constexpr,
        QUANTIZE_OUT: tl.constexpr,
        ONE_SPLIT: tl.constexpr,
        PDL: tl.constexpr,
    ):
        if PDL:  # q and this step's K/V column come from the previous kernels (pdl.py)
            tl.extra.cuda.gdc_wait()
        row = tl.program_id(0)
        kv_head = tl.program_id(1)
        split = tl.program_id(2)
        position = tl.load(positions_ptr + row).to(tl.int32)
        # columns 0..position; a padding or idle row (on the scratch column, the last) reads one:
        # its output is dropped, and no request reads the scratch column
        end = tl.where(position >= capacity - 1, 1, position + 1)
        start = split * split_columns
        stop = tl.minimum(end, start + split_columns)
        offs_g = tl.arange(0, GROUP_PAD)
        offs_d = tl.arange(0, HEAD)
        heads = kv_head * GROUP + offs_g
        q = tl.load(
            q_ptr + row * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
            mask=offs_g[:, None] < GROUP,
            other=0.0,
        )
        kv_base = row.to(tl.int64) * stride_kb + kv_head * stride_kh
        m = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
        normaliser = tl.zeros([GROUP_PAD], dtype=tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD], dtype=tl.float32)
        if QUANTIZED:
            scale = tl.load(scale_ptr)
        for first in range(start, stop, BLOCK_N):
            offs_n = first + tl.arange(0, BLOCK_N)
            valid = offs_n < stop
            # columns past `stop` re-read the last one (finite; weight 0 below): no masked loads,
            # whose fill value would have to match int8, E4M3 and bf16 codes alike
            kv_offsets = kv_base + tl.minimum(offs_n, stop - 1)[:, None] * stride_kn + offs_d[None, :]
            k = tl.load(k_ptr + kv_offsets)
            v = tl.load(v_ptr + kv_offsets)
            if QUANTIZED:  # as kv_pool.dequantize_kv: float32 codes × scale, rounded to the compute dtype
                k = (k.to(tl.float32) * scale).to(q.dtype)
                v = (v.to(tl.float32) * scale).to(q.dtype)
            scores = tl.dot(q, tl.trans(k)) * sm_scale
            scores = tl.where(valid[None, :], scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, 1))
            weights = tl.exp(scores - m_new[:, None])
            rescale = tl.exp(m - m_new)
            normaliser = normaliser * rescale + tl.sum(weights, 1)
            acc = acc * rescale[:, None] + tl.dot(weights.to(v.dtype), v)
            m = m_new
        out_scale = tl.load(out_scale_ptr) if QUANTIZE_OUT else 1.0
        if PDL:  # every input is read: the next kernel may be scheduled (it waits for this one to end)
            tl.extra.cuda.gdc_launch_dependents()
        in_group = offs_g < GROUP
        if ONE_SPLIT:
            out = acc / normaliser[:, None]
            out_offsets = row * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
            _store_output(out, q_ptr, out_ptr, out_scale, out_offsets, in_group[:, None], QUANTIZE_OUT)
        else:  # partial [rows, heads, splits, HEAD], stats [rows, heads, splits, 2] (max, normaliser)
            split_index = (row * GROUP * tl.num_programs(1) + heads) * num_splits + split
            tl.store(partial_ptr + split_index[:, None] * HEAD + offs_d[None, :], acc, mask=in_group[:, None])
            tl.store(stats_ptr + split_index * 2, m, mask=in_group)
            tl.store(stats_ptr + split_index * 2 + 1, normaliser, mask=in_group)

    @triton.jit
    def _merge_kernel(
        q_ptr,
        partial_ptr,
        stats_ptr,
        out_ptr,
        out_scale_ptr,
        heads,
        num_splits,
        stride_ob,
        stride_oh,
        HEAD: tl.constexpr,
        SPLITS_PAD: tl.constexpr,
        QUANTIZE_OUT: tl.constexpr,
        PDL: tl.constexpr,
    ):
        if PDL:
            tl.extra.cuda.gdc_wait()
        row = tl.program_id(0)
        head = tl.program_id(1)
        offs_s = tl.arange(0, SPLITS_PAD)
        offs_d = tl.arange(0, HEAD)
        base = (row * heads + head) * num_splits
        used = offs_s < num_splits
        # a split past the row's position ran no step: max -inf, normaliser 0, weight 0 below
        m = tl.load(stats_ptr + (base + offs_s) * 2, mask=used, other=float("-inf"))
        normaliser = tl.load(stats_ptr + (base + offs_s) * 2 + 1, mask=used, other=0.0)
        acc = tl.load(partial_ptr + (base + offs_s)[:, None] * HEAD + offs_d[None, :], mask=used[:, None], other=0.0)
        top = tl.max(m, 0)
        weight = tl.where(m > float("-inf"), tl.exp(m - top), 0.0)
        out = tl.sum(acc * weight[:, None], 0) / tl.sum(normaliser * weight, 0)
        out_scale = tl.load(out_scale_ptr) if QUANTIZE_OUT else 1.0
        offsets = row * stride_ob + head * stride_oh + offs_d
        _store_output(out, q_ptr, out_ptr, out_scale, offsets, offs_d < HEAD, QUANTIZE_OUT)


def serves(q: torch.Tensor) -> bool:
    """Whether the kernel runs attention for q [rows, heads, 1, head_size]: CUDA, a 16-bit compute
    dtype (tl.dot in float32 would be TF32), a power-of-two head size (Triton's block shapes)."""
    head_size = q.shape[-1]
    return (
        triton is not None
        and q.is_cuda
        and q.dtype in (torch.bfloat16, torch.float16)
        and head_size & (head_size - 1) == 0
    )


def split_count(rows: int, kv_heads: int, columns: int, multiprocessors: int) -> int:
    """Splits per (row, KV head): enough programs to fill the GPU, each at least one column block."""
    wanted = TARGET_PROGRAMS_PER_SM * multiprocessors // (rows * kv_heads)
    return max(1, min(wanted, math.ceil(columns / BLOCK_COLUMNS)))


@torch.library.custom_op("foundry::decode_attention", mutates_args=())
def decode_attention_cuda(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    positions: torch.Tensor,
    kv_scale: torch.Tensor | None,
    out_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [rows, heads, 1, head_size] bf16/fp16; keys/values the layer's pool storage [slots, kv_heads,
    capacity, head_size] (row b is slot b), contiguous; positions [rows]: row b attends to columns
    0..positions[b]; kv_scale: a quantized cache's scale (None for a bf16/fp16 cache) → [rows, heads,
    1, head_size] in q's dtype, or with out_scale (an FP8 output projection's activation scale, a
    float32 scalar) the E4M3 codes Fp8Linear.quantize_activation makes of that."""
    if triton is None:
        raise RuntimeError("decode attention on CUDA needs Triton (it ships with CUDA builds of torch)")
    rows, heads, _, head_size = q.shape
    kv_heads, columns = keys.shape[1], keys.shape[2]
    if not keys.is_contiguous() or values.stride() != keys.stride():  # the kernel indexes both by keys' strides
        raise ValueError("decode attention wants the pool's contiguous keys and values of one layout")
    group = heads // kv_heads
    q = q.contiguous()
    quantize_out = out_scale is not None
    out = torch.empty(q.shape, dtype=torch.float8_e4m3fn if quantize_out else q.dtype, device=q.device)
    multiprocessors = torch.cuda.get_device_properties(q.device).multi_processor_count
    splits = split_count(rows, kv_heads, columns, multiprocessors)
    split_columns = math.ceil(math.ceil(columns / splits) / BLOCK_COLUMNS) * BLOCK_COLUMNS
    splits = math.ceil(columns / split_columns)
    partial = q.new_empty((rows, heads, splits, head_size), dtype=torch.float32) if splits > 1 else out
    stats = q.new_empty((rows, heads, splits, 2), dtype=torch.float32) if splits > 1 else out
    quantized = kv_scale is not None
    programmatic = pdl.enabled(q.device)
    _split_kernel[(rows, kv_heads, splits)](
        q,
        keys,
        values,
        positions,
        kv_scale if quantized else positions,  # pointers of absent operands: any tensor
        out,
        out_scale if quantize_out else positions,
        partial,
        stats,
        q.stride(0),
        q.stride(1),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        out.stride(0),
        out.stride(1),
        1.0 / math.sqrt(head_size),
        columns,
        split_columns,
        splits,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD=head_size,
        BLOCK_N=BLOCK_COLUMNS,
        QUANTIZED=quantized,
        QUANTIZE_OUT=quantize_out,
        ONE_SPLIT=splits == 1,
        PDL=programmatic,
        launch_pdl=programmatic,
    )
    if splits > 1:
        _merge_kernel[(rows, heads)](
            q,
            partial,
            stats,
            out,
            out_scale if quantize_out else positions,
            heads,
            splits,
            out.stride(0),
            out.stride(1),
            HEAD=head_size,
            SPLITS_PAD=triton.next_power_of_2(splits),
            QUANTIZE_OUT=quantize_out,
            PDL=programmatic,
            launch_pdl=programmatic,
        )
    return out


@decode_attention_cuda.register_fake
def _decode_attention_shape(q, keys, values, positions, kv_scale, out_scale=None):
    return q.new_empty(q.shape, dtype=torch.float8_e4m3fn if out_scale is not None else q.dtype)
