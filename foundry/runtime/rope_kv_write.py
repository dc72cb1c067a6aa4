"""A decode step's RoPE and KV-cache write as one Triton kernel (CUDA): between the qkv GEMM and attention.

In the compiled decode step these are three inductor kernels a layer — RoPE on q; RoPE on k with
the K write; the V write (H100 profile, FP8 at batch 1: 1.4 + 1.7 + 1.1 µs a layer;
docs/gpu-results/run21_profiles) — because inductor writes each mutated buffer in a kernel of its
own. Here one program per (row, head) of q, k and v rotates its head (GPT-NeoX halves, as
`reference.rotate_half`), rounds it to the compute dtype, and stores q for attention or k / v into
the row's slot at its position, quantized as `kv_pool.quantize_kv` does for an INT8 / FP8 cache
(IEEE division by the scale; INT8 rounds half to even and clamps to ±127, FP8 clamps to ±448 and
rounds to nearest even).

The pool is mutated through a custom op that declares it (`mutates_args`); inductor calls such an op
on the pool in place (checked on CPU with torch 2.13: no clone in the generated code; the GPU
machine has torch 2.11, where a clone would show in the batch-32 step time).

Status: ON (`reference.FUSED_ROPE_KV_WRITE`). On an H100 (docs/gpu-results/run22_*) it equals the
eager formula bit for bit in all 12 cases of decode_step_variants.py's `rope_kv_agreement` (bf16,
INT8 and FP8 caches; two head layouts; 1 and 32 rows), and the compiled step got faster at batch 1
(FP8 3.622 → 3.570 ms, bf16 5.821 → 5.753 ms) and no slower at batch 32 (so torch 2.11's inductor
does not clone the pool either). Settings `fused_rope_kv` / `inductor_rope_kv` re-measure it.
Since then the kernel looks cos / sin up in the rotary tables by position (inductor had gathered
them at the step's positions in 16 kernels a step); on an H100 that form too equals eager bit for bit
in all 12 cases (docs/gpu-results/run23_*). Loading the position and cos / sin before `gdc_wait`
(the qkv GEMM writes neither) was measured there and gained nothing (FP8 batch 1 3.573 against
3.555 ms, means of 4 and 3 runs alternated on one machine), so they load after it.
"""

from __future__ import annotations

import torch

from foundry.runtime import pdl

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None

if triton is not None:
    from foundry.runtime.decode_attention import e4m3_codes

    @triton.jit
    def _rope_kv_kernel(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        positions_ptr,
        q_out_ptr,
        keys_ptr,
        values_ptr,
        scale_ptr,
        stride_qkv,
        stride_cos,
        stride_kb,
        stride_kh,
        stride_kn,
        HEADS: tl.constexpr,
        KV_HEADS: tl.constexpr,
        HEAD: tl.constexpr,
        KV_QUANT: tl.constexpr,  # 0: stored in the compute dtype, 1: INT8, 2: FP8
        PDL: tl.constexpr,
    ):
        if PDL:  # qkv comes from the previous kernel (pdl.py)
            tl.extra.cuda.gdc_wait()
        row = tl.program_id(0)
        head = tl.program_id(1)  # 0..HEADS-1: q; then KV_HEADS of k; then KV_HEADS of v
        offs = tl.arange(0, HEAD)
        position = tl.load(positions_ptr + row).to(tl.int64)
        x = tl.load(qkv_ptr + row * stride_qkv + head * HEAD + offs)
        if head < HEADS + KV_HEADS:  # q or k: rotate (v is stored as it comes)
            half = HEAD // 2
            partner = tl.load(qkv_ptr + row * stride_qkv + head * HEAD + (offs + half) % HEAD)
            cos = tl.load(cos_ptr + position * stride_cos + offs).to(tl.float32)
            sin = tl.load(sin_ptr + position * stride_cos + offs).to(tl.float32)
            rotated = tl.where(offs < half, -partner.to(tl.float32), partner.to(tl.float32))
            x = (x.to(tl.float32) * cos + rotated * sin).to(qkv_ptr.dtype.element_ty)
        if KV_QUANT != 0:
            scale = tl.load(scale_ptr)
        if PDL:  # every input is read: the next kernel may be scheduled (it waits for this one to end)
            tl.extra.cuda.gdc_launch_dependents()
        if head < HEADS:
            tl.store(q_out_ptr + (row * HEADS + head) * HEAD + offs, x)
        else:
            kv_head = (head - HEADS) % KV_HEADS
            offset = row.to(tl.int64) * stride_kb + kv_head * stride_kh + position * stride_kn + offs
            if KV_QUANT == 1:
                scaled = tl.math.div_rn(x.to(tl.float32), scale)
                clamped = tl.minimum(tl.maximum(scaled, -127.0), 127.0)  # before rounding: the same codes
                # round half to even: adding and removing 1.5 · 2²³ leaves float32 no fraction bits
                # (exact for |x| < 2²²); Triton emits no fast-math, so the two adds are kept
                code = ((clamped + 12582912.0) - 12582912.0).to(tl.int8)
            elif KV_QUANT == 2:
                code = e4m3_codes(x, scale)
            else:
                code = x
            if head < HEADS + KV_HEADS:
                tl.store(keys_ptr + offset, code)
            else:
                tl.store(values_ptr + offset, code)


