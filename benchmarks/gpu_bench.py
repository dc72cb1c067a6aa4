"""Reference runtime vs HF transformers baseline on a GPU, for Llama shapes with RANDOM weights.

    python benchmarks/gpu_bench.py --out OUT [--shapes smollm2-135m llama-3.1-8b] [--concurrency 1 32]

Why random weights: the lent GPU machine cannot download models and the working tree that travels
there is capped at 64 MiB, so neither SmolLM2 (540 MB) nor Llama-3.1-8B can be carried. Speed does
not depend on weight values (greedy decoding always runs the requested number of tokens: the
engines here never stop at EOS), so both engines get the SAME random weights of the real shapes:
an HF `LlamaForCausalLM` is initialized from the shape's config, and its tensors are renamed into a
TensorRT-LLM checkpoint for the reference runtime. Every number this script prints is labelled
"random weights". Only the unquantized path runs: the reference runtime's W8A8 SmoothQuant GEMM
(`torch._int_mm`) refuses 1-row decode on CUDA.

The smollm2-135m shape goes through `python -m foundry.bench` itself (checkpoint and HF directory
written to disk); the 8B shape calls the same `run_benchmark` in-process, to avoid writing and
reading 2 × 16 GB. Needs torch, transformers, numpy, pydantic (no zenml, mlflow or pandas).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foundry.bench.metrics import compare_reports  # noqa: E402
from foundry.bench.runner import engine_model_bytes, run_benchmark  # noqa: E402
from foundry.bench.telemetry import GPUTelemetry  # noqa: E402
from foundry.bench.workload import synthetic_workload_with_description  # noqa: E402

SHAPES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct config.json
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    # meta-llama/Llama-3.1-8B config.json (rope_scaling left out: the reference runtime refuses it;
    # it changes no shape and no cost)
    "llama-3.1-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
}
SLO = "ttft_ms:500,tpot_ms:30"  # MLPerf Inference Llama3.1-8B interactive limits (p99)


def random_hf_model(shape: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def trtllm_checkpoint(model, dtype_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, tensors) of a TensorRT-LLM Llama checkpoint holding the HF model's weights."""
    c = model.config
    head = c.hidden_size // c.num_attention_heads
    config = {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype_name,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "hidden_size": c.hidden_size,
        "head_size": head,
        "intermediate_size": c.intermediate_size,
        "vocab_size": c.vocab_size,
        "norm_epsilon": c.rms_norm_eps,
        "rotary_base": c.rope_theta if getattr(c, "rope_theta", None) else c.rope_parameters["rope_theta"],
        "max_position_embeddings": c.max_position_embeddings,
        "position_embedding_type": "rope_gpt_neox",
        "hidden_act": "silu",
        "share_embedding_table": bool(c.tie_word_embeddings),
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "mapping": {"tp_size": 1, "pp_size": 1},
    }
    m = model.model
    tensors = {
        "transformer.vocab_embedding.weight": m.embed_tokens.weight.data,
        "transformer.ln_f.weight": m.norm.weight.data,
    }
    if not c.tie_word_embeddings:
        tensors["lm_head.weight"] = model.lm_head.weight.data
    for i, layer in enumerate(m.layers):
        p = f"transformer.layers.{i}"
        a, mlp = layer.self_attn, layer.mlp
        tensors[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight.data
        tensors[f"{p}.post_layernorm.weight"] = layer.post_attention_layernorm.weight.data
        tensors[f"{p}.attention.qkv.weight"] = torch.cat(
            [a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data]
        )
        tensors[f"{p}.attention.dense.weight"] = a.o_proj.weight.data
        tensors[f"{p}.mlp.fc.weight"] = mlp.gate_proj.weight.data
        tensors[f"{p}.mlp.gate.weight"] = mlp.up_proj.weight.data
        tensors[f"{p}.mlp.proj.weight"] = mlp.down_proj.weight.data
    return config, tensors


def greedy_agreement(reference, hf, vocab_size: int, tokens: int = 16) -> float:
    prompt = torch.randint(1, vocab_size, (32,), generator=torch.Generator().manual_seed(1)).tolist()
    a, b = reference.generate(prompt, tokens), hf.generate(prompt, tokens)
    return sum(x == y for x, y in zip(a, b)) / tokens


def run_cli(shape: str, model, args, work: Path, out: Path) -> dict:
    """smollm2 shape: write both directories, then run `python -m foundry.bench` as a user would."""
    from safetensors.torch import save_file

    hf_dir, ckpt_dir = work / f"{shape}-hf", work / f"{shape}-trtllm-ckpt"
    model.save_pretrained(hf_dir, safe_serialization=True)
    config, tensors = trtllm_checkpoint(model, "bfloat16")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (ckpt_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {
            k: v.contiguous()
            for k, v in tensors.items()
            if not (config["share_embedding_table"] and k == "lm_head.weight")
        },
        str(ckpt_dir / "rank0.safetensors"),
    )
    cli_out = out / "smollm2_cli"
    command = [
        sys.executable,
        "-m",
        "foundry.bench",
        "--engine-dir",
        str(ckpt_dir),
        "--baseline-hf-dir",
        str(hf_dir),
        "--device",
        "cuda",
        "--hf-dtype",
        "bfloat16",
        "--concurrency",
        *map(str, args.concurrency),
        "--num-requests",
        str(args.num_requests),
        "--warmup-requests",
        "1",
        "--input-len",
        *map(str, args.input_len),
        "--output-len",
        str(args.output_len),
        str(args.output_len),
        "--slo",
        SLO,
        "--out",
        str(cli_out),
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    for name in ("requests.csv", "baseline_requests.csv"):
        (cli_out / name).unlink(missing_ok=True)  # the device returns at most 8 files
    return {
        "command": " ".join(command),
        "wall_s": time.perf_counter() - started,
        "engine": json.loads((cli_out / "report.json").read_text()),
        "baseline": json.loads((cli_out / "baseline_report.json").read_text()),
        "comparison": json.loads((cli_out / "comparison.json").read_text()),
    }


def run_in_process(shape: str, model, args) -> dict:
    from foundry.runtime._trtllm_checkpoint import LlamaCheckpointConfig
    from foundry.runtime.hf import HFEngine
    from foundry.runtime.reference import ReferenceEngine

    config, tensors = trtllm_checkpoint(model, "bfloat16")
    ckpt_config = LlamaCheckpointConfig(
        num_layers=config["num_hidden_layers"],
        hidden_size=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config["num_key_value_heads"],
        head_size=config["head_size"],
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        norm_epsilon=config["norm_epsilon"],
        rotary_base=config["rotary_base"],
        max_positions=config["max_position_embeddings"],
        quant_algo=None,
        share_embedding_table=config["share_embedding_table"],
    )
    reference = ReferenceEngine(ckpt_config, tensors, torch.bfloat16, device="cuda")
    hf = HFEngine(model, torch.device("cuda"), name=shape)
    requests, workload = synthetic_workload_with_description(
        0, args.num_requests, 1, *args.input_len, args.output_len, args.output_len, vocab_size=config["vocab_size"]
    )
    reports = {}
    for label, engine in (("engine", reference), ("baseline", hf)):
        reports[label] = run_benchmark(
            engine,
            requests,
            args.concurrency,
            1,
            model=f"{shape} (random weights)",
            workload=workload,
            slo=SLO,
            telemetry=GPUTelemetry(0),
            model_bytes=engine_model_bytes(engine),
        )
    return {
        "command": f"in-process run_benchmark (see benchmarks/gpu_bench.py run_in_process), shape {shape}",
        "greedy_token_agreement_ref_vs_hf": greedy_agreement(reference, hf, config["vocab_size"]),
        "engine": reports["engine"].model_dump(mode="json"),
        "baseline": reports["baseline"].model_dump(mode="json"),
        "comparison": [row.model_dump(mode="json") for row in compare_reports(reports["engine"], reports["baseline"])],
    }


def table(results: dict) -> str:
    lines = [
        "| shape (random weights) | backend | concurrency | out tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms "
        "| goodput req/s (500/30 ms) | MBU | GPU mem peak MiB | util mean % | power max W |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, result in results.items():
        for label in ("engine", "baseline"):
            report = result[label]
            t = report.get("telemetry") or {}
            for lv in report["levels"]:
                mbu = f"{lv['mbu']:.1%}" if lv.get("mbu") is not None else "–"
                lines.append(
                    f"| {shape} | {report['backend']} | {lv['concurrency']} | {lv['output_token_throughput_tok_s']:.1f} "
                    f"| {lv['ttft']['p50_ms']:.1f} / {lv['ttft']['p99_ms']:.1f} | {lv['tpot']['p50_ms']:.2f} / {lv['tpot']['p99_ms']:.2f} "
                    f"| {lv['goodput_req_s']:.2f} | {mbu} | {t.get('memory_used_peak_mib') or 0:.0f} "
                    f"| {t.get('gpu_utilization_mean_pct') or 0:.0f} | {t.get('power_max_w') or 0:.0f} |"
                )
        for row in result["comparison"]:
            lines.append(
                f"| {shape} | reference / hf ratio | {row['concurrency']} | {row['speedup_output_tok_s']:.2f}x "
                f"| {row['ttft_p50_ratio']:.2f} / {row['ttft_p99_ratio']:.2f} | {row['tpot_p50_ratio']:.2f} / {row['tpot_p99_ratio']:.2f} | | | | | |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/foundry-gpu-bench"))
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--input-len", type=int, nargs=2, default=[96, 128])
    parser.add_argument("--output-len", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for shape in args.shapes:
        started = time.perf_counter()
        model = random_hf_model(shape, torch.bfloat16)
        print(f"{shape}: random bf16 model built in {time.perf_counter() - started:.1f} s", flush=True)
        results[shape] = (
            run_cli(shape, model, args, args.work, args.out)
            if shape == "smollm2-135m"
            else run_in_process(shape, model, args)
        )
        del model
        torch.cuda.empty_cache()
        (args.out / "gpu_results.json").write_text(json.dumps(results, indent=1))  # after each shape
        print(table(results), flush=True)
    text = table(results)
    (args.out / "gpu_table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
