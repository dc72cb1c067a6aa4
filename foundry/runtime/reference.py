"""The reference backend: executes a TensorRT-LLM Llama checkpoint in plain PyTorch.

It reproduces the checkpoint's quantization semantics (TensorRT-LLM `W8A8_SQ_PER_CHANNEL`, as
exported by ModelOpt 0.47, its per-token form `W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN`, FP8, INT8/FP8 KV) so a checkpoint can be proven numerically sound, and benchmarked, where
TensorRT-LLM is absent. Weights are read-only after load; every request owns its KV cache, so
several threads can generate on one engine at once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from foundry.errors import FoundryError, NotSupportedError
from foundry.runtime._trtllm_checkpoint import (
    FP8,
    SMOOTHQUANT_PER_CHANNEL,
    SMOOTHQUANT_PER_TOKEN,
    LlamaCheckpointConfig,
    load_tensors,
    parse_config,
)
from foundry.runtime.base import TokenCallback

INT8_MAX = 127.0  # ModelOpt quantizes activations to the narrow range [-127, 127]


class FloatLinear:
    """y = x W^T with the weight held in the compute dtype."""

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype):
        self.weight = weight.to(compute_dtype).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class SmoothQuantLinear:
    """TensorRT-LLM W8A8_SQ_PER_CHANNEL: int8 weights with a per-output-channel scale, activations
    smoothed by `prequant_scaling_factor`, then quantized per tensor with a static scale.

    y = (round(x * s_pre / s_act) ∘ W_int8^T) * s_act * s_w, with the rounding and clamp of
    ModelOpt's fake quantizer (round half to even, clamp to ±127) so parity with it holds.
    The GEMM is a true int8 × int8 → int32 `torch._int_mm` (exact integer accumulation). It beat an
    fp32 matmul over dequantized weights with the same quantization on the 2-core CI CPU, SmolLM2:
    128-token prefill 188 vs 352 ms, 16-in/33-out generate 1.20 vs 1.91 s (2 threads); 261 vs
    563 ms and 1.74 vs 2.83 s (1 thread). On Hopper GPUs int8 cuBLAS is slower than bf16 (see
    measurements.md), so a GPU path should revisit this choice.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype):
        weight = tensors[f"{name}.weight"]
        # [in, out] view of the [out, in] row-major weight: the column-major B operand oneDNN prefers.
        self.weight_int8_t = weight.t()
        self.in_features = weight.shape[1]
        self.prequant_scale = tensors[f"{name}.prequant_scaling_factor"].float()
        self.activation_scale = tensors[f"{name}.activation_scaling_factor"].float().reshape(())
        self.inverse_activation_scale = 1.0 / self.activation_scale
        # act scale × weight scale, applied once to the int32 accumulator
        self.output_scale = (self.activation_scale * tensors[f"{name}.weights_scaling_factor"].float()).contiguous()
        self.compute_dtype = compute_dtype

    def quantize_activation(self, x: torch.Tensor) -> torch.Tensor:
        smoothed = x.float() * self.prequant_scale
        scaled = smoothed * self.inverse_activation_scale
        return scaled.round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        leading_shape = x.shape[:-1]
        x_int8 = self.quantize_activation(x).reshape(-1, self.in_features)
        accumulator = torch._int_mm(x_int8, self.weight_int8_t)
        y = accumulator.float() * self.output_scale
        return y.reshape(*leading_shape, -1).to(self.compute_dtype)


class SmoothQuantPerTokenLinear:
    """TensorRT-LLM W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN (tensorrt_llm/quantization/layers.py):
    int8 weights with `per_channel_scale`; the input, divided by `smoother` where the layer has one
    (dense, proj; qkv/fc/gate have theirs folded into the preceding norm), is quantized per token
    at run time: s_t = amax(|x_t|) / 127 (amax floored at 1e-6 like the kernel), round to nearest
    even, saturate to ±127. y = (q ∘ W_int8^T) · s_t · s_w, on the same torch._int_mm as above."""

    AMAX_FLOOR = 1e-6

    def __init__(self, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype):
        weight = tensors[f"{name}.weight"]
        self.weight_int8_t = weight.t()
        self.in_features = weight.shape[1]
        smoother = tensors.get(f"{name}.smoother")
        self.inverse_smoother = None if smoother is None else (1.0 / smoother.float()).reshape(-1)
        self.weight_scale = tensors[f"{name}.per_channel_scale"].float().reshape(-1)
        self.compute_dtype = compute_dtype

    def quantize_activation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, per-token scale [..., 1])."""
        x = x.float()
        if self.inverse_smoother is not None:
            x = x * self.inverse_smoother
        token_scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=self.AMAX_FLOOR) / INT8_MAX
        return (x / token_scale).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), token_scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        leading_shape = x.shape[:-1]
        x_int8, token_scale = self.quantize_activation(x)
        accumulator = torch._int_mm(x_int8.reshape(-1, self.in_features), self.weight_int8_t)
        y = accumulator.float() * token_scale.reshape(-1, 1) * self.weight_scale
        return y.reshape(*leading_shape, -1).to(self.compute_dtype)


FP8_E4M3_MAX = 448.0


def fake_quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E4M3 round trip with a static per-tensor scale (saturating at ±448), in float32."""
    return (x.float() / scale).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).float() * scale