KV_QUANT_CODES = {torch.int8: 1, torch.float8_e4m3fn: 2}  # the kernel's KV_QUANT; other dtypes 0


def serves(qkv: torch.Tensor, keys: torch.Tensor, head_size: int) -> bool:
    """Whether the kernel can run this layer's decode RoPE + KV write: CUDA, a 16-bit compute dtype,
    a power-of-two head size (Triton's block shapes), a contiguous pool."""
    return (
        triton is not None
        and qkv.is_cuda
        and qkv.dtype in (torch.bfloat16, torch.float16)
        and head_size & (head_size - 1) == 0
        and keys.is_contiguous()
    )


@torch.library.custom_op("foundry::rope_kv_write", mutates_args=("keys", "values"))
def rope_kv_write_cuda(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_scale: torch.Tensor | None,
    heads: int,
) -> torch.Tensor:
    """qkv [rows, (heads + 2 kv_heads) · head_size] in the compute dtype (q, k, v in that order);
    cos/sin the rotary tables [max_positions, head_size] (RotaryTable.cos / .sin: the kernel looks up
    each row's position itself, so the step runs no gather kernels for them); keys/values the
    layer's pool storage [slots, kv_heads, capacity, head_size] (row b is slot b): row b's rotated k
    and its v are written at positions[b]; kv_scale a quantized cache's scale or None → rotated q
    [rows, heads, 1, head_size]."""
    if triton is None:
        raise RuntimeError("the decode RoPE + KV write kernel needs Triton (it ships with CUDA builds of torch)")
    rows = qkv.shape[0]
    kv_heads, head_size = keys.shape[1], keys.shape[3]
    if values.stride() != keys.stride():  # the kernel indexes both by keys' strides
        raise ValueError("the decode RoPE + KV write wants keys and values of one layout")
    if (kv_scale is not None) != (keys.dtype in KV_QUANT_CODES):
        raise ValueError(f"a {keys.dtype} KV cache takes {'a' if kv_scale is None else 'no'} kv_scale")
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    q = torch.empty((rows, heads, 1, head_size), dtype=qkv.dtype, device=qkv.device)
    programmatic = pdl.enabled(qkv.device)
    _rope_kv_kernel[(rows, heads + 2 * kv_heads)](
        qkv,
        cos,
        sin,
        positions,
        q,
        keys,
        values,
        kv_scale if kv_scale is not None else cos,  # the pointer of an absent operand: any tensor
        qkv.stride(0),
        cos.stride(0),
        keys.stride(0),
        keys.stride(1),
        keys.stride(2),
        HEADS=heads,
        KV_HEADS=kv_heads,
        HEAD=head_size,
        KV_QUANT=KV_QUANT_CODES.get(keys.dtype, 0),
        PDL=programmatic,
        launch_pdl=programmatic,
    )
    return q


@rope_kv_write_cuda.register_fake
def _rope_kv_write_shape(qkv, cos, sin, positions, keys, values, kv_scale, heads):
    return qkv.new_empty((qkv.shape[0], heads, 1, keys.shape[3]))
