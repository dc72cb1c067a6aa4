"""Programmatic dependent launch (Hopper and later) for the decode step's kernels.

A kernel launched this way may start while the kernel before it in the stream is still finishing:
its programs are scheduled, set up and wait at `gdc_wait` (PTX `griddepcontrol.wait`) until the
previous kernel has finished and its writes are visible; the previous kernel lets its successor in
early with `gdc_launch_dependents` once it has read its inputs. A decode step is ~300 kernels of a
few microseconds each in one CUDA graph (graphs keep these programmatic edges), so the launch gap
between two kernels is a visible share of it. foundry's Triton kernels (scaled_gemm.py,
decode_attention.py) wait before their first load; inductor's kernels do the same with
`triton.enable_pdl` (decode_runner.py). Measured: docs/gpu-engine.md (decode_step_variants.py
settings pdl / no_pdl).
"""

from __future__ import annotations

import torch

ENABLED = True
# With programmatic launch, a quantized or GEMV kernel first asks L2 for about this many bytes of
# its weight (spread over its programs' rows) and only then waits for the previous kernel: the
# weight read starts while that kernel finishes. 0: off.
PREFETCH_BYTES = 8 * 2**20


def enabled(device: torch.device) -> bool:
    """Whether kernels on `device` launch programmatically (CUDA compute capability 9.0 or later)."""
    return ENABLED and device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def inductor_options(device: torch.device) -> dict:
    """torch.compile options that make inductor's kernels take part (where this torch has the switch)."""
    import torch._inductor.config as inductor

    if not hasattr(inductor.triton, "enable_pdl"):
        return {}
    return {"triton.enable_pdl": enabled(device)}
