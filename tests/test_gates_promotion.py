"""Gates and promotion against a real MLflow registry (SQLite in a temp dir)."""

import pytest

from foundry.config import GateConfig
from foundry.gates import evaluate_gates
from foundry.promotion import promote_if_passed
from foundry.registry import Registry, sqlite_tracking_uri

GOOD = {
    "unquantized_perplexity": 17.8,
    "token_agreement": 0.9,
    "continuation_perplexity_ratio": 1.01,
    "perplexity_ratio": 1.02,
    "mean_kld": 0.03,
    "top1_agreement": 0.9,
    "ttft_p99_ms": 100.0,
    "tpot_p99_ms": 20.0,
    "speedup_output_tok_s": 1.5,
}


def test_all_gates_pass_on_good_measurements():
    decision = evaluate_gates(
        GateConfig(
            max_unquantized_perplexity=50,
            max_ttft_p99_ms=200,
            max_tpot_p99_ms=30,
            min_speedup_vs_baseline=1.1,
            min_token_agreement=0.8,
            max_continuation_perplexity_ratio=1.1,
        ),
        GOOD,
    )
    assert decision.passed
    assert {r.name for r in decision.results} == set(GOOD)
    assert decision.unchecked == []


@pytest.mark.parametrize(
    "metric, value, gate_field",
    [
        ("perplexity_ratio", 1.2, "max_perplexity_ratio"),
        ("mean_kld", 0.5, "max_mean_kld"),
        ("top1_agreement", 0.5, "min_top1_agreement"),
    ],
)
def test_one_failing_gate_fails_the_decision_and_names_it(metric, value, gate_field):
    decision = evaluate_gates(GateConfig(), {**GOOD, metric: value})
    assert not decision.passed
    assert len(decision.failure_reasons) == 1 and metric in decision.failure_reasons[0]


def test_a_random_weight_model_passes_the_relative_gates_but_not_the_sanity_gate(tiny_llama_hf_dir, smollm2_tokenizer):
    """Quantization faithful to a broken base model is still a broken engine: the relative gates
    cannot see it, the absolute unquantized-perplexity gate does."""
    import torch

    from foundry import data
    from foundry.gates import gate_measurements
    from foundry.quality import evaluate_quality
    from foundry.runtime.hf import HFEngine

    random_model = HFEngine.load(tiny_llama_hf_dir)
    windows = data.token_windows(data.builtin_documents("evaluation"), smollm2_tokenizer, 2, 32, "evaluation")
    quality = evaluate_quality(random_model, random_model, windows.input_ids, windows.documents_hash)
    measurements = gate_measurements({}, quality)
    relative_only = GateConfig()
    assert evaluate_gates(relative_only, measurements).passed
    decision = evaluate_gates(GateConfig(max_unquantized_perplexity=50), measurements)
    assert not decision.passed and quality.unquantized_perplexity > 10_000
    assert decision.failure_reasons[0].startswith("unquantized_perplexity:")
    assert torch.isfinite(torch.tensor(quality.unquantized_perplexity))


def test_unmeasured_metric_fails_its_gate():
    decision = evaluate_gates(GateConfig(min_speedup_vs_baseline=1.0), {**GOOD, "speedup_output_tok_s": None})
    assert not decision.passed
    assert "not measured" in decision.failure_reasons[0]


def test_null_gates_are_reported_as_unchecked():
    decision = evaluate_gates(GateConfig(max_ttft_p99_ms=None, max_tpot_p99_ms=None), GOOD)
    assert "max_ttft_p99_ms" in decision.unchecked


@pytest.fixture
def registry(tmp_path):
    return Registry(sqlite_tracking_uri(tmp_path))


def _register(registry, name="m"):
    return registry.register_engine(name, "/artifacts/engine", None, {"checkpoint_content_hash": "abc"}).version


def test_promotion_moves_alias_and_calls_second_registry(registry):
    v1 = _register(registry)
    calls = []
    result = promote_if_passed(registry, "m", v1, evaluate_gates(GateConfig(), GOOD), lambda: calls.append("zenml"))
    assert result.promoted and calls == ["zenml"]
    assert registry.production_version("m") == v1
    assert registry.version_tags("m", v1)["checkpoint_content_hash"] == "abc"


