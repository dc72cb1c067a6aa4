"""A corpus of bad inputs, each run through `python run.py` as a user would (not a test).

For every case: exit code, seconds to refusal, whether ZenML started (the run reached the pipeline),
whether a Python traceback reached the user, and whether anything was registered or promoted.
Prints one line per case and the totals in the form of the reliability issue:
tried / refused up front / refused in pipeline / traceback shown / promoted.

    .venv/bin/python benchmarks/bad_input_corpus.py [--work DIR] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_model(work: Path) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer (the tests' tiny model)."""
    out = work / "tiny"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from foundry.checkpoint import embedded_gguf_path

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def base_config(model_dir: Path) -> dict:
    return {
        "model": {"name": "corpus", "source": {"kind": "hf_dir", "path": str(model_dir)}},
        "calibration": {"num_samples": 4, "seq_len": 32},
        "evaluation": {"num_samples": 2, "seq_len": 32},
        "build": {"backend": "reference", "max_seq_len": 128},
        "benchmark": {
            "num_requests": 2,
            "warmup_requests": 0,
            "input_len": {"min": 8, "max": 12},
            "output_len": {"min": 2, "max": 4},
            "concurrency": [1],
            "baseline": False,
        },
        "gates": {"max_perplexity_ratio": None, "max_mean_kld": None, "min_top1_agreement": None},
    }


def damaged_copy(model_dir: Path, work: Path, name: str, edit) -> Path:
    from safetensors.torch import load_file, save_file

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    edit(tensors, out)
    save_file(tensors, weights, metadata={"format": "pt"})
    return out


def edit_config_json(directory: Path, **fields) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(fields)
    (directory / "config.json").write_text(json.dumps(config))


def cases(work: Path, model_dir: Path) -> dict[str, str | dict]:
    """name → config text (str, written as is) or a config dict."""
    import torch

    def with_(**sections):
        config = base_config(model_dir)
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        return config

    (work / "latin1.txt").write_bytes("caf\xe9 au lait\n\nnoch ein Absatz über Kaffee".encode("latin-1"))
    (work / "bad.jsonl").write_text('{"text": "ok"}\n{not json}\n')
    (work / "nofield.jsonl").write_text('{"body": "a calibration row"}\n')
    (work / "long.jsonl").write_text(
        json.dumps({"task_id": 0, "input_ids": list(range(5, 605)), "output_tokens": 8}) + "\n"
    )
    (work / "dataset-bad.jsonl").write_text('{"task_id": 0, "output_tokens": 0, "input_ids": [1, 2]}\n')
    (work / "notgguf.gguf").write_bytes(b"not a gguf file at all")
    from foundry.data import builtin_documents

    (work / "contaminated.txt").write_text(
        "\n\n".join(
            [f"Own calibration paragraph {i} about rivers, lakes and the weather in the hills." for i in range(60)]
            + builtin_documents("evaluation")[:3]
        )
    )
    missing = damaged_copy(
        model_dir, work, "missing-tensor", lambda t, d: t.pop("model.layers.1.self_attn.k_proj.weight")
    )
    shape = damaged_copy(model_dir, work, "wrong-shape", lambda t, d: t.update({"model.norm.weight": torch.ones(3)}))
    nan = damaged_copy(model_dir, work, "nan", lambda t, d: t["model.norm.weight"].__setitem__(0, float("nan")))
    extra = damaged_copy(
        model_dir, work, "extra-tensor", lambda t, d: t.update({"model.layers.9.mlp.up.weight": torch.ones(2)})
    )
    small_vocab = damaged_copy(
        model_dir,
        work,
        "small-vocab",
        lambda t, d: (
            t.update({k: t[k][:1000].clone() for k in ("model.embed_tokens.weight", "lm_head.weight")}),
            edit_config_json(d, vocab_size=1000),
        ),
    )
    qwen = damaged_copy(
        model_dir, work, "other-arch", lambda t, d: edit_config_json(d, architectures=["GPTNeoXForCausalLM"])
    )
    remote = damaged_copy(
        model_dir, work, "remote-code", lambda t, d: edit_config_json(d, auto_map={"AutoModelForCausalLM": "m.M"})
    )
    short_ctx = damaged_copy(
        model_dir, work, "short-context", lambda t, d: edit_config_json(d, max_position_embeddings=64)
    )
    return {
        "empty config": "",
        "blank config": "   \n\n",
        "not yaml": "model: [unclosed\n",
        "top level a list": "- a\n- b\n",
        "duplicate key": "calibration:\n  num_samples: 4\n  num_samples: 8\n",
        "unknown key": with_(calibration={"num_sampels": 4}),
        "alpha true": with_(calibration={"alpha": True}),
        "alpha out of range": with_(calibration={"alpha": 1.5}),
        "num_samples zero": with_(calibration={"num_samples": 0}),
        "unknown quantization": with_(calibration={"quantization": "int3"}),
        "int4 on reference": with_(calibration={"quantization": "int4_awq"}),
        "tp_size not dividing heads": with_(calibration={"tp_size": 3}),
        "trust_remote_code true": with_(
            model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(model_dir), "trust_remote_code": True}}
        ),
        "bad model name": with_(model={"name": "bad name!", "source": {"kind": "hf_dir", "path": str(model_dir)}}),
        "missing checkpoint dir": with_(
            model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(work / "nope")}}
        ),
        "gguf that is not gguf": with_(
            model={"name": "corpus", "source": {"kind": "gguf", "path": str(work / "notgguf.gguf")}}
        ),
        "glob matching nothing": with_(
            model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(work / "zz-*")}}
        ),
        "unsupported architecture": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(qwen)}}),
        "custom code checkpoint": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(remote)}}),
        "max_seq_len over positions": with_(
            model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(short_ctx)}}
        ),
        "missing tensor": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(missing)}}),
        "wrong tensor shape": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(shape)}}),
        "unexpected tensor": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(extra)}}),
        "NaN weight": with_(model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(nan)}}),
        "tokenizer larger than embedding": with_(
            model={"name": "corpus", "source": {"kind": "hf_dir", "path": str(small_vocab)}}
        ),
        "calibration file missing": with_(calibration={"source": "text", "path": str(work / "nope.txt")}),
        "calibration not utf-8": with_(calibration={"source": "text", "path": str(work / "latin1.txt")}),
        "calibration jsonl broken": with_(calibration={"source": "jsonl", "path": str(work / "bad.jsonl")}),
        "calibration jsonl no field": with_(calibration={"source": "jsonl", "path": str(work / "nofield.jsonl")}),
        "calibration contaminated": with_(calibration={"source": "text", "path": str(work / "contaminated.txt")}),
        "benchmark dataset too long": with_(benchmark={"dataset": str(work / "long.jsonl"), "num_requests": 1}),
        "benchmark dataset invalid": with_(benchmark={"dataset": str(work / "dataset-bad.jsonl"), "num_requests": 1}),
        "benchmark dataset missing": with_(benchmark={"dataset": str(work / "nope.jsonl")}),
        "lengths over max_seq_len": with_(
            benchmark={"input_len": {"min": 100, "max": 120}, "output_len": {"min": 20, "max": 30}}
        ),
        "not enough evaluation text": with_(evaluation={"num_samples": 5000, "seq_len": 32}),
        "random weights with sanity gate": with_(gates={"max_unquantized_perplexity": 50}),
    }