def fake_quantize_int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 round trip (round half to even, narrow range ±127) with a static scale, in float32."""
    return (x.float() / scale).round_().clamp_(-INT8_MAX, INT8_MAX) * scale


class Fp8Linear:
    """TensorRT-LLM FP8 (ModelOpt FP8_DEFAULT_CFG): E4M3 weight with one per-tensor scale, activations
    cast to E4M3 with a static per-tensor scale. Emulated: the E4M3 values are exact in float32, so
    y = (fp8(x / s_a) · fp8(W)^T) · s_a · s_w computed in float32 matches an FP8 GEMM with float32
    accumulation up to summation order. No speed claim: CPUs have no FP8 GEMM."""

    def __init__(self, tensors: dict[str, torch.Tensor], name: str, compute_dtype: torch.dtype):
        self.weight = tensors[f"{name}.weight"].float()  # E4M3 codes, exactly representable
        self.activation_scale = tensors[f"{name}.activation_scaling_factor"].float().reshape(())
        self.output_scale = self.activation_scale * tensors[f"{name}.weights_scaling_factor"].float().reshape(())
        self.compute_dtype = compute_dtype

    def quantize_activation(self, x: torch.Tensor) -> torch.Tensor:
        """E4M3 codes of x (as float32)."""
        return (x.float() / self.activation_scale).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (F.linear(self.quantize_activation(x), self.weight) * self.output_scale).to(self.compute_dtype)


class KVQuantizer:
    """TensorRT-LLM's quantized KV cache: K (after RoPE) and V stored as INT8 or FP8 with the layer's
    one `kv_cache_scaling_factor`. Emulated: values are round-tripped at write time and kept
    dequantized, so attention reads exactly what a quantized cache holds (no memory saving)."""

    def __init__(self, algo: str, scale: torch.Tensor):
        self.scale = scale.float().reshape(())
        self.function = {"INT8": fake_quantize_int8, "FP8": fake_quantize_fp8}[algo]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, self.scale).to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Llama RMSNorm, computed in float32 like HF and TensorRT-LLM."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + epsilon)
    return weight * normed.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def scaled_inverse_frequency(inverse_frequency: torch.Tensor, scaling: dict | None) -> torch.Tensor:
    """RoPE frequencies under the checkpoint's `rotary_scaling` (TensorRT-LLM's names, HF's values):
    `llama3` (Llama 3.1/3.2: low frequencies divided by `factor`, a smooth ramp between) and `linear`
    (every frequency divided by `factor`), as transformers' _compute_llama3_parameters and
    _compute_linear_scaling_rope_parameters compute them. Other types are refused at load."""
    if scaling is None:
        return inverse_frequency
    factor = float(scaling["factor"])
    if scaling["type"] == "linear":
        return inverse_frequency / factor
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inverse_frequency
    scaled = torch.where(wavelength > old_context / low, inverse_frequency / factor, inverse_frequency)
    smooth = (old_context / wavelength - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelength < old_context / high) * ~(wavelength > old_context / low)
    return torch.where(medium, smoothed, scaled)


class RotaryTable:
    """cos/sin for every position up to max_positions (GPT-NeoX layout: halves, not interleaved)."""

    def __init__(
        self, head_size: int, rotary_base: float, max_positions: int, dtype: torch.dtype, scaling: dict | None = None
    ):
        inverse_frequency = scaled_inverse_frequency(
            1.0 / (rotary_base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size)), scaling
        )
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inverse_frequency)
        angles = torch.cat((angles, angles), dim=-1)
        self.cos = angles.cos().to(dtype)
        self.sin = angles.sin().to(dtype)
        self.max_positions = max_positions

    def apply(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: [batch, heads, seq, head_size] at positions start .. start+seq-1."""
        seq_len = x.shape[2]
        cos = self.cos[start : start + seq_len]
        sin = self.sin[start : start + seq_len]
        return x * cos + rotate_half(x) * sin


