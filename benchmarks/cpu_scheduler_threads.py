"""Intra-op threads in the engine's scheduler thread, on this CPU (not a test).

    .venv/bin/python benchmarks/cpu_scheduler_threads.py [ENGINE_DIR]   (default: /tmp/smoke/engine,
    the SmolLM2 smoke engine benchmarks/served_overhead.py builds)

Times the decode step (batch 1 and 8) and a 96-token prefill from a thread other than the one that
loaded the engine (where the scheduler runs them), with 1 and with 2 OpenMP threads.
"""

import pathlib
import sys
import threading
import time

import torch

from foundry.builders.base import read_engine_info
from foundry.runtime.reference import ReferenceEngine
from foundry.runtime.scheduler import EngineOptions

p = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/smoke/engine")
e = ReferenceEngine.load(p, options=EngineOptions.from_engine_info(read_engine_info(p)))
pool = e.new_pool(8)


def bench(out, n, B, what):
    torch.set_num_threads(n)
    toks = torch.full((B,), 5)
    pos = torch.full((B,), 100)
    with torch.inference_mode():
        f = (
            (lambda: e.decode(pool, toks, pos, 112))
            if what == "decode"
            else (lambda: e.prefill(pool, 0, list(range(1, 97)), 0))
        )
        for _ in range(2):
            f()
        t = time.perf_counter()
        for _ in range(10):
            f()
    out.append((time.perf_counter() - t) / 10 * 1e3)


for what, B in (("decode", 1), ("decode", 8), ("prefill", 1)):
    for n in (1, 2):
        b = []
        th = threading.Thread(target=bench, args=(b, n, B, what))
        th.start()
        th.join()
        print(what, "B", B, "threads", n, f"{b[0]:.1f} ms")
