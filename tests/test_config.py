from pathlib import Path

import pytest

from foundry.config import FoundryConfig, load_config
from foundry.errors import FoundryError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(ROOT / "configs" / name)
    assert config.model.source.kind == "embedded"
    assert config.calibration.quantization == "int8_sq"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("calibration: {quantization: int3}", "calibration.quantization"),
        ("calibration: {quantization: int3}", "'int8_sq', 'fp8', 'int4_awq' or 'none'"),
        ("calibration: {alpha: 1.5}", "calibration.alpha"),
        ("calibraton: {alpha: 0.5}", "calibraton: unknown key"),
        (
            "gates: {max_reference_perplexity: 50}",
            "gates.max_reference_perplexity was renamed to gates.max_unquantized_perplexity",
        ),
        (
            "gates: {min_task_score_pct_of_reference: 99}",
            "gates.min_task_score_pct_of_reference was renamed to gates.min_task_score_pct_of_unquantized",
        ),
        ("build: {backend: tensorrt}", "build.backend"),
        ("benchmark: {concurrency: [0]}", "concurrency levels must be >= 1"),
        ("benchmark: {input_len: {min: 10, max: 2}}", "benchmark.input_len"),
        ("model: {source: {kind: gguf}}", "path is required when kind is 'gguf'"),
        ("model: {name: 'bad name!'}", "model.name"),
        ("gates: {min_speedup_vs_baseline: 1.2}\nbenchmark: {baseline: false}", "needs benchmark.baseline: true"),
        ("build: {max_seq_len: 64}", "exceeds build.max_seq_len"),
        ("- just\n- a list", "top level must be a mapping"),
        ("calibration: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, yaml_text, expected):
    path = _write(tmp_path, yaml_text)
    with pytest.raises(FoundryError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FoundryError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_hash_changes_with_any_value():
    base = FoundryConfig()
    changed = FoundryConfig.model_validate({"calibration": {"alpha": 0.5}})
    assert base.config_hash() == FoundryConfig().config_hash()
    assert base.config_hash() != changed.config_hash()