class KVCache:
    """Preallocated per-request keys/values: [layers] × [batch, kv_heads, capacity, head_size]."""

    def __init__(
        self,
        config: LlamaCheckpointConfig,
        batch: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (batch, config.num_kv_heads, capacity, config.head_size)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]

    def update(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        end = start + keys.shape[2]
        self.keys[layer][:, :, start:end] = keys
        self.values[layer][:, :, start:end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class DecoderLayer:
    def __init__(self, tensors: dict[str, torch.Tensor], layer: int, config: LlamaCheckpointConfig, compute_dtype):
        prefix = f"transformer.layers.{layer}"
        make_linear = _linear_factory(config, tensors, compute_dtype)
        self.index = layer
        self.config = config
        if config.quant_algo == SMOOTHQUANT_PER_TOKEN:
            _require_unit_scale_to_int(tensors, prefix)
        self.input_norm = tensors[f"{prefix}.input_layernorm.weight"].to(compute_dtype)
        self.post_norm = tensors[f"{prefix}.post_layernorm.weight"].to(compute_dtype)
        self.qkv = make_linear(f"{prefix}.attention.qkv")
        bias = tensors.get(f"{prefix}.attention.qkv.bias")
        self.qkv_bias = bias.to(compute_dtype) if config.qkv_bias and bias is not None else None
        self.dense = make_linear(f"{prefix}.attention.dense")
        self.fc = make_linear(f"{prefix}.mlp.fc")  # HF gate_proj: the SiLU-activated branch
        self.gate = make_linear(f"{prefix}.mlp.gate")  # HF up_proj: the linear branch
        self.proj = make_linear(f"{prefix}.mlp.proj")  # HF down_proj
        self.q_width = config.num_heads * config.head_size
        self.kv_width = config.num_kv_heads * config.head_size
        self.kv_quantizer = None
        if config.kv_cache_quant_algo is not None:
            self.kv_quantizer = KVQuantizer(
                config.kv_cache_quant_algo, tensors[f"{prefix}.attention.kv_cache_scaling_factor"]
            )

    def attention(self, x: torch.Tensor, rotary: RotaryTable, cache: KVCache | None, start: int) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        config = self.config
        qkv = self.qkv(x)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        q, k, v = qkv.split((self.q_width, self.kv_width, self.kv_width), dim=-1)
        q = q.view(batch, seq_len, config.num_heads, config.head_size).transpose(1, 2)
        k = k.view(batch, seq_len, config.num_kv_heads, config.head_size).transpose(1, 2)
        v = v.view(batch, seq_len, config.num_kv_heads, config.head_size).transpose(1, 2)
        q, k = rotary.apply(q, start), rotary.apply(k, start)
        if self.kv_quantizer is not None:  # what the cache holds, also for the prompt's own attention
            k, v = self.kv_quantizer(k), self.kv_quantizer(v)
        if cache is not None:
            k, v = cache.update(self.index, start, k, v)
        # Prefill always starts at position 0 and decode feeds one token, so "causal" (top-left
        # aligned in SDPA) is right for seq_len > 1 and no mask is needed for seq_len == 1.
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=seq_len > 1, enable_gqa=True)
        return self.dense(attended.transpose(1, 2).reshape(batch, seq_len, self.q_width))

    def __call__(self, x: torch.Tensor, rotary: RotaryTable, cache: KVCache | None, start: int) -> torch.Tensor:
        epsilon = self.config.norm_epsilon
        x = x + self.attention(rms_norm(x, self.input_norm, epsilon), rotary, cache, start)
        h = rms_norm(x, self.post_norm, epsilon)
        return x + self.proj(F.silu(self.fc(h)) * self.gate(h))


def _require_unit_scale_to_int(tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Per-token SmoothQuant's norms carry scale_to_int = [1.0] (convert_checkpoint writes exactly
    that; the scale is dynamic); any other value is a layout this runtime does not implement."""
    for norm in ("input_layernorm", "post_layernorm"):
        value = tensors[f"{prefix}.{norm}.scale_to_int"]
        if not torch.all(value.float() == 1.0):
            raise NotSupportedError(
                f"tensor {prefix}.{norm}.scale_to_int = {value.tolist()} not supported by the reference backend "
                "(per-token SmoothQuant needs [1.0]); use the trtllm builder"
            )


def _linear_factory(config: LlamaCheckpointConfig, tensors: dict[str, torch.Tensor], compute_dtype):
    if config.quant_algo == SMOOTHQUANT_PER_CHANNEL:
        return lambda name: SmoothQuantLinear(tensors, name, compute_dtype)
    if config.quant_algo == SMOOTHQUANT_PER_TOKEN:
        return lambda name: SmoothQuantPerTokenLinear(tensors, name, compute_dtype)
    if config.quant_algo == FP8:
        return lambda name: Fp8Linear(tensors, name, compute_dtype)
    return lambda name: FloatLinear(tensors[f"{name}.weight"], compute_dtype)


class ReferenceEngine:
    """Greedy generation and scoring of a TensorRT-LLM Llama checkpoint in PyTorch."""

    backend = "reference"

    def __init__(
        self,
        config: LlamaCheckpointConfig,
        tensors: dict[str, torch.Tensor],
        compute_dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        self.config = config
        self.compute_dtype = compute_dtype
        self.device = torch.device(device)
        if self.device.type != "cpu":
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise FoundryError(f"device {device!r} requested but torch.cuda.is_available() is False")
            if config.quant_algo in (SMOOTHQUANT_PER_CHANNEL, SMOOTHQUANT_PER_TOKEN) and self.device.type == "cuda":
                raise FoundryError(
                    "not supported: the W8A8 SmoothQuant path uses torch._int_mm, which on CUDA needs more than "
                    "16 rows (decode feeds 1); run SmoothQuant checkpoints on device 'cpu'"
                )
            tensors = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        self.embedding = tensors["transformer.vocab_embedding.weight"].to(compute_dtype)
        lm_head = self.embedding if config.share_embedding_table else tensors["lm_head.weight"]
        self.lm_head = FloatLinear(lm_head, compute_dtype)  # ModelOpt excludes lm_head from quantization
        self.final_norm = tensors["transformer.ln_f.weight"].to(compute_dtype)
        self.layers = [DecoderLayer(tensors, i, config, compute_dtype) for i in range(config.num_layers)]
        self.rotary = RotaryTable(
            config.head_size, config.rotary_base, config.max_positions, compute_dtype, config.rotary_scaling
        )
        self.rotary.cos, self.rotary.sin = self.rotary.cos.to(self.device), self.rotary.sin.to(self.device)

    @classmethod
    def load(
        cls, checkpoint_dir: Path, compute_dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> "ReferenceEngine":
        checkpoint_dir = Path(checkpoint_dir)
        if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise FoundryError(f"compute_dtype {compute_dtype} is not a floating dtype the reference backend runs")
        config = parse_config(checkpoint_dir)
        return cls(config, load_tensors(checkpoint_dir, config), compute_dtype, device=device)

    @property
    def quant_algo(self) -> str | None:
        return self.config.quant_algo

    def _hidden_states(self, input_ids: torch.Tensor, cache: KVCache | None, start: int) -> torch.Tensor:
        x = F.embedding(input_ids, self.embedding)
        for layer in self.layers:
            x = layer(x, self.rotary, cache, start)
        return rms_norm(x, self.final_norm, self.config.norm_epsilon)

    def _check_length(self, total_tokens: int) -> None:
        if total_tokens > self.config.max_positions:
            raise FoundryError(
                f"{total_tokens} tokens exceed the checkpoint's max_position_embeddings "
                f"({self.config.max_positions}); shorten the prompt or max_new_tokens"
            )

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise FoundryError(f"input_ids: need [batch, seq] token ids, got shape {tuple(input_ids.shape)}")
        self._check_length(input_ids.shape[1])
        with torch.inference_mode():
            hidden = self._hidden_states(input_ids.long().to(self.device), cache=None, start=0)
            return self.lm_head(hidden).float()

    def generate(
        self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None = None
    ) -> list[int]:
        prompt = [int(token) for token in input_ids]
        if not prompt:
            raise FoundryError("input_ids: the prompt is empty; greedy decoding needs at least one token")
        if max_new_tokens <= 0:
            return []
        self._check_length(len(prompt) + max_new_tokens)
        generated: list[int] = []
        with torch.inference_mode():
            cache = KVCache(self.config, 1, len(prompt) + max_new_tokens, self.compute_dtype, self.device)
            hidden = self._hidden_states(torch.tensor([prompt], device=self.device), cache, start=0)
            position = len(prompt)
            while True:
                # lm_head only on the last position: the vocab GEMM is the costliest one here
                token = int(self.lm_head(hidden[:, -1]).argmax(dim=-1))
                generated.append(token)
                if on_token is not None:
                    on_token(token)
                if len(generated) == max_new_tokens:
                    return generated
                hidden = self._hidden_states(torch.tensor([[token]], device=self.device), cache, start=position)
                position += 1
