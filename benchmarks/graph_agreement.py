"""Do the CUDA graphs give the tokens the same kernels give launched otherwise? (CUDA only; RANDOM
weights of the real shapes, quantized as benchmarks/checkpoint_variants.py does.)

    python benchmarks/graph_agreement.py [--shape smollm2-135m] [--variants bf16 fp8 int8_sq]

Per variant, these checks, each exit 1 on a difference:
* Prefill: one engine generates greedily for prompts of several lengths, one request at a time,
  three ways: its prefill replayed from the length bucket's CUDA graph (as it ships), the same
  padded forward launched eagerly, and the unpadded eager prefill. The first two run the same
  kernels on the same shapes, so their tokens must be equal; the third runs GEMMs of other row
  counts, whose rounding may differ, so its agreement is reported, not required.
* Decode feed: a batch (one idle row among them) decoded by a chain of `launch_next` — each graph
  feeds its tokens back into the bucket's inputs, one position further — against the same steps
  each launched with the tokens and positions from the host. Both replay the same graphs; the
  chain crosses a KV-length bucket, so a graph is captured between two of its steps.
* FP8 codes (FP8 variants): greedy tokens with decode attention writing the output projection's
  E4M3 codes (as it ships) against a separate quantization kernel (reference.FP8_CODES_FROM_ATTENTION
  off). The attention kernel divides by the scale with IEEE rounding, as eager torch does; inductor's
  kernel divides approximately unless `eager_numerics.division_rounding` is on, which this check
  turns on where the torch has it. Then the codes are the same numbers and the tokens must be
  equal; without it a code may differ by one step, and the comparison is only reported.
CPU tests cover the padding and the scheduler's bookkeeping (tests/test_batching_engine.py); the
graph paths exist on CUDA only.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_variants import VARIANTS, calibrate_amax, float_checkpoint, parsed_config, quantize_checkpoint  # noqa: E402
from decode_step_variants import setting  # noqa: E402
from gpu_bench import SHAPES, random_hf_model  # noqa: E402

from foundry.runtime.prefill_graphs import PrefillGraphs  # noqa: E402
from foundry.runtime.reference import ReferenceEngine  # noqa: E402
from foundry.runtime.scheduler import EngineOptions  # noqa: E402

PROMPT_LENGTHS = (1, 7, 16, 17, 64, 100, 128)
NEW_TOKENS = 16


def generate_each(engine: ReferenceEngine, prompts: list[list[int]]) -> list[list[int]]:
    return [engine.generate(prompt, NEW_TOKENS) for prompt in prompts]


def cuda_engine(config, tensors, **options) -> ReferenceEngine:
    return ReferenceEngine(
        parsed_config(config), tensors, torch.bfloat16, device="cuda", options=EngineOptions(**options)
    )


def random_prompts(vocab_size: int, seed: int) -> list[list[int]]:
    """One prompt of each PROMPT_LENGTHS length."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab_size, (length,), generator=generator).tolist() for length in PROMPT_LENGTHS]


def agreement(variant: str, config, tensors, vocab_size: int) -> dict:
    engine = cuda_engine(config, tensors, max_batch_size=4, max_seq_len=160, prefill_chunk_tokens=512)
    scheduler = engine.scheduler
    prompts = random_prompts(vocab_size, seed=3)
    try:
        graphed = generate_each(engine, prompts)
        graphs_run = scheduler.stats()["prefills_from_buckets"]
        scheduler.prefill_graphs = PrefillGraphs(
            engine, scheduler.pool, scheduler.prefill_graphs.buckets[-1], capture=False
        )
        padded_eager = generate_each(engine, prompts)
        scheduler.prefill_graphs = None
        unpadded_eager = generate_each(engine, prompts)
    finally:
        engine.close()
    return {
        "variant": variant,
        "prompt_lengths": list(PROMPT_LENGTHS),
        "prefills_from_graphs": graphs_run,
        "graphed_equals_padded_eager": graphed == padded_eager,
        "prompts_equal_to_unpadded_eager": sum(a == b for a, b in zip(graphed, unpadded_eager)),
        "first_tokens_equal_to_unpadded_eager": sum(a[0] == b[0] for a, b in zip(graphed, unpadded_eager)),
    }