def run_case(config, work: Path, state: Path, name: str) -> dict:
    path = work / "configs" / (name.replace(" ", "-") + ".yaml")
    path.parent.mkdir(exist_ok=True)
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state)}
    env.pop("ZENML_CONFIG_PATH", None)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    output = result.stdout + result.stderr
    message = next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")
    return {
        "name": name,
        "exit": result.returncode,
        "seconds": round(seconds, 1),
        "in_pipeline": "Initiating a new run" in output or "step " in message,
        "traceback": "Traceback (most recent call last)" in output,
        "promoted": "PROMOTED" in result.stdout and "NOT PROMOTED" not in result.stdout,
        "message": message[:160],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "foundry-bad-inputs")
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = tiny_model(args.work)
    rows = []
    for name, config in cases(args.work, model_dir).items():
        if args.only and args.only not in name:
            continue
        row = run_case(config, args.work, args.work / "state", name)
        rows.append(row)
        print(
            f"{row['exit']:>3} {row['seconds']:>6.1f}s {'pipeline' if row['in_pipeline'] else 'preflight':>9} "
            f"{'TRACEBACK ' if row['traceback'] else ''}{'PROMOTED ' if row['promoted'] else ''}{name}: {row['message']}",
            flush=True,
        )
    refused = [r for r in rows if r["exit"] in (2, 3, 4)]
    print(
        f"\ntried {len(rows)} / refused up front {sum(not r['in_pipeline'] for r in refused)} / refused in pipeline "
        f"{sum(r['in_pipeline'] for r in refused)} / traceback shown {sum(r['traceback'] for r in rows)} / "
        f"promoted {sum(r['promoted'] for r in rows)} / accepted silently {sum(r['exit'] == 0 for r in rows)}"
    )
    print(
        f"refused in under 10 s with exit 2: {sum(r['exit'] == 2 and r['seconds'] < 10 for r in rows)} of {len(rows)}"
    )
    (args.work / "corpus.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
