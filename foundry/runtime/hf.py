"""The HF transformers baseline: exactly what an HF user runs (eager attention as loaded, dynamic
KV cache, `model.generate` with greedy decoding), so "speedup vs baseline" means speedup vs that."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from foundry.errors import FoundryError
from foundry.runtime.base import TokenCallback


class TokenCallbackStreamer(BaseStreamer):
    """Forwards each newly generated token to `on_token`. `generate` first puts the whole prompt;
    that call is skipped."""

    def __init__(self, on_token: TokenCallback | None):
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.on_token is not None:
            for token_id in value.reshape(-1).tolist():  # batch of 1: one token per step
                self.on_token(int(token_id))

    def end(self) -> None:
        pass


def _special_token_ids(config, generation_config: GenerationConfig) -> tuple[int, ...]:
    ids: set[int] = set()
    for source in (config, generation_config):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(source, name, None)
            if value is None:
                continue
            ids.update([value] if isinstance(value, int) else list(value))
    return tuple(sorted(ids))


class HFEngine:
    """Implements the Engine protocol on a transformers causal LM."""

    backend = "hf-transformers"

    def __init__(self, model, device: torch.device, name: str = ""):
        self.model = model
        self.device = device
        self.name = name
        self.vocab_size = int(model.config.vocab_size)
        # Installed on the model (as an HF user would set it) so generate() gets only kwargs.
        model.generation_config = self._greedy_generation_config(model)
        self.special_token_ids = _special_token_ids(model.config, model.generation_config)

    @classmethod
    def load(cls, hf_dir: Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> "HFEngine":
        hf_dir = Path(hf_dir)
        if not (hf_dir / "config.json").is_file():
            raise FoundryError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise FoundryError("device 'cuda' requested but torch.cuda.is_available() is False")
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
        return cls(model, device, name=hf_dir.name)

    @staticmethod
    def _greedy_generation_config(model) -> GenerationConfig:
        """Greedy, and a pad id (the EOS id when the checkpoint has none) so generate() does not
        warn; the per-call min/max_new_tokens make EOS irrelevant to the output length."""
        config = GenerationConfig.from_dict(model.generation_config.to_dict())
        config.do_sample = False
        for name in ("temperature", "top_p", "top_k"):  # sampling knobs would warn under greedy
            setattr(config, name, None)
        config.max_length = None
        if config.pad_token_id is None:
            eos = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
            config.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        return config

    def generate(
        self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None = None
    ) -> list[int]:
        if max_new_tokens < 1:
            raise FoundryError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(input_ids) == 0:
            raise FoundryError("input_ids is empty")
        prompt = torch.tensor([list(input_ids)], dtype=torch.long, device=self.device)
        # inference_mode is thread-local and the model is only read, so several client threads
        # may call generate at once; each call gets its own cache and streamer.
        with torch.inference_mode():
            output = self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                streamer=TokenCallbackStreamer(on_token),
            )
        return output[0, prompt.shape[1] :].tolist()

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(input_ids.to(self.device)).logits.float()