FEED_PROMPT_LENGTHS = (250, 40, None, 7)  # slot 2 idle; 250 + FEED_STEPS crosses the 256-column KV bucket
FEED_STEPS = 24


def decode_feed_agreement(variant: str, config, tensors, vocab_size: int) -> dict:
    engine = cuda_engine(config, tensors, max_batch_size=len(FEED_PROMPT_LENGTHS), max_seq_len=300)
    pool, runner = engine.scheduler.pool, engine.scheduler.runner
    generator = torch.Generator().manual_seed(4)
    prompts = [
        torch.randint(1, vocab_size, (length,), generator=generator).tolist() if length else None
        for length in FEED_PROMPT_LENGTHS
    ]

    def prefilled_rows() -> list:
        return [
            (int(engine.prefill(pool, slot, prompt, 0)), len(prompt)) if prompt else None
            for slot, prompt in enumerate(prompts)
        ]

    try:
        with torch.inference_mode():
            step, chained = runner.launch(prefilled_rows()), []
            for index in range(FEED_STEPS):  # as the scheduler does: launch the next, then read this one
                following = runner.launch_next(step) if index + 1 < FEED_STEPS else None
                chained.append([token for token, row in zip(step.result(), step.rows) if row])
                step = following
            rows, host_fed = prefilled_rows(), []  # the same prefill rewrites the same cache columns
            for _ in range(FEED_STEPS):
                produced = runner.launch(rows).result()
                host_fed.append([produced[b] for b, row in enumerate(rows) if row])
                rows = [(produced[b], row[1] + 1) if row else None for b, row in enumerate(rows)]
            graphs = runner.stats()["captured_graphs"]
    finally:
        engine.close()
    return {
        "variant": variant,
        "steps": FEED_STEPS,
        "decode_graphs": graphs,
        "fed_back_equals_host_fed": chained == host_fed,
    }


def fp8_codes_agreement(variant: str, config, tensors, vocab_size: int) -> dict:
    import torch._inductor.config as inductor

    prompts = random_prompts(vocab_size, seed=5)
    exact_division = hasattr(getattr(inductor, "eager_numerics", None), "division_rounding")

    def tokens() -> list[list[int]]:
        engine = cuda_engine(config, tensors, max_batch_size=4, max_seq_len=160)
        try:
            return generate_each(engine, prompts)
        finally:
            engine.close()

    division = (
        inductor.patch({"eager_numerics.division_rounding": True}) if exact_division else contextlib.nullcontext()
    )
    with division:
        with setting("fp8_codes_from_attention"):
            from_attention = tokens()
        with setting("fp8_quantize_kernel"):
            quantize_kernel = tokens()
    equal = from_attention == quantize_kernel
    return {
        "variant": variant,
        "inductor_division_rounding": exact_division,
        "tokens_equal": equal,
        # required only where both sides divide with IEEE rounding (see the module docstring)
        "codes_from_attention_equals_quantize_kernel": equal or not exact_division,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="smollm2-135m", choices=list(SHAPES))
    parser.add_argument("--variants", nargs="+", default=["bf16", "fp8", "int8_sq"], choices=list(VARIANTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 2
    model = random_hf_model(args.shape, torch.bfloat16)
    vocab_size = model.config.vocab_size
    amax = calibrate_amax(model, torch.randint(1, vocab_size, (1, 128), generator=torch.Generator().manual_seed(2)))
    base_config, base_tensors = float_checkpoint(model, "bfloat16")
    del model
    results = []
    for variant in args.variants:
        config, tensors = quantize_checkpoint(base_config, base_tensors, amax, variant)
        results.append(agreement(variant, config, tensors, vocab_size))
        print(results[-1], flush=True)
        results.append(decode_feed_agreement(variant, config, tensors, vocab_size))
        print(results[-1], flush=True)
        if variant.startswith("fp8"):
            results.append(fp8_codes_agreement(variant, config, tensors, vocab_size))
            print(results[-1], flush=True)
    prefill_ok = all(
        r["graphed_equals_padded_eager"] and r["prefills_from_graphs"] for r in results if "prompt_lengths" in r
    )
    checks = ("fed_back_equals_host_fed", "codes_from_attention_equals_quantize_kernel")
    return 0 if prefill_ok and all(r.get(check, True) for r in results for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
