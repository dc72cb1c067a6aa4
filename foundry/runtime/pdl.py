"""Programmatic dependent launch (Hopper and later) for foundry's CUDA kernels and the compiled decode step.

A kernel launched this way may be scheduled while the kernel before it in the stream is finishing:
its programs start, then wait at `gdc_wait` (PTX `griddepcontrol.wait`) until the previous kernel
has ended and its writes are visible. A kernel lets its successor in early with
`gdc_launch_dependents` once it has read every input; the successor still waits for it to end. A
decode step is a few hundred kernels of a few microseconds each in one CUDA graph (graphs keep these
programmatic edges), so the gap between two kernels is a visible share of it.
* foundry's Triton kernels (scaled_gemm.py, decode_attention.py) wait before their first load or
  store, wherever they run (decode, prefill graphs, eager prefill).
* Inductor's kernels in the compiled decode step take part through its `triton.enable_pdl`
  (decode_runner.py): each waits before its first access that depends on an earlier kernel.
* Library kernels (cuBLAS: the lm_head, bf16 qkv and fc+gate) launch as before, and the kernel
  after one waits for it in full.

On an H100 (docs/gpu-results/run19_*, decode_step_variants.py settings no_pdl / pdl), the
compiled step:
* batch 1: FP8 3.817 → 3.642 ms, bf16 5.868 → 5.854 ms;
* batch 32: FP8 4.187 → 4.233 ms, bf16 6.418 → 6.372 ms.

It is on by default because the c=1 step is what the FP8 target measures; FP8 at batch 32 loses 1 %.
Also tried and dropped: asking L2 for each program's first weight lines before the wait (FP8 3.642 →
3.724 ms).
"""

from __future__ import annotations

import functools

import torch

ENABLED = True


def enabled(device: torch.device) -> bool:
    """Whether kernels on `device` launch programmatically (CUDA compute capability 9.0 or later)."""
    return ENABLED and device.type == "cuda" and _hopper_or_later(device.index)


@functools.cache
def _hopper_or_later(index: int | None) -> bool:  # asked at every launch: the answer per device is fixed
    return torch.cuda.get_device_capability(index) >= (9, 0)


def inductor_options(device: torch.device) -> dict:
    """torch.compile options that make inductor's kernels take part (where this torch has the switch)."""
    import torch._inductor.config as inductor

    if not hasattr(inductor.triton, "enable_pdl"):
        return {}
    return {"triton.enable_pdl": enabled(device)}
