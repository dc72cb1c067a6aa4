"""ReferenceEngine: parity with HF transformers (unquantized) and with ModelOpt's fake-quant model
(SmoothQuant), KV-cache greedy decoding, thread safety, and refusal of bad checkpoints.

ModelOpt 0.47 exports TensorRT-LLM checkpoints only in float16/bfloat16. To compare runtime
semantics rather than storage rounding, the source model's weights are rounded to float16 first, so
the float16 export stores them losslessly.
"""

from __future__ import annotations

import json
import shutil
import threading
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from foundry.calibrate import (
    calibrate_to_trtllm_checkpoint,
    export_trtllm_checkpoint,
    load_hf_model_fp32,
    quantize_smoothquant,
)
from foundry.config import CalibrationConfig
from foundry.data import builtin_documents, token_windows
from foundry.errors import FoundryError, NotSupportedError
from foundry.runtime.base import Engine
from foundry.runtime.reference import ReferenceEngine, _fused_fc_gate
from tests.conftest import save_fp16_exact_copy

GREEDY_STEPS = 16


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On 2 shared cores, OpenMP threads spin against each other (a 1×576×960 GEMM went from 0.2 ms
    to 9 ms); one thread keeps this file fast."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fp16_exact_hf_dir(smollm2_hf_dir, tmp_path_factory):
    out = save_fp16_exact_copy(smollm2_hf_dir, tmp_path_factory.mktemp("smollm2_fp16_exact"))
    for tokenizer_file in smollm2_hf_dir.glob("tokenizer*"):
        shutil.copy(tokenizer_file, out / tokenizer_file.name)
    return out


@pytest.fixture(scope="module")
def hf_model(fp16_exact_hf_dir):
    return load_hf_model_fp32(fp16_exact_hf_dir)


@pytest.fixture(scope="module")
def eval_ids(smollm2_tokenizer) -> torch.Tensor:
    return token_windows(builtin_documents("evaluation"), smollm2_tokenizer, 2, 32, "evaluation").input_ids


@pytest.fixture(scope="module")
def plain_engine(fp16_exact_hf_dir, tmp_path_factory) -> ReferenceEngine:
    out = tmp_path_factory.mktemp("plain_ckpt")
    calibrate_to_trtllm_checkpoint(
        fp16_exact_hf_dir, CalibrationConfig(quantization="none"), torch.zeros(0, 0, dtype=torch.int64), out
    )
    return ReferenceEngine.load(out)


@pytest.fixture(scope="module")
def smoothquant(fp16_exact_hf_dir, smollm2_tokenizer, tmp_path_factory):
    """(ModelOpt fake-quant model, ReferenceEngine over its exported checkpoint)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    calibration = token_windows(builtin_documents("calibration"), smollm2_tokenizer, 8, 64, "calibration")
    model = load_hf_model_fp32(fp16_exact_hf_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_smoothquant(model, calibration.input_ids, alpha=0.8)
    out = tmp_path_factory.mktemp("sq_ckpt")
    # The export re-smooths q/k/v (and gate/up) onto one shared smoother in place, so the fake-quant
    # model *after* export is the one whose semantics the checkpoint carries.
    export_trtllm_checkpoint(model, out, "float16")
    # The checkpoint stores prequant_scaling_factor in float16 (ModelOpt's choice); give the
    # fake-quant model the same rounded smoother so only runtime arithmetic is compared.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TensorQuantizer) and module.pre_quant_scale is not None:
                module.pre_quant_scale = module.pre_quant_scale.half().float()
    return model, ReferenceEngine.load(out)


def hf_greedy_without_cache(model, prompt: list[int], steps: int) -> list[int]:
    """Full recompute each step: independent of any KV cache."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(steps):
            next_token = model(ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, next_token.view(1, 1)], dim=1)
    return ids[0, len(prompt) :].tolist()


def kl_divergence(target_logits: torch.Tensor, candidate_logits: torch.Tensor) -> float:
    target, candidate = torch.log_softmax(target_logits, -1), torch.log_softmax(candidate_logits, -1)
    return (target.exp() * (target - candidate)).sum(-1).mean().item()


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(-1) == b.argmax(-1)).float().mean().item()


