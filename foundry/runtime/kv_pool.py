"""The engine's KV cache: one preallocated pool of request slots, stored the way the checkpoint says.

Layout per layer: keys and values `[slots, kv_heads, capacity, head_size]`. A slot holds one
request's whole context (up to `max_seq_len` tokens), so admission is "a slot is free" and a request
that fits `max_seq_len` always fits a slot. Column `max_seq_len` (the last) is a scratch column:
decode rows that carry no request write there and no request ever reads it, which keeps the decode
step's shapes static (CUDA graphs) without touching live requests.

INT8 / FP8 KV caches (TensorRT-LLM `kv_cache_quant_algo`) are STORED quantized — int8 or
float8_e4m3fn elements, half the bytes of bf16 — with the layer's one `kv_cache_scaling_factor`,
and dequantized when attention reads them, exactly as the fake-quantized CPU path computed:
round half to even and clamp to ±127 for INT8, clamp to ±448 then E4M3 rounding for FP8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INT8_MAX = 127.0  # ModelOpt quantizes to the narrow range [-127, 127]
FP8_E4M3_MAX = 448.0
STORAGE_DTYPES = {None: None, "INT8": torch.int8, "FP8": torch.float8_e4m3fn}


def e4m3_codes(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (any float dtype) / scale as float8_e4m3fn codes: IEEE division in float32, clamped to the
    E4M3 range, rounded to nearest even (an FP8 KV cache and FP8 linears' activations; the CUDA
    kernels' `decode_attention.e4m3_codes` reproduces it)."""
    return (x.float() / scale).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)


def quantize_kv(x: torch.Tensor, algo: str, scale: torch.Tensor) -> torch.Tensor:
    """x (any float dtype) → the stored codes (int8 or float8_e4m3fn)."""
    if algo == "INT8":
        return (x.float() / scale).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return e4m3_codes(x, scale)


def dequantize_kv(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (codes.float() * scale).to(dtype)


@dataclass(frozen=True)
class PoolShape:
    num_layers: int
    slots: int
    kv_heads: int
    max_seq_len: int
    head_size: int

    @property
    def capacity(self) -> int:
        """Columns per slot: the context plus the scratch column."""
        return self.max_seq_len + 1

    def bytes_per_slot(self, element_bytes: int) -> int:
        return 2 * self.num_layers * self.kv_heads * self.capacity * self.head_size * element_bytes


class KVPool:
    def __init__(
        self,
        shape: PoolShape,
        compute_dtype: torch.dtype,
        device: torch.device,
        quant_algo: str | None = None,
        layer_scales: list[torch.Tensor] | None = None,
    ):
        self.shape = shape
        self.compute_dtype = compute_dtype
        self.quant_algo = quant_algo
        self.scales = [scale.float().reshape(()).to(device) for scale in layer_scales] if quant_algo else None
        storage = STORAGE_DTYPES[quant_algo] or compute_dtype
        dims = (shape.slots, shape.kv_heads, shape.capacity, shape.head_size)
        # zeros, not empty: masked-out columns are multiplied by probability 0, and 0 × NaN is NaN
        self.keys = [torch.zeros(dims, dtype=storage, device=device) for _ in range(shape.num_layers)]
        self.values = [torch.zeros(dims, dtype=storage, device=device) for _ in range(shape.num_layers)]
        self.scratch_position = shape.max_seq_len

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def _store(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        return x if self.quant_algo is None else quantize_kv(x, self.quant_algo, self.scales[layer])

    def _load(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        return codes if self.quant_algo is None else dequantize_kv(codes, self.scales[layer], self.compute_dtype)

    def write_span(self, layer: int, slot: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """keys/values [kv_heads, seq, head_size] of one request at positions start.. ."""
        end = start + keys.shape[1]
        self.keys[layer][slot, :, start:end] = self._store(layer, keys)
        self.values[layer][slot, :, start:end] = self._store(layer, values)

    def read_span(self, layer: int, slot: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[1, kv_heads, end, head_size] of one slot, dequantized."""
        keys = self.keys[layer][slot : slot + 1, :, :end]
        values = self.values[layer][slot : slot + 1, :, :end]
        return self._load(layer, keys), self._load(layer, values)

    def write_slots(self, layer: int, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Prompts of several requests from position 0: keys/values [n, kv_heads, seq, head_size]."""
        seq_len = keys.shape[2]
        self.keys[layer][slots, :, :seq_len] = self._store(layer, keys)
        self.values[layer][slots, :, :seq_len] = self._store(layer, values)

    def write_rows(self, layer: int, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Decode: row b (= slot b) writes its one new key/value [rows, kv_heads, head_size] at positions[b]."""
        rows = torch.arange(keys.shape[0], device=keys.device)
        self.keys[layer][rows, :, positions] = self._store(layer, keys)
        self.values[layer][rows, :, positions] = self._store(layer, values)

    def storage(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The layer's stored keys and values [slots, kv_heads, capacity, head_size] and the scale of
        their codes (None when stored in the compute dtype), for kernels that read the pool in place."""
        return self.keys[layer], self.values[layer], self.scales[layer] if self.quant_algo else None

    def read_rows(self, layer: int, rows: int, kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots 0..rows-1, columns 0..kv_len-1, dequantized: [rows, kv_heads, kv_len, head_size]."""
        keys = self.keys[layer][:rows, :, :kv_len]
        values = self.values[layer][:rows, :, :kv_len]
        return self._load(layer, keys), self._load(layer, values)