def test_failed_gate_moves_nothing(registry):
    v1 = _register(registry)
    promote_if_passed(registry, "m", v1, evaluate_gates(GateConfig(), GOOD), lambda: None)
    v2 = _register(registry)
    bad = evaluate_gates(GateConfig(), {**GOOD, "mean_kld": 9.0})
    result = promote_if_passed(registry, "m", v2, bad, lambda: pytest.fail("must not promote"))
    assert not result.promoted and result.production_after == v1
    assert registry.production_version("m") == v1
    assert registry.version_tags("m", v2)["gate"] == "failed"


def test_second_registry_failure_rolls_the_alias_back(registry):
    v1 = _register(registry)
    promote_if_passed(registry, "m", v1, evaluate_gates(GateConfig(), GOOD), lambda: None)
    v2 = _register(registry)

    def zenml_down():
        raise RuntimeError("zenml store unavailable")

    with pytest.raises(RuntimeError):
        promote_if_passed(registry, "m", v2, evaluate_gates(GateConfig(), GOOD), zenml_down)
    assert registry.production_version("m") == v1


def test_rollback_of_first_promotion_removes_the_alias(registry):
    v1 = _register(registry)
    with pytest.raises(RuntimeError):
        promote_if_passed(
            registry, "m", v1, evaluate_gates(GateConfig(), GOOD), lambda: (_ for _ in ()).throw(RuntimeError())
        )
    assert registry.production_version("m") is None


def test_run_metrics_by_name_finds_the_run_and_refuses_unknown_names(registry):
    from foundry.errors import FoundryError

    experiment = registry.client.create_experiment("e")
    run = registry.client.create_run(experiment, run_name="nightly-1")
    registry.client.log_metric(run.info.run_id, "mean_kld", 0.04)
    assert registry.run_metrics_by_name("nightly-1") == {"mean_kld": 0.04}
    with pytest.raises(FoundryError, match="no run named 'nightly-0'"):
        registry.run_metrics_by_name("nightly-0")


def test_concurrent_promotions_end_with_one_production_and_both_registries_agreeing(registry):
    """Two promotions of the same model at once, each a compare-and-set against the production they
    measured (none): exactly one wins, the other is refused naming the new production, and the
    second registry (a dict standing in for ZenML's stage) agrees with MLflow."""
    import threading

    from foundry.errors import FoundryError
    from foundry.promotion import move_production

    versions = [_register(registry) for _ in range(2)]
    second_registry, outcomes, barrier = {}, {}, threading.Barrier(2)

    def promote(version):
        barrier.wait()
        try:
            move_production(
                registry,
                "m",
                version,
                lambda: second_registry.update(production=version),
                action="promote (gates passed)",
                reason="test",
                gate="passed",
                expected_current=None,
            )
            outcomes[version] = "promoted"
        except FoundryError as error:
            outcomes[version] = str(error)

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, outcome in outcomes.items() if outcome == "promoted"]
    assert len(winners) == 1, outcomes
    loser = next(v for v in versions if v not in winners)
    assert f"production moved during this run (now v{winners[0]}" in outcomes[loser]
    assert registry.production_version("m") == winners[0] == second_registry["production"]
    history = registry.production_history("m")
    assert [(h["from_version"], h["to_version"]) for h in history] == [("none", winners[0])]
    assert "@" in history[0]["who"] and history[0]["reason"] == "test"


def test_rollback_goes_to_the_production_before(registry):
    from foundry.promotion import move_production, rollback_target

    v1, v2 = _register(registry), _register(registry)
    for version in (v1, v2):
        move_production(
            registry, "m", version, lambda: None, action="promote (gates passed)", reason="r", gate="passed"
        )
    assert rollback_target(registry, "m") == v1


def test_a_locked_tracking_database_is_retried_then_named(registry, monkeypatch):
    from mlflow.exceptions import MlflowException

    from foundry import registry as registry_module
    from foundry.errors import InfrastructureError

    monkeypatch.setattr(registry_module, "LOCK_RETRY_DELAYS_S", (0.0, 0.0))
    calls = []

    def locked_then_free(*_args, **_kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("(sqlite3.OperationalError) database is locked")
        return "ok"

    monkeypatch.setattr(registry.client._client, "search_registered_models", locked_then_free)
    assert registry.client.search_registered_models() == "ok" and len(calls) == 3
    monkeypatch.setattr(
        registry.client._client,
        "search_registered_models",
        lambda: (_ for _ in ()).throw(MlflowException("database is locked")),
    )
    import pytest as _pytest

    with _pytest.raises(InfrastructureError, match="stayed locked"):
        registry.client.search_registered_models()