# ---------------------------------------------------------------- unquantized


def test_engine_protocol(plain_engine):
    assert isinstance(plain_engine, Engine)
    assert plain_engine.backend == "reference"
    assert plain_engine.quant_algo is None


def test_plain_logits_match_hf(plain_engine, hf_model, eval_ids):
    """Same fp32 math as HF Llama (RMSNorm, GPT-NeoX RoPE with theta 100000, GQA, SiLU-gated MLP
    with mlp.fc = gate_proj): tolerance 1e-3 absolute on logits of magnitude ~30 (observed 0.0)."""
    with torch.no_grad():
        expected = hf_model(eval_ids).logits
    got = plain_engine.logits(eval_ids)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-3
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_plain_greedy_with_kv_cache_matches_hf_recompute(plain_engine, hf_model, eval_ids):
    prompt = eval_ids[0, :12].tolist()
    streamed: list[int] = []
    generated = plain_engine.generate(prompt, GREEDY_STEPS, on_token=streamed.append)
    assert generated == hf_greedy_without_cache(hf_model, prompt, GREEDY_STEPS)
    assert streamed == generated and len(generated) == GREEDY_STEPS


def test_generate_ignores_eos(plain_engine, smollm2_tokenizer):
    """A prompt that ends a chat turn makes EOS likely; generation must still run to length."""
    prompt = smollm2_tokenizer("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>")["input_ids"]
    assert len(plain_engine.generate(prompt, 6)) == 6


def test_concurrent_generation_is_isolated(plain_engine, eval_ids):
    prompts = [eval_ids[0, :8].tolist(), eval_ids[1, :10].tolist(), eval_ids[0, 5:20].tolist()]
    sequential = [plain_engine.generate(prompt, 6) for prompt in prompts]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = plain_engine.generate(prompts[index], 6)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [results[i] for i in range(len(prompts))] == sequential


# ---------------------------------------------------------------- SmoothQuant


def test_int8_gemm_matches_exact_integer_product():
    """torch._int_mm accumulates exactly in int32 (what the runtime relies on)."""
    torch.manual_seed(0)
    activations = torch.randint(-127, 128, (7, 576), dtype=torch.int8)
    weight = torch.randint(-127, 128, (960, 576), dtype=torch.int8)
    exact = activations.long() @ weight.long().t()
    assert torch.equal(torch._int_mm(activations, weight.t()).long(), exact)


def test_smoothquant_linears_match_modelopt_fake_quant(smoothquant, eval_ids):
    """Each quantized linear, fed the fake-quant model's own activations, reproduces ModelOpt's
    output. Unavoidable: the checkpoint stores the activation scale amax/127 rather than amax, so
    x·(1/scale) and ModelOpt's x·(127/amax) differ in the last bit and a handful of int8 codes
    land on the other side of a rounding boundary (observed ≤ 5 of 36864). Tolerance: ≤ 0.1% of
    activation codes differ, and the mean absolute output error is ≤ 0.1% of the mean output."""
    model, engine = smoothquant
    for layer_index in (0, 14, 29):
        hf_layer, layer = model.model.layers[layer_index], engine.layers[layer_index]
        pairs = {
            "q_proj": (hf_layer.self_attn.q_proj, layer.qkv, slice(0, 576)),
            "k_proj": (hf_layer.self_attn.k_proj, layer.qkv, slice(576, 768)),
            "v_proj": (hf_layer.self_attn.v_proj, layer.qkv, slice(768, 960)),
            "o_proj": (hf_layer.self_attn.o_proj, layer.dense, slice(None)),
            "gate_proj": (hf_layer.mlp.gate_proj, layer.fc, slice(None)),
            "up_proj": (hf_layer.mlp.up_proj, layer.gate, slice(None)),
            "down_proj": (hf_layer.mlp.down_proj, layer.proj, slice(None)),
        }
        captured = {}
        hooks = [
            module.register_forward_hook(lambda m, args, out, key=key: captured.__setitem__(key, (args[0], out)))
            for key, (module, _, _) in pairs.items()
        ]
        with torch.no_grad():
            model(eval_ids)
        for hook in hooks:
            hook.remove()
        for key, (module, linear, rows) in pairs.items():
            x, expected = captured[key]
            with torch.no_grad():
                modelopt_codes = (module.input_quantizer(x) / (module.input_quantizer.amax.float() / 127)).round()
            code_mismatch = (linear.quantize_activation(x).float() != modelopt_codes).float().mean().item()
            with torch.inference_mode():
                got = linear(x)[..., rows]
            relative_error = ((got - expected).abs().mean() / expected.abs().mean()).item()
            assert code_mismatch <= 1e-3, (layer_index, key, code_mismatch)
            assert relative_error <= 1e-3, (layer_index, key, relative_error)


