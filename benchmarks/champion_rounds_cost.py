"""What re-measuring the champion costs on this machine, and what the default gates decide on an A/A.

    .venv/bin/python benchmarks/champion_rounds_cost.py [--config configs/default.yaml] [--rounds 20]

Two instances of the SmolLM2 smoke engine (the same engine: an A/A comparison) are measured in
interleaved rounds on the config's seeded benchmark workload at its lowest concurrency, exactly as
the benchmark step does when production holds a runnable engine (foundry/bench/rounds.py). Printed:
seconds per round, and the verdict of every default relative gate (gates.max_regression_pct) after
the first k rounds, for k = 6, 8, 12, ..., --rounds. An A/A should pass; "inconclusive" or "fail"
at the default round count means this machine's noise needs more rounds or a wider margin.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from served_overhead import build_smoke_engine  # noqa: E402

from foundry.bench.rounds import run_interleaved_rounds  # noqa: E402
from foundry.bench.workload import synthetic_workload_with_description  # noqa: E402
from foundry.builders import load_engine  # noqa: E402
from foundry.champion import latency_results  # noqa: E402
from foundry.config import load_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs/default.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/foundry-smoke-engine"))
    parser.add_argument("--rounds", type=int, default=None, help="default: benchmark.champion_rounds")
    args = parser.parse_args()
    config = load_config(args.config)
    bench = config.benchmark
    rounds = args.rounds or bench.champion_rounds
    _, engine_dir = build_smoke_engine(args.work)
    champion, challenger = load_engine(engine_dir), load_engine(engine_dir)
    vocab = champion.config.vocab_size
    requests, workload = synthetic_workload_with_description(
        bench.seed,
        bench.num_requests,
        bench.warmup_requests,
        bench.input_len.min,
        bench.input_len.max,
        bench.output_len.min,
        bench.output_len.max,
        vocab_size=vocab,
    )
    started = time.perf_counter()
    result = run_interleaved_rounds(
        challenger,
        champion,
        requests,
        bench.warmup_requests,
        min(bench.concurrency),
        rounds,
        workload=workload,
        model_name="smoke A/A",
        identity={
            "champion_version": "A",
            "champion_engine_content_hash": "same engine",
            "champion_served_by": "in-process reference",
            "challenger_served_by": "in-process reference",
        },
    )
    wall_s = time.perf_counter() - started
    print(
        f"{rounds} rounds at concurrency {min(bench.concurrency)}: {wall_s:.0f} s ({wall_s / rounds:.1f} s per round)"
    )
    for count in sorted({k for k in (6, 8, 12, 16, 20, rounds) if k <= rounds}):
        prefix = result.model_copy(
            update={"champion": result.champion[:count], "challenger": result.challenger[:count]}
        )
        verdicts = [
            f"{r.metric} {r.verdict} ({r.low:.3f}–{r.high:.3f})"
            for r in latency_results(prefix, config.gates)
            if r.margin is not None and r.low is not None
        ]
        print(f"after {count:2d} rounds: " + "; ".join(verdicts))
    champion.close()
    challenger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
