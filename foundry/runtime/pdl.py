"""Programmatic dependent launch (Hopper and later) for the decode step's kernels.

A kernel launched this way may be scheduled while the kernel before it in the stream is finishing:
its programs start, then wait at `gdc_wait` (PTX `griddepcontrol.wait`) until the previous kernel
has ended and its writes are visible; a kernel lets its successor in early with
`gdc_launch_dependents` once it has read its operands. A decode step is a few hundred kernels of a
few microseconds each in one CUDA graph (graphs keep these programmatic edges), so the gap between
two kernels is a visible share of it. foundry's Triton kernels (scaled_gemm.py,
decode_attention.py) wait before their first load; inductor's kernels do the same with its
`triton.enable_pdl` (decode_runner.py). Library kernels (cuBLAS: the lm_head, float qkv and fc+gate)
launch as before, and the kernel after one waits for it in full.

On an H100 (docs/gpu-results/run19_*, decode_step_variants.py settings no_pdl / pdl), compiled step
at batch 1: FP8 3.817 → 3.642 ms, bf16 5.868 → 5.854 ms; at batch 32 FP8 4.187 → 4.233, bf16
6.418 → 6.372. Tried and dropped: asking L2 for the first lines of the weight before the wait (FP8
3.642 → 3.724 ms).
"""

from __future__ import annotations

import torch

ENABLED = True


def enabled(device: torch.device) -> bool:
    """Whether kernels on `device` launch programmatically (CUDA compute capability 9.0 or later)."""
    return ENABLED and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def inductor_options(device: torch.device) -> dict:
    """torch.compile options that make inductor's kernels take part (where this torch has the switch)."""
    import torch._inductor.config as inductor

    if not hasattr(inductor.triton, "enable_pdl"):
        return {}
    return {"triton.enable_pdl": enabled(device)}