def test_smoothquant_logits_track_modelopt_fake_quant(smoothquant, hf_model, eval_ids):
    """End to end, the few rounding-boundary flips above propagate through 30 layers, so logits are
    compared as distributions. Tolerance: top-1 agreement ≥ 90% and KL(fake-quant ‖ reference)
    ≤ 0.05 nats (observed ≈ 0.95 and ≈ 0.013), and the runtime's deviation from ModelOpt must be
    smaller than ModelOpt's own quantization error against the fp32 model."""
    model, engine = smoothquant
    with torch.no_grad():
        fake_quant = model(eval_ids).logits
        fp32 = hf_model(eval_ids).logits
    got = engine.logits(eval_ids)
    assert engine.quant_algo == "W8A8_SQ_PER_CHANNEL"
    assert top1_agreement(got, fake_quant) >= 0.90
    runtime_kl = kl_divergence(fake_quant, got)
    assert runtime_kl <= 0.05
    assert runtime_kl < kl_divergence(fp32, fake_quant)


def test_smoothquant_generate_streams_valid_tokens(smoothquant, eval_ids):
    _, engine = smoothquant
    streamed: list[int] = []
    generated = engine.generate(eval_ids[0, :12].tolist(), 8, on_token=streamed.append)
    assert streamed == generated and len(generated) == 8
    assert all(0 <= token < 49152 for token in generated)


# ---------------------------------------------------------------- bad checkpoints


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_llama_hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ckpt")
    calibrate_to_trtllm_checkpoint(
        tiny_llama_hf_dir, CalibrationConfig(quantization="none"), torch.zeros(0, 0, dtype=torch.int64), out
    )
    return out


def copy_checkpoint(source, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(source, target)
    return target


def edit_config(checkpoint_dir, edit) -> None:
    path = checkpoint_dir / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_tiny_checkpoint_loads_untied_lm_head(tiny_checkpoint):
    engine = ReferenceEngine.load(tiny_checkpoint)
    assert engine.logits(torch.tensor([[1, 2, 3]])).shape == (1, 3, engine.config.vocab_size)


def test_weight_bytes_count_what_a_decode_step_reads(tiny_checkpoint):
    """MBU's numerator: every weight of the checkpoint except the untied input embedding table, of
    which a step looks up one row per token."""
    engine = ReferenceEngine.load(tiny_checkpoint)  # float32 compute: 4 bytes an element
    tensors = load_file(tiny_checkpoint / "rank0.safetensors")
    every_weight = sum(t.numel() for t in tensors.values()) * 4
    assert engine.weight_bytes() == every_weight - tensors["transformer.vocab_embedding.weight"].numel() * 4


@pytest.mark.parametrize("tied", [True, False])
def test_hf_model_bytes_leave_out_an_untied_embedding_table(tiny_llama_hf_dir, tied):
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from foundry.bench.runner import engine_model_bytes

    model = LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_llama_hf_dir, tie_word_embeddings=tied))
    every_parameter = sum(p.numel() for p in model.parameters()) * 4  # parameters() lists a tied table once
    table = model.get_input_embeddings().weight.numel() * 4
    expected = every_parameter if tied else every_parameter - table
    assert engine_model_bytes(SimpleNamespace(model=model)).weight_bytes == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quant_algo", "NVFP4", "not supported by the reference backend: NVFP4; use the trtllm builder"),
        ("quant_algo", "W4A16_AWQ", "not supported by the reference backend: W4A16_AWQ"),
        ("kv_cache_quant_algo", "NVFP4", "kv_cache_quant_algo not supported by the reference backend: NVFP4"),
    ],
)
def test_unsupported_quantization_is_refused(tiny_checkpoint, tmp_path, field, value, message):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_config(checkpoint, lambda config: config.setdefault("quantization", {}).__setitem__(field, value))
    with pytest.raises(NotSupportedError, match=message):
        ReferenceEngine.load(checkpoint)


