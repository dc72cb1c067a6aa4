"""The reference backend: executes a TensorRT-LLM checkpoint (Llama, Qwen2, Mistral) in plain PyTorch.

It reproduces the checkpoint's quantization semantics (TensorRT-LLM `W8A8_SQ_PER_CHANNEL` as
exported by ModelOpt 0.47, its per-token form `W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN`, FP8, INT8/FP8
KV cache) on CPU and CUDA, so a checkpoint can be proven numerically sound, benchmarked and served
where TensorRT-LLM is absent.

Two ways in:
* `logits(ids)`: a full-sequence forward without a cache (quality scoring; the KV values are
  rounded through the checkpoint's KV quantization, exactly what a quantized cache would hold).
* `generate` / `agenerate` / `submit`: requests go to one continuous-batching scheduler
  (`scheduler.py`) over one preallocated KV pool (`kv_pool.py`); decode runs batched, captured in
  CUDA graphs on a GPU (`decode_runner.py`). Many threads or coroutines may call at once.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import AsyncIterator, Sequence

import torch
import torch.nn.functional as F

from foundry.errors import FoundryError, NotSupportedError
from foundry.runtime import decode_attention as attention_kernel
from foundry.runtime import decode_linear, rope_kv_write
from foundry.runtime._trtllm_checkpoint import (
    FP8,
    SMOOTHQUANT_PER_CHANNEL,
    SMOOTHQUANT_PER_TOKEN,
    LlamaCheckpointConfig,
    load_tensors,
    parse_config,
)
from foundry.runtime.base import TokenCallback
from foundry.runtime.kv_pool import KVPool, PoolShape, dequantize_kv, quantize_kv
from foundry.runtime.linears import FloatLinear, Fp8Linear, SmoothQuantLinear, SmoothQuantPerTokenLinear
from foundry.runtime.prefill_graphs import right_padded
from foundry.runtime.scheduler import BatchScheduler, EngineOptions, GenerationRequest


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

    def to(self, device: torch.device) -> "RotaryTable":
        self.cos, self.sin = self.cos.to(device), self.sin.to(device)
        return self

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [rows, 1, 1, head_size] for one position per row (decode)."""
        return self.cos[positions][:, None, None, :], self.sin[positions][:, None, None, :]

    def apply(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: [batch, heads, seq, head_size] at positions start .. start+seq-1."""
        seq_len = x.shape[2]
        cos = self.cos[start : start + seq_len]
        sin = self.sin[start : start + seq_len]
        return x * cos + rotate_half(x) * sin


# CUDA decode attention through foundry's Triton kernel (decode_attention.py: reads only the columns a
# row sees, quantized codes in place) instead of SDPA over the whole masked slot. On an H200 it agrees
# with float32 SDPA as closely as bf16 SDPA does and takes the compiled bf16 step 4.78 → 4.68 ms at
# batch 1, 5.25 → 5.06 ms at batch 32 (docs/gpu-results/run13_*). decode_step_variants.py checks and
# times both (settings triton_decode_attention / sdpa_decode_attention).
DECODE_ATTENTION_KERNEL = True
# CUDA decode of float layers: the linears named here ("dense": attention output projection; "proj":
# the MLP's down projection) and the residual add they feed as one Triton GEMV (decode_linear.py)
# instead of cuBLAS + add. On an H100, same rounding at every shape (docs/gpu-results/run17_*, run18_*):
# "dense" 18.0 → 14.4 µs a call, compiled step 6.240 → 6.149 ms at batch 1; "proj" too 42.5 vs 46.3
# µs a call, step 6.149 → 6.025 ms at batch 1, 6.656 → 6.622 at batch 32. decode_step_variants.py
# settings cublas_output_projection / triton_output_projection / triton_residual_linears.
TRITON_RESIDUAL_LINEARS = frozenset({"dense", "proj"})
# CUDA decode of FP8 layers: the attention kernel writes the E4M3 codes of its output for the
# output projection (decode_attention.py), instead of a separate quantization kernel per layer.
FP8_CODES_FROM_ATTENTION = True
# CUDA decode: RoPE on q and k and the KV write as one Triton kernel (rope_kv_write.py) instead of
# inductor's three a layer. H100 (run22): bit-identical to the eager formula in 12/12 cases; step
# FP8 3.622 → 3.570 ms and bf16 5.821 → 5.753 ms at batch 1, unchanged at batch 32 (no pool clone).
# It quantizes a KV cache as the eager / CPU path does (k rounded to bf16, IEEE division); inductor
# divides approximately and skips that rounding, so INT8 / FP8 codes may differ by a step between
# the two.
FUSED_ROPE_KV_WRITE = True


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
        # On CUDA the two MLP input GEMMs run as one when their quantization allows (same input
        # codes): one weight read and one launch fewer per layer. CPU keeps them apart (tests read them).
        self.fc_gate = (
            _fused_fc_gate(config, tensors, prefix, compute_dtype) if _tensors_device(tensors).type == "cuda" else None
        )
        self.fc = None if self.fc_gate else make_linear(f"{prefix}.mlp.fc")  # HF gate_proj: the SiLU branch
        self.gate = None if self.fc_gate else make_linear(f"{prefix}.mlp.gate")  # HF up_proj: the linear branch
        self.intermediate_size = config.intermediate_size
        self.proj = make_linear(f"{prefix}.mlp.proj")  # HF down_proj
        self.q_width = config.num_heads * config.head_size
        self.kv_width = config.num_kv_heads * config.head_size
        self.kv_scale = None
        if config.kv_cache_quant_algo is not None:
            self.kv_scale = tensors[f"{prefix}.attention.kv_cache_scaling_factor"].float().reshape(())

    def _qkv_projection(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] → [batch, seq, q, k and v features]."""
        qkv = self.qkv(rms_norm(x, self.input_norm, self.config.norm_epsilon))
        return qkv if self.qkv_bias is None else qkv + self.qkv_bias

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[batch, seq, hidden] → q [batch, heads, seq, head], k and v [batch, kv_heads, seq, head]."""
        return self._split_heads(self._qkv_projection(x))

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, seq_len, _ = qkv.shape
        config = self.config
        q, k, v = qkv.split((self.q_width, self.kv_width, self.kv_width), dim=-1)
        q = q.view(batch, seq_len, config.num_heads, config.head_size).transpose(1, 2)
        k = k.view(batch, seq_len, config.num_kv_heads, config.head_size).transpose(1, 2)
        v = v.view(batch, seq_len, config.num_kv_heads, config.head_size).transpose(1, 2)
        return q, k, v

    def _round_trip_kv(self, x: torch.Tensor) -> torch.Tensor:
        """What a quantized KV cache gives back for x (identity without KV quantization)."""
        if self.kv_scale is None:
            return x
        return dequantize_kv(quantize_kv(x, self.config.kv_cache_quant_algo, self.kv_scale), self.kv_scale, x.dtype)

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, MLP, residual. attended: [batch, heads, seq, head]."""
        batch, _, seq_len, _ = attended.shape
        x = self._plus_residual(x, "dense", attended.transpose(1, 2).reshape(batch, seq_len, self.q_width))
        h = rms_norm(x, self.post_norm, self.config.norm_epsilon)
        if self.fc_gate is not None:
            activated, linear = self.fc_gate(h).split(self.intermediate_size, dim=-1)
        else:
            activated, linear = self.fc(h), self.gate(h)
        return self._plus_residual(x, "proj", F.silu(activated) * linear)

    def _plus_residual(self, x: torch.Tensor, name: str, inputs: torch.Tensor) -> torch.Tensor:
        """x + linear `name`(inputs); one token per row on CUDA as one Triton GEMV where TRITON_RESIDUAL_LINEARS says."""
        linear = getattr(self, name)
        if inputs.shape[1] == 1 and name in TRITON_RESIDUAL_LINEARS and decode_linear.serves(inputs[:, 0], linear):
            return decode_linear.linear_plus_residual_cuda(inputs[:, 0], linear.weight, x[:, 0])[:, None]
        return x + linear(inputs)

    def linears(self) -> list:
        return [m for m in (self.qkv, self.dense, self.fc_gate, self.fc, self.gate, self.proj) if m is not None]

    def forward_full(self, x: torch.Tensor, rotary: "RotaryTable") -> torch.Tensor:
        """Whole sequences from position 0, no cache (scoring)."""
        q, k, v = self._qkv(x)
        q, k = rotary.apply(q, 0), rotary.apply(k, 0)
        k, v = self._round_trip_kv(k), self._round_trip_kv(v)  # what the cache would hold
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=x.shape[1] > 1, enable_gqa=True)
        return self._finish(x, attended)

    def forward_prefill(self, x: torch.Tensor, rotary: "RotaryTable", pool: KVPool, slot: int, start: int):
        """One prompt chunk [1, seq, hidden] at positions start.. of the request in `slot`."""
        seq_len = x.shape[1]
        q, k, v = self._qkv(x)
        q, k = rotary.apply(q, start), rotary.apply(k, start)
        pool.write_span(self.index, slot, start, k[0], v[0])
        keys, values = pool.read_span(self.index, slot, start + seq_len)
        if start == 0:  # top-left aligned causal mask is right when the chunk starts the sequence
            attended = F.scaled_dot_product_attention(q, keys, values, is_causal=seq_len > 1, enable_gqa=True)
        else:  # a later chunk sees the whole cached prefix and itself causally
            query_positions = torch.arange(start, start + seq_len, device=x.device)
            allowed = torch.arange(start + seq_len, device=x.device)[None, :] <= query_positions[:, None]
            attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, enable_gqa=True)
        return self._finish(x, attended)

    def forward_prefill_batch(self, x: torch.Tensor, rotary: "RotaryTable", pool: KVPool, slots: torch.Tensor):
        """Whole prompts of several requests from position 0, right-padded to one length. Padding
        columns land in the pool past each prompt, where decode overwrites them before it reads."""
        q, k, v = self._qkv(x)
        q, k = rotary.apply(q, 0), rotary.apply(k, 0)
        pool.write_slots(self.index, slots, k, v)
        keys, values = self._round_trip_kv(k), self._round_trip_kv(v)  # what the pool now holds
        # queries and keys both span positions 0..seq-1, so causal holds at every length (1 included);
        # a constant keeps the shape out of the call for a compiled prefill (dynamic shapes)
        attended = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=True)
        return self._finish(x, attended)

    def forward_decode(
        self,
        x: torch.Tensor,
        rotary: RotaryTable,
        pool: KVPool,
        positions: torch.Tensor,
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        """One token per row [rows, 1, hidden]; row b is slot b at positions[b]. Static shapes and no
        host synchronization, so the whole step can be captured in a CUDA graph."""
        rows = x.shape[0]
        keys, values, kv_scale = pool.storage(self.index)
        qkv = self._qkv_projection(x)
        if FUSED_ROPE_KV_WRITE and rope_kv_write.serves(qkv, keys, self.config.head_size):
            q = rope_kv_write.rope_kv_write_cuda(
                qkv[:, 0], rotary.cos, rotary.sin, positions, keys, values, kv_scale, self.config.num_heads
            )
        else:
            q, k, v = self._split_heads(qkv)
            cos, sin = rotary.at(positions)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            pool.write_rows(self.index, positions, k[:, :, 0], v[:, :, 0])
        if DECODE_ATTENTION_KERNEL and attention_kernel.serves(q):
            out_scale = (
                self.dense.activation_scale if FP8_CODES_FROM_ATTENTION and isinstance(self.dense, Fp8Linear) else None
            )
            attended = attention_kernel.decode_attention_cuda(q, keys, values, positions, kv_scale, out_scale)
            return self._finish(x, attended)
        keys, values = pool.read_rows(self.index, rows, allowed.shape[1])
        # One SDPA call (boolean mask) instead of matmul → mask → softmax → matmul: fewer kernels
        # per layer; the compiled step on an H100 went 6.55 → 6.29 ms (decode_step_variants.py).
        # No row is fully masked (an all-False row would give NaN): a request sees column 0 on, and
        # padding and idle rows sit on the scratch column, the last, so they see every column.
        return self._finish(x, decode_attention(q, keys, values, allowed))


ARGMAX_CHUNKS = 128


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """logits [rows, vocab] → each row's `argmax` [rows] (the first index of its maximum), in two
    stages: the maximum of each of ARGMAX_CHUNKS chunks, then of those. The compiled decode step
    needs this: inductor does not split an argmax, so one program reduced a row's 128,256 logits
    (Llama-3), 29 µs of the step on an H100 (docs/gpu-results/run22_profiles); chunks reduce side by
    side. Ties keep the first index as argmax does: the first within a chunk, then the first chunk."""
    rows, vocab = logits.shape
    chunk = -(-vocab // ARGMAX_CHUNKS)
    padded = F.pad(logits, (0, chunk * ARGMAX_CHUNKS - vocab), value=float("-inf"))  # never above a real logit
    chunk_max, index_in_chunk = padded.view(rows, ARGMAX_CHUNKS, chunk).max(dim=-1)
    best_chunk = chunk_max.argmax(dim=-1, keepdim=True)
    return (best_chunk * chunk + index_in_chunk.gather(-1, best_chunk))[:, 0]


def decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One query token per row: q [rows, heads, 1, head_size], keys/values [rows, kv_heads, kv_len,
    head_size], allowed [rows, kv_len] → [rows, heads, 1, head_size].
    `enable_gqa` rather than folding a KV head's query heads into its "query positions" for a plain
    SDPA call: on an H100 the folded form took cuDNN's flash kernel, 37 µs per layer at batch 32,
    and the compiled step went 6.57 → 7.30 ms (benchmarks/decode_step_variants.py, setting
    grouped_query_heads; docs/gpu-results/run10)."""
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None, None, :], enable_gqa=True)


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


def _tensors_device(tensors: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(tensors.values())).device


def _fused_fc_gate(config: LlamaCheckpointConfig, tensors: dict[str, torch.Tensor], prefix: str, compute_dtype):
    """fc and gate as one linear [2 × intermediate, hidden], or None where their activation
    quantization differs (then fusing would change the integer codes)."""
    fc, gate = f"{prefix}.mlp.fc", f"{prefix}.mlp.gate"
    fused = f"{prefix}.mlp.fc_gate"

    def same(suffix: str) -> bool:
        return torch.equal(tensors[f"{fc}.{suffix}"], tensors[f"{gate}.{suffix}"])

    def cat(suffix: str, dim: int = 0) -> torch.Tensor:
        return torch.cat([tensors[f"{fc}.{suffix}"], tensors[f"{gate}.{suffix}"]], dim=dim)

    if config.quant_algo is None:
        return FloatLinear(cat("weight"), compute_dtype)
    if config.quant_algo == SMOOTHQUANT_PER_TOKEN:  # smoothing folded into the norm: same codes
        parts = {f"{fused}.weight": cat("weight"), f"{fused}.per_channel_scale": cat("per_channel_scale", 1)}
        return SmoothQuantPerTokenLinear(parts, fused, compute_dtype)
    if config.quant_algo == FP8 and same("activation_scaling_factor"):  # same input codes; own weight scales
        return Fp8Linear.stacked(tensors, [fc, gate], compute_dtype)
    if (
        config.quant_algo == SMOOTHQUANT_PER_CHANNEL
        and same("activation_scaling_factor")
        and same("prequant_scaling_factor")
    ):
        parts = {
            f"{fused}.weight": cat("weight"),
            f"{fused}.weights_scaling_factor": cat("weights_scaling_factor"),
            f"{fused}.activation_scaling_factor": tensors[f"{fc}.activation_scaling_factor"],
            f"{fused}.prequant_scaling_factor": tensors[f"{fc}.prequant_scaling_factor"],
        }
        return SmoothQuantLinear(parts, fused, compute_dtype)
    return None


def _linear_factory(config: LlamaCheckpointConfig, tensors: dict[str, torch.Tensor], compute_dtype):
    if config.quant_algo == SMOOTHQUANT_PER_CHANNEL:
        return lambda name: SmoothQuantLinear(tensors, name, compute_dtype)
    if config.quant_algo == SMOOTHQUANT_PER_TOKEN:
        return lambda name: SmoothQuantPerTokenLinear(tensors, name, compute_dtype)
    if config.quant_algo == FP8:
        return lambda name: Fp8Linear.from_checkpoint(tensors, name, compute_dtype)
    return lambda name: FloatLinear(tensors[f"{name}.weight"], compute_dtype)


class ReferenceEngine:
    """A TensorRT-LLM checkpoint executed in PyTorch: full-sequence scoring, and greedy generation
    through one continuous-batching scheduler (started on the first request)."""

    backend = "reference"

    def __init__(
        self,
        config: LlamaCheckpointConfig,
        tensors: dict[str, torch.Tensor],
        compute_dtype: torch.dtype,
        device: torch.device | str = "cpu",
        options: EngineOptions | None = None,
    ):
        self.config = config
        self.compute_dtype = compute_dtype
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise FoundryError(f"device {str(device)!r} requested but torch.cuda.is_available() is False")
        if self.device.type not in ("cpu", "cuda"):
            raise FoundryError(f"device {str(device)!r}: the reference runtime runs on 'cpu' or 'cuda'")
        self.options = options or EngineOptions()
        self.max_seq_len = self.options.resolved_max_seq_len(config.max_positions)
        tensors = {name: tensor.to(self.device) for name, tensor in tensors.items()}
        self.embedding = tensors["transformer.vocab_embedding.weight"].to(compute_dtype)
        lm_head = self.embedding if config.share_embedding_table else tensors["lm_head.weight"]
        self.lm_head = FloatLinear(lm_head, compute_dtype)  # ModelOpt excludes lm_head from quantization
        self.final_norm = tensors["transformer.ln_f.weight"].to(compute_dtype)
        self.layers = [DecoderLayer(tensors, i, config, compute_dtype) for i in range(config.num_layers)]
        # one position past max_seq_len: the pool's scratch column (padding rows of a decode step)
        self.rotary = RotaryTable(
            config.head_size,
            config.rotary_base,
            max(config.max_positions, self.max_seq_len + 1),
            compute_dtype,
            config.rotary_scaling,
        ).to(self.device)
        self._compiled_prefill_layers = None  # set by compile_prefill
        self._scheduler: BatchScheduler | None = None
        self._scheduler_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        checkpoint_dir: Path,
        compute_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        options: EngineOptions | None = None,
    ) -> "ReferenceEngine":
        checkpoint_dir = Path(checkpoint_dir)
        if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise FoundryError(f"compute_dtype {compute_dtype} is not a floating dtype the reference backend runs")
        config = parse_config(checkpoint_dir)
        return cls(config, load_tensors(checkpoint_dir, config), compute_dtype, device=device, options=options)

    @property
    def quant_algo(self) -> str | None:
        return self.config.quant_algo

    # --- the model: scoring, prefill and decode --------------------------------------------------

    def _check_length(self, total_tokens: int) -> None:
        if total_tokens > self.config.max_positions:
            raise FoundryError(
                f"{total_tokens} tokens exceed the checkpoint's max_position_embeddings "
                f"({self.config.max_positions}); shorten the prompt or max_new_tokens"
            )

    def _final(self, hidden: torch.Tensor) -> torch.Tensor:
        return rms_norm(hidden, self.final_norm, self.config.norm_epsilon)

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise FoundryError(f"input_ids: need [batch, seq] token ids, got shape {tuple(input_ids.shape)}")
        self._check_length(input_ids.shape[1])
        with torch.inference_mode():
            x = F.embedding(input_ids.long().to(self.device), self.embedding)
            for layer in self.layers:
                x = layer.forward_full(x, self.rotary)
            return self.lm_head(self._final(x)).float()

    def new_pool(self, slots: int) -> KVPool:
        config = self.config
        shape = PoolShape(config.num_layers, slots, config.num_kv_heads, self.max_seq_len, config.head_size)
        scales = [layer.kv_scale for layer in self.layers] if config.kv_cache_quant_algo else None
        return KVPool(shape, self.compute_dtype, self.device, config.kv_cache_quant_algo, scales)

    def prefill(self, pool: KVPool, slot: int, token_ids: Sequence[int], start: int) -> torch.Tensor:
        """Run one prompt chunk into the pool; the greedy next token after it (a 0-d device tensor)."""
        x = F.embedding(torch.tensor([list(token_ids)], device=self.device), self.embedding)
        for layer in self.layers:
            x = layer.forward_prefill(x, self.rotary, pool, slot, start)
        # lm_head only on the last position: the vocab GEMM is the costliest one here
        return self.lm_head(self._final(x[:, -1])).argmax(dim=-1)[0]

    def prefill_batch(self, pool: KVPool, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Whole prompts of several requests in one forward; the greedy next token of each [n]."""
        ids = right_padded(prompts, max(len(p) for p in prompts)).to(self.device)
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        return self.prefill_padded(pool, ids, torch.tensor(slots, device=self.device), lengths)

    def prefill_padded(
        self, pool: KVPool, ids: torch.Tensor, slot_index: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Right-padded prompts ids [n, seq] of lengths [n] into slots [n] → the greedy next token of
        each [n]. Pure tensor code on the device (no host sync), so a fixed shape can be graphed."""
        x = F.embedding(ids, self.embedding)
        # inductor specializes a dimension of size 1: one-token prompts stay eager, not a recompile
        compiled = self._compiled_prefill_layers if ids.shape[1] > 1 else None
        x = (compiled or self._prefill_layers)(x, pool, slot_index)
        last = x[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        return self.lm_head(self._final(last)).argmax(dim=-1)

    def _prefill_layers(self, x: torch.Tensor, pool: KVPool, slot_index: torch.Tensor) -> torch.Tensor:
        """The layers over right-padded prompts [n, seq, hidden], writing their KV into the slots."""
        for layer in self.layers:
            x = layer.forward_prefill_batch(x, self.rotary, pool, slot_index)
        return x

    def compile_prefill(self) -> None:
        """Run the batched prefill's layers through inductor with dynamic shapes: one graph for one
        prompt and one for every count from two, each serving every length (its elementwise work —
        RMSNorm, RoPE, SiLU, casts — was ~22 of 64 ms eager for 16 × 128 tokens on an H100)."""
        self._compiled_prefill_layers = torch.compile(self._prefill_layers, dynamic=True)

    def decode(self, pool: KVPool, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """One greedy step for rows 0..len(tokens)-1 (= pool slots) reading kv_len cached columns.
        Pure tensor code: no host sync, fixed shapes, so it can be graphed or compiled."""
        x = F.embedding(tokens[:, None], self.embedding)
        allowed = torch.arange(kv_len, device=tokens.device)[None, :] <= positions[:, None]
        for layer in self.layers:
            x = layer.forward_decode(x, self.rotary, pool, positions, allowed)
        return greedy_tokens(self.lm_head(self._final(x[:, 0])))

    def weight_bytes(self) -> int:
        """Bytes one decode step reads for the weights (as stored on the device). The embedding
        table counts only where it is the lm_head too: a step looks up one row of it per token."""
        tensors = [self.lm_head.weight, self.final_norm]
        for layer in self.layers:
            tensors += [layer.input_norm, layer.post_norm]
            for linear in layer.linears():
                tensors.append(getattr(linear, "weight", None) if hasattr(linear, "weight") else linear.weight_int8)
        return sum(t.numel() * t.element_size() for t in tensors)

    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token of context holds in the pool (1 per element when quantized)."""
        config = self.config
        element = 1 if config.kv_cache_quant_algo else torch.empty(0, dtype=self.compute_dtype).element_size()
        return 2 * config.num_layers * config.num_kv_heads * config.head_size * element

    # --- serving: everything goes through the one scheduler --------------------------------------

    @property
    def scheduler(self) -> BatchScheduler:
        with self._scheduler_lock:
            if self._scheduler is None:
                self._scheduler = BatchScheduler(self, self.options)
            return self._scheduler

    def submit(
        self,
        input_ids: Sequence[int],
        max_new_tokens: int,
        on_token: TokenCallback | None = None,
        stop_token_ids: Sequence[int] = (),
        on_done=None,
    ) -> GenerationRequest:
        """Queue one request; returns its handle at once (cancel(), result())."""
        return self.scheduler.submit(input_ids, max_new_tokens, on_token, stop_token_ids, on_done)

    def generate(
        self,
        input_ids: Sequence[int],
        max_new_tokens: int,
        on_token: TokenCallback | None = None,
        stop_token_ids: Sequence[int] = (),
    ) -> list[int]:
        if max_new_tokens <= 0:
            return []
        return self.submit(input_ids, max_new_tokens, on_token, stop_token_ids).result()

    async def agenerate(
        self, input_ids: Sequence[int], max_new_tokens: int, stop_token_ids: Sequence[int] = ()
    ) -> AsyncIterator[int]:
        """Tokens as they are produced; leaving the loop early cancels the request (frees its slot)."""
        if max_new_tokens <= 0:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        finished = object()
        request = self.submit(
            input_ids,
            max_new_tokens,
            on_token=lambda token: loop.call_soon_threadsafe(queue.put_nowait, token),
            stop_token_ids=stop_token_ids,
            on_done=lambda: loop.call_soon_threadsafe(queue.put_nowait, finished),
        )
        try:
            while (item := await queue.get()) is not finished:
                yield item
            request.raise_error()
        finally:
            request.cancel()

    def close(self) -> None:
        with self._scheduler_lock:
            if self._scheduler is not None:
                self._scheduler.close()
                self._scheduler = None
