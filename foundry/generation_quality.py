"""Quality of an engine as it serves: its greedy continuations against the unquantized model's.

Teacher-forced metrics (foundry/quality.py) need the engine's logits, which only an in-process
engine gives. These metrics need only what any server returns, so they are measured on the engine
that is promoted — a TensorRT-LLM engine behind trtllm-serve included — and a champion and a
challenger of different backends are compared on the same numbers:

* token agreement: the share of continuation positions where engine and unquantized model pick the same
  token (position by position over the shorter of the two);
* first divergence: the position of the first differing token (the continuation length if none);
* exact match: the share of prompts whose continuations are identical;
* continuation perplexity: the engine's continuation scored by the unquantized model, next to the
  unquantized model's own continuation (ratio ≥ 1: the engine wrote text the unquantized model finds less likely);
* sampled-token logprob gap, where the server returns each token's logprob (`logprobs: 1`, what
  trtllm-serve's TensorRT backend gives): mean of log P_engine(t) − log P_unquantized(t) over the
  engine's own tokens (0 when the engine is the unquantized model);
* trajectory KLD, where the server returns top-k logprobs keyed by token id (`logprobs: k > 1`;
  foundry.bench.server, vLLM with return_tokens_as_token_ids; trtllm-serve only for engines that
  gather generation logits): KL(P_unquantized || P_engine) along the engine's own continuation, both
  distributions restricted to the engine's top-k tokens and renormalized there;
* output-length ratio, when stopping at EOS: engine tokens / unquantized-model tokens (MLPerf accepts 0.9–1.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from foundry.errors import FoundryError

KLD_METHOD = "KL(P_unquantized || P_engine) over the engine's top-k tokens per position, both renormalized there"


@dataclass(frozen=True)
class Continuation:
    """What an engine wrote after a prompt: token ids and, if asked for, top-k logprobs per position
    ({token id: logprob} of the engine's distribution)."""

    token_ids: list[int]
    top_logprobs: list[dict[int, float]] | None = None
    finish_reason: str | None = None
    token_logprobs: list[float] | None = None  # the engine's logprob of each token it wrote


class ContinuationSource(Protocol):
    """Greedy continuations from an engine: in process or through its server."""

    served_by: str

    def continue_prompts(
        self, prompts: Sequence[Sequence[int]], max_tokens: int, stop_at_eos: bool, top_logprobs: int
    ) -> list[Continuation]: ...


class GenerationQuality(BaseModel):
    model_config = ConfigDict(frozen=True)

    served_by: str
    num_prompts: int
    prompt_len: int
    max_new_tokens: int
    stop_at_eos: bool
    token_agreement: float
    first_divergence_mean: float
    first_divergence_min: int
    exact_match_rate: float
    engine_continuation_perplexity: float  # under the unquantized model
    unquantized_continuation_perplexity: float
    continuation_perplexity_ratio: float
    sampled_logprob_gap: float | None  # None: the server returned no logprobs
    trajectory_kld: float | None  # None: the server returned no top-k logprobs by token id
    trajectory_kld_method: str | None
    output_length_ratio: float | None  # None unless stop_at_eos
    engine_tokens: int
    unquantized_tokens: int


def first_divergence(engine: Sequence[int], unquantized: Sequence[int]) -> int:
    for position, (a, b) in enumerate(zip(engine, unquantized)):
        if a != b:
            return position
    return min(len(engine), len(unquantized))


def _continuation_nll(unquantized, prompt: Sequence[int], continuation: Sequence[int]) -> tuple[float, torch.Tensor]:
    """The unquantized model's NLL of `continuation` after `prompt`, and its log-probabilities at each continuation
    position ([len, vocab])."""
    ids = torch.tensor([list(prompt) + list(continuation)], dtype=torch.long)
    logp = F.log_softmax(unquantized.logits(ids)[0].double(), dim=-1)
    positions = logp[len(prompt) - 1 : len(prompt) - 1 + len(continuation)]
    targets = torch.tensor(list(continuation), dtype=torch.long).unsqueeze(-1)
    return -positions.gather(-1, targets).sum().item(), positions


def _topk_kld(unquantized_logp: torch.Tensor, engine_top: list[dict[int, float]]) -> tuple[float, int]:
    total, count = 0.0, 0
    for position, top in enumerate(engine_top[: unquantized_logp.shape[0]]):
        if not top:
            continue
        ids = torch.tensor(list(top), dtype=torch.long)
        q = torch.log_softmax(torch.tensor(list(top.values()), dtype=torch.float64), dim=-1)
        p = torch.log_softmax(unquantized_logp[position, ids], dim=-1)
        total += float((p.exp() * (p - q)).sum())
        count += 1
    return total, count


def truncate_at_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """Tokens up to and including the first EOS (greedy decoding would have stopped there)."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return list(tokens[: position + 1])
    return list(tokens)


def evaluate_generation(
    engine: ContinuationSource,
    unquantized,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    stop_at_eos: bool = False,
    top_logprobs: int = 0,
    eos_ids: Sequence[int] = (),
) -> GenerationQuality:
    """Compare `engine`'s greedy continuations of `prompts` with the unquantized model (an in-process `Engine`
    with `generate` and `logits`, the unquantized model)."""
    if not prompts:
        raise FoundryError("evaluation.generation_prompts: no prompts to continue")
    produced = engine.continue_prompts(prompts, max_new_tokens, stop_at_eos, top_logprobs)
    if len(produced) != len(prompts):
        raise FoundryError(f"{engine.served_by}: {len(produced)} continuations for {len(prompts)} prompts")
    agree = compared = exact = engine_tokens = unquantized_tokens = kld_count = gap_count = 0
    divergences: list[int] = []
    engine_nll = unquantized_nll = kld_total = gap_total = 0.0
    for prompt, continuation in zip(prompts, produced):
        ours = list(continuation.token_ids)
        if not ours:
            raise FoundryError(f"{engine.served_by}: an empty continuation for a {len(prompt)}-token prompt")
        if not stop_at_eos and len(ours) != max_new_tokens:
            raise FoundryError(
                f"{engine.served_by}: returned {len(ours)} tokens for a prompt, asked for exactly {max_new_tokens} "
                "(ignore_eos); the server truncated or dropped tokens"
            )
        theirs = list(unquantized.generate(list(prompt), max_new_tokens))
        if stop_at_eos:
            theirs = truncate_at_eos(theirs, eos_ids)
        common = min(len(ours), len(theirs))
        agree += sum(a == b for a, b in zip(ours[:common], theirs[:common]))
        compared += common
        exact += ours == theirs
        divergences.append(first_divergence(ours, theirs))
        nll, unquantized_logp = _continuation_nll(unquantized, prompt, ours)
        engine_nll += nll
        unquantized_nll += _continuation_nll(unquantized, prompt, theirs)[0]
        engine_tokens += len(ours)
        unquantized_tokens += len(theirs)
        if continuation.top_logprobs:
            total, count = _topk_kld(unquantized_logp, continuation.top_logprobs)
            kld_total += total
            kld_count += count
        if continuation.token_logprobs:
            unquantized_lp = unquantized_logp.gather(-1, torch.tensor(ours).unsqueeze(-1)).squeeze(-1).tolist()
            gap_total += sum(e - r for e, r in zip(continuation.token_logprobs, unquantized_lp))
            gap_count += min(len(continuation.token_logprobs), len(unquantized_lp))
    engine_ppl = math.exp(engine_nll / engine_tokens)
    unquantized_ppl = math.exp(unquantized_nll / unquantized_tokens)
    return GenerationQuality(
        served_by=engine.served_by,
        num_prompts=len(prompts),
        prompt_len=len(prompts[0]),
        max_new_tokens=max_new_tokens,
        stop_at_eos=stop_at_eos,
        token_agreement=agree / compared if compared else 0.0,
        first_divergence_mean=sum(divergences) / len(divergences),
        first_divergence_min=min(divergences),
        exact_match_rate=exact / len(prompts),
        engine_continuation_perplexity=engine_ppl,
        unquantized_continuation_perplexity=unquantized_ppl,
        continuation_perplexity_ratio=engine_ppl / unquantized_ppl,
        sampled_logprob_gap=gap_total / gap_count if gap_count else None,
        trajectory_kld=kld_total / kld_count if kld_count else None,
        trajectory_kld_method=KLD_METHOD if kld_count else None,
        output_length_ratio=engine_tokens / unquantized_tokens if stop_at_eos else None,
        engine_tokens=engine_tokens,
        unquantized_tokens=unquantized_tokens,
    )


class InProcessContinuations:
    """Continuations of an in-process engine with `generate` and `logits` (the reference engine)."""

    def __init__(self, engine, eos_ids: Sequence[int] = ()):
        self.engine = engine
        self.served_by = f"in-process {engine.backend}"
        self.eos_ids = tuple(eos_ids)

    def continue_prompts(self, prompts, max_tokens, stop_at_eos, top_logprobs):
        out = []
        stop_ids = self.eos_ids if stop_at_eos else ()
        submit = getattr(self.engine, "submit", None)
        if submit is not None:  # every prompt in flight at once: the engine batches them
            handles = [submit(list(prompt), max_tokens, stop_token_ids=stop_ids) for prompt in prompts]
            generated = [handle.result() for handle in handles]
        else:
            generated = [list(self.engine.generate(list(prompt), max_tokens)) for prompt in prompts]
        for prompt, tokens in zip(prompts, generated):
            if stop_at_eos:
                tokens = truncate_at_eos(tokens, self.eos_ids)
            top = sampled = None
            if top_logprobs:
                sampled, top = logprobs_of(self.engine, prompt, tokens, top_logprobs)
            out.append(
                Continuation(
                    tokens, top if top_logprobs > 1 else None, "stop" if len(tokens) < max_tokens else "length", sampled
                )
            )
        return out


def logprobs_of(
    engine, prompt: Sequence[int], tokens: Sequence[int], k: int
) -> tuple[list[float], list[dict[int, float]]]:
    """The engine's logprob of each of `tokens`, and its top-k {token id: logprob} at each position."""
    ids = torch.tensor([list(prompt) + list(tokens)], dtype=torch.long)
    logp = F.log_softmax(engine.logits(ids)[0].double(), dim=-1)[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
    sampled = logp.gather(-1, torch.tensor(list(tokens)).unsqueeze(-1)).squeeze(-1).tolist()
    values, indices = logp.topk(k, dim=-1)
    return sampled, [dict(zip(i.tolist(), v.tolist())) for i, v in zip(indices, values)]


def render_generation_html(report: GenerationQuality) -> str:
    rows = [
        ("served by", report.served_by),
        ("prompts × new tokens", f"{report.num_prompts} × {report.max_new_tokens} (prompt {report.prompt_len} tokens)"),
        ("token agreement", f"{report.token_agreement:.2%}"),
        ("first divergence (mean / min)", f"{report.first_divergence_mean:.1f} / {report.first_divergence_min}"),
        ("exact-match rate", f"{report.exact_match_rate:.2%}"),
        (
            "continuation perplexity under the unquantized model (engine / unquantized)",
            f"{report.engine_continuation_perplexity:.3f} / {report.unquantized_continuation_perplexity:.3f} "
            f"= {report.continuation_perplexity_ratio:.4f}",
        ),
        (
            "sampled-token logprob gap (engine − unquantized, nats)",
            "no logprobs returned" if report.sampled_logprob_gap is None else f"{report.sampled_logprob_gap:+.4f}",
        ),
        (
            "trajectory KLD",
            "no top-k logprobs by token id returned"
            if report.trajectory_kld is None
            else f"{report.trajectory_kld:.4f} ({report.trajectory_kld_method})",
        ),
        (
            "output-length ratio",
            "— (EOS stopping off)"
            if report.output_length_ratio is None
            else f"{report.output_length_ratio:.3f} (MLPerf accepts 0.90–1.10)",
        ),
    ]
    body = "".join(f"<tr><td>{a}</td><td><b>{b}</b></td></tr>" for a, b in rows)
    return (
        "<h3>Generation: the engine as it serves vs the unquantized model</h3>"
        f"<table border='1' cellpadding='6' style='border-collapse:collapse'>{body}</table>"
    )