def test_pipeline_parallel_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_config(checkpoint, lambda config: config["mapping"].update(world_size=2, pp_size=2))
    with pytest.raises(NotSupportedError, match="pp_size=2"):
        ReferenceEngine.load(checkpoint)


def test_tensor_parallel_config_without_its_rank_files_is_named(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    edit_config(checkpoint, lambda config: config["mapping"].update(world_size=2, tp_size=2))
    with pytest.raises(FoundryError, match=r"rank1\.safetensors: missing"):
        ReferenceEngine.load(checkpoint)


def test_missing_tensor_is_named(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    tensors = load_file(checkpoint / "rank0.safetensors")
    del tensors["transformer.layers.1.mlp.gate.weight"]
    save_file(tensors, checkpoint / "rank0.safetensors")
    with pytest.raises(FoundryError, match=r"rank0\.safetensors.*transformer\.layers\.1\.mlp\.gate\.weight"):
        ReferenceEngine.load(checkpoint)


def test_misshaped_tensor_is_named(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    tensors = load_file(checkpoint / "rank0.safetensors")
    tensors["transformer.layers.0.attention.qkv.weight"] = tensors["transformer.layers.0.attention.qkv.weight"][:-16]
    save_file(tensors, checkpoint / "rank0.safetensors")
    with pytest.raises(FoundryError, match=r"transformer\.layers\.0\.attention\.qkv\.weight has shape"):
        ReferenceEngine.load(checkpoint)


def test_truncated_weights_file_is_named(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    weights = checkpoint / "rank0.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(FoundryError, match=r"rank0\.safetensors.*truncated or corrupt"):
        ReferenceEngine.load(checkpoint)


def test_missing_files_are_named(tiny_checkpoint, tmp_path):
    checkpoint = copy_checkpoint(tiny_checkpoint, tmp_path)
    (checkpoint / "rank0.safetensors").unlink()
    with pytest.raises(FoundryError, match=r"rank0\.safetensors: missing"):
        ReferenceEngine.load(checkpoint)
    (checkpoint / "config.json").unlink()
    with pytest.raises(FoundryError, match=r"config\.json: missing"):
        ReferenceEngine.load(checkpoint)


# ---------------------------------------------------------------- variants (tiny Llama, fast)
# FP8 (emulated), INT8 / FP8 KV cache and tensor parallelism, each pinned against ModelOpt's
# fake-quant model after export (the export re-smooths and rescales in place).


@pytest.fixture(scope="module")
def tiny_windows() -> torch.Tensor:
    return torch.randint(0, 49152, (6, 32), generator=torch.Generator().manual_seed(5))


def fake_quant_and_engine(hf_dir, calibration_ids, out, quantization, kv_cache, tp_size=1):
    """(ModelOpt fake-quant model after export with the checkpoint's stored scales, ReferenceEngine)."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.quantization.nn import TensorQuantizer

    from foundry.calibrate import make_forward_loop, quantization_config

    model = load_hf_model_fp32(hf_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(model, quantization_config(quantization, 0.8, kv_cache), make_forward_loop(calibration_ids))
    export_trtllm_checkpoint(model, out, "float16", tp_size)
    tensors = load_file(out / "rank0.safetensors")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TensorQuantizer) and module.pre_quant_scale is not None:
                module.pre_quant_scale = module.pre_quant_scale.half().float()
        # TensorRT-LLM quantizes K and V with the one kv_cache_scaling_factor ModelOpt exports
        # (max of K and V; FP8 clamped to >= 1): give the fake-quant model the same scales.
        for index, layer in enumerate(model.model.layers):
            name = f"transformer.layers.{index}.attention.kv_cache_scaling_factor"
            if name in tensors:
                for quantizer in (layer.self_attn.k_bmm_quantizer, layer.self_attn.v_bmm_quantizer):
                    quantizer.amax = (tensors[name].float() * quantizer.maxbound).reshape(quantizer.amax.shape)
    return model, ReferenceEngine.load(out)


@pytest.fixture(scope="module")
def tiny_fp32(tiny_fp16_exact_dir):
    return load_hf_model_fp32(tiny_fp16_exact_dir)


@pytest.mark.parametrize(
    ("quantization", "kv_cache", "quant_algo", "kv_algo"),
    [
        ("fp8", "none", "FP8", None),
        ("int8_sq", "int8", "W8A8_SQ_PER_CHANNEL", "INT8"),
        ("fp8", "fp8", "FP8", "FP8"),
        ("none", "int8", None, "INT8"),
    ],
)
def test_variant_logits_track_modelopt_fake_quant(
    tiny_fp16_exact_dir, tiny_fp32, tiny_windows, tmp_path, quantization, kv_cache, quant_algo, kv_algo
):
    """Tolerance as for SmoothQuant above: a few codes flip at rounding boundaries (x / scale vs
    ModelOpt's x · (maxbound / amax)), so logits are compared as distributions, and the runtime's
    deviation from ModelOpt must be well below ModelOpt's own quantization error (or tiny outright)."""
    model, engine = fake_quant_and_engine(tiny_fp16_exact_dir, tiny_windows[:4], tmp_path, quantization, kv_cache)
    assert (engine.quant_algo, engine.config.kv_cache_quant_algo) == (quant_algo, kv_algo)
    eval_ids = tiny_windows[4:]
    with torch.no_grad():
        fake_quant = model(eval_ids).logits
        fp32 = tiny_fp32(eval_ids).logits
    got = engine.logits(eval_ids)
    runtime_kl, quantization_kl = kl_divergence(fake_quant, got), kl_divergence(fp32, fake_quant)
    assert top1_agreement(got, fake_quant) >= 0.95
    assert runtime_kl <= max(0.1 * quantization_kl, 1e-6), (runtime_kl, quantization_kl)
    # the KV-cache path reads back exactly what full recompute quantizes
    prompt = eval_ids[0, :8].tolist()
    generated = engine.generate(prompt, 4)
    recomputed, ids = [], torch.tensor([prompt])
    for _ in range(4):
        token = engine.logits(ids)[0, -1].argmax()
        recomputed.append(int(token))
        ids = torch.cat([ids, token.view(1, 1)], dim=1)
    assert generated == recomputed


def test_fp8_linears_match_modelopt_fake_quant(tiny_fp16_exact_dir, tiny_windows, tmp_path):
    """Each FP8 linear, fed the fake-quant model's own input, reproduces ModelOpt's output
    (relative mean error <= 1%: E4M3 has a 3-bit mantissa, so one flipped code moves a value ~6%)."""
    model, engine = fake_quant_and_engine(tiny_fp16_exact_dir, tiny_windows[:4], tmp_path, "fp8", "none")
    hf_layer, layer = model.model.layers[1], engine.layers[1]
    pairs = {
        "o_proj": (hf_layer.self_attn.o_proj, layer.dense),
        "down_proj": (hf_layer.mlp.down_proj, layer.proj),
        "gate_proj": (hf_layer.mlp.gate_proj, layer.fc),
    }
    captured = {}
    hooks = [
        m.register_forward_hook(lambda m, a, o, key=key: captured.__setitem__(key, (a[0], o)))
        for key, (m, _) in pairs.items()
    ]
    with torch.no_grad():
        model(tiny_windows[4:])
    for hook in hooks:
        hook.remove()
    for key, (_, linear) in pairs.items():
        x, expected = captured[key]
        with torch.inference_mode():
            got = linear(x)
        assert ((got - expected).abs().mean() / expected.abs().mean()).item() <= 1e-2, key
    # CUDA runs fc and gate as one GEMM (ModelOpt exports one activation scale for both; each keeps
    # its own weight scale); on CPU the same stacked layer gives exactly the two side by side.
    tensors = load_file(tmp_path / "rank0.safetensors")
    fused = _fused_fc_gate(engine.config, tensors, "transformer.layers.1", engine.compute_dtype)
    assert fused is not None, "fc and gate were exported with different activation scales"
    x = captured["gate_proj"][0]
    with torch.inference_mode():
        assert torch.equal(fused(x), torch.cat([layer.fc(x), layer.gate(x)], dim=-1))
    # CUDA decode attention hands the output projection its input's E4M3 codes (decode_attention.py,
    # checked bit for bit against quantize_activation on a GPU): the layer takes codes as its input.
    x = captured["o_proj"][0]
    with torch.inference_mode():
        assert torch.equal(layer.dense(layer.dense.quantize_activation(x)), layer.dense(x))


@pytest.mark.parametrize("quantization", ["none", "int8_sq"])
def test_tensor_parallel_checkpoint_gives_the_tp1_logits(tiny_fp16_exact_dir, tiny_windows, tmp_path, quantization):
    """tp_size 2 writes rank0/rank1; the runtime merges them back and must produce the tp=1 logits."""
    engines = {}
    for tp_size in (1, 2):
        out = tmp_path / f"tp{tp_size}"
        calibrate_to_trtllm_checkpoint(
            tiny_fp16_exact_dir, CalibrationConfig(quantization=quantization, tp_size=tp_size), tiny_windows[:4], out
        )
        engines[tp_size] = ReferenceEngine.load(out)
    assert sorted(p.name for p in (tmp_path / "tp2").glob("rank*.safetensors")) == [
        "rank0.safetensors",
        "rank1.safetensors",
    ]
    assert engines[2].config.tp_size == 2
    ids = tiny_windows[4:]
    assert torch.equal(engines[1].logits(ids), engines[2].logits(ids))


def test_decode_attention_kernel_splits_columns_only_where_rows_leave_the_gpu_idle():
    """The CUDA decode-attention kernel (Triton: no CPU run here; decode_step_variants.py checks it
    against SDPA on a GPU) splits a row's columns so that rows × KV heads × splits fills ~2
    programs per SM, never below one 64-column block per split; CPU tensors never take it."""
    from foundry.runtime.decode_attention import serves, split_count

    assert split_count(rows=1, kv_heads=8, columns=257, multiprocessors=132) == 5  # one split per block
    assert split_count(rows=1, kv_heads=8, columns=2049, multiprocessors=132) == 33
    assert split_count(rows=4, kv_heads=8, columns=2049, multiprocessors=132) == 8
    assert split_count(rows=32, kv_heads=8, columns=2049, multiprocessors=132) == 1  # 256 programs already
    assert not serves(torch.zeros(1, 32, 1, 128, dtype=torch.bfloat16))


def test_programmatic_launch_is_for_hopper_gpus_and_its_inductor_switch_exists():
    """pdl.py: the CPU never launches programmatically, and the option handed to torch.compile for
    the decode step names a real inductor setting (a renamed switch would fail here, not on a GPU)."""
    import torch._inductor.config as inductor

    from foundry.runtime import pdl

    cpu = torch.device("cpu")
    assert not pdl.enabled(cpu)
    options = pdl.inductor_options(cpu)
    assert options == {"triton.enable_pdl": False}
    with inductor.patch(options):
        assert inductor.triton.enable_pdl is False


@pytest.mark.parametrize("vocab", [49152, 128256, 1000, 7])  # SmolLM2, Llama-3, a partial last chunk, < chunks
def test_greedy_tokens_equal_argmax_ties_included(vocab):
    from foundry.runtime.reference import greedy_tokens

    generator = torch.Generator().manual_seed(vocab)
    logits = torch.randn((5, vocab), generator=generator).to(torch.bfloat16)
    logits[1] = 0.0  # one value everywhere: index 0
    logits[2, [vocab - 1, vocab // 2, 3 % vocab]] = 100.0  # tied maxima in three chunks: the first wins
    logits[3] = float("-inf")  # nothing above the padding: index 0, as argmax
    logits[4, -1] = 100.0  # the very last logit (the padded chunk's last real one)
    assert torch.equal(greedy_tokens(logits), logits.argmax(dim=-1))
