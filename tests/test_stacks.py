"""The Kubernetes GPU stack: `python run.py stack register kubernetes-gpu` validates its definition
and credentials first, registers idempotently, and ZenML itself accepts the result: every component
is built from its flavor config (StackComponent.from_model), the stack validates (Kubernetes
orchestrator + remote artifact store + container registry + image builder), and the pipeline
compiles against it with the GPU step settings. No cluster: a kubeconfig with the context is enough.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "stacks" / "kubernetes_gpu.example.yaml"
STACK = "foundry-k8s-gpu"

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: gpu, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: test}}]
contexts: [{name: my-gpu-cluster, context: {cluster: gpu, user: u}}]
current-context: my-gpu-cluster
"""

PROBE = r"""
import json, os, sys
sys.path.insert(0, os.getcwd())
from zenml.client import Client
from zenml.stack import Stack
from zenml.stack.stack_component import StackComponent
from stacks.kubernetes_gpu import definition_of_stack, gpu_step_configurations
from cli.run_pipeline import pipeline_parameters
client = Client()
model = client.get_stack(sys.argv[1], allow_name_prefix_match=False)
out = {"stacks": [s.name for s in client.list_stacks(size=100).items], "components": {}, "steps": {}}
for ctype, components in model.components.items():
    c = components[0]
    built = StackComponent.from_model(c)  # ZenML's flavor config validation
    out["components"][ctype.value] = {"name": c.name, "flavor": c.flavor_name, "configuration": c.configuration,
                                      "config_class": type(built.config).__name__}
out["component_count"] = sum(1 for c in client.list_stack_components(size=200).items if c.name.startswith(sys.argv[1]))
Stack.from_model(model).validate()  # raises if the stack is not runnable as composed
from foundry.config import FoundryConfig
from pipelines import engine_pipeline
pipeline = engine_pipeline.with_options(steps=gpu_step_configurations(definition_of_stack(model)))
pipeline.prepare(**pipeline_parameters(FoundryConfig(), "x"))
snapshot, _, _ = pipeline._compile(steps=pipeline._run_args["step_configurations"])  # validates settings keys
for name, step in snapshot.step_configurations.items():
    out["steps"][name] = {"step_operator": step.config.step_operator,
                          "settings": {k: v.model_dump(mode="json", exclude_unset=True) for k, v in step.config.settings.items()}}
out["mlflow_secret"] = dict(client.get_secret(sys.argv[1] + "-mlflow").secret_values)
print("PROBE" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("k8s-state")
    kubeconfig = state / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    environment = {
        **os.environ,
        "FOUNDRY_STATE_DIR": str(state),
        "ZENML_CONFIG_PATH": str(state / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "KUBECONFIG": str(kubeconfig),
    }
    for key in list(environment):
        if key.startswith("FOUNDRY_K8S_") or key in ("FOUNDRY_MLFLOW_USERNAME", "FOUNDRY_MLFLOW_PASSWORD"):
            environment.pop(key)
    return environment


def cli(env, *args, extra_env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, **(extra_env or {})},
        timeout=600,
    )


def test_missing_fields_are_named_with_their_yaml_key_and_env_variable(env, tmp_path):
    partial = tmp_path / "partial.yaml"
    partial.write_text("kubernetes_context: my-gpu-cluster\n")
    result = cli(env, "stack", "register", "kubernetes-gpu", "--file", str(partial))
    assert result.returncode == 2, result.stderr
    for field in ("artifact_store_path", "mlflow_tracking_uri", "container_registry_uri"):
        assert f"{field}: required" in result.stderr and f"FOUNDRY_K8S_{field.upper()}" in result.stderr
    assert "kubernetes_context" not in result.stderr


def test_bad_values_and_unknown_stack_names_fail_before_registration(env, tmp_path):
    definition = yaml.safe_load(EXAMPLE.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                **definition,
                "artifact_store_path": "gs://bucket/x",
                "mlflow_tracking_uri": "sqlite:///x.db",
                "trtllm_image": "nvcr.io/x:1.3.0",
            }
        )
    )
    result = cli(env, "stack", "register", "kubernetes-gpu", "--file", str(bad))
    assert result.returncode == 2
    assert "gcp integration" in result.stderr and "http(s)://" in result.stderr and "1.2.x" in result.stderr
    unknown = cli(env, "stack", "register", "kubernetes")
    assert unknown.returncode == 2 and "'kubernetes-gpu'" in unknown.stderr


def test_missing_mlflow_credentials_names_the_secret_and_the_fix(env):
    result = cli(env, "stack", "register", "kubernetes-gpu", "--file", str(EXAMPLE))
    assert result.returncode == 2
    assert f"zenml secret create {STACK}-mlflow" in result.stderr and "FOUNDRY_MLFLOW_USERNAME" in result.stderr


@pytest.fixture(scope="module")
def registered(env):
    credentials = {"FOUNDRY_MLFLOW_USERNAME": "reviewer", "FOUNDRY_MLFLOW_PASSWORD": "s3cret"}
    first = cli(env, "stack", "register", "kubernetes-gpu", "--file", str(EXAMPLE), extra_env=credentials)
    assert first.returncode == 0, first.stderr[-3000:]
    # again, now from the stored secret and with one field overridden from the environment: idempotent
    second = cli(
        env,
        "stack",
        "register",
        "kubernetes-gpu",
        "--file",
        str(EXAMPLE),
        "--set",
        extra_env={"FOUNDRY_K8S_KUBERNETES_NAMESPACE": "foundry-prod"},
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "registered and active" in second.stdout
    script = Path(env["FOUNDRY_STATE_DIR"]) / "probe.py"  # a file: ZenML needs a main module with __file__
    script.write_text(PROBE)
    probe = subprocess.run(
        [sys.executable, str(script), STACK], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    return json.loads(probe.stdout.split("PROBE", 1)[1])


def test_components_pass_zenml_flavor_validation_and_registration_is_idempotent(registered):
    components = registered["components"]
    expected = {
        "orchestrator": ("kubernetes", "KubernetesOrchestratorConfig"),
        "artifact_store": ("s3", "S3ArtifactStoreConfig"),
        "experiment_tracker": ("mlflow", "MLFlowExperimentTrackerConfig"),
        "model_registry": ("mlflow", "MLFlowModelRegistryConfig"),
        "container_registry": ("default", "BaseContainerRegistryConfig"),
        "image_builder": ("kaniko", "KanikoImageBuilderConfig"),
        "step_operator": ("kubernetes", "KubernetesStepOperatorConfig"),
    }
    assert {k: (v["flavor"], v["config_class"]) for k, v in components.items()} == expected
    assert registered["component_count"] == 7 and registered["stacks"].count(STACK) == 1
    assert components["orchestrator"]["configuration"]["kubernetes_namespace"] == "foundry-prod"
    assert components["artifact_store"]["configuration"]["path"] == "s3://my-bucket/foundry"


def test_mlflow_credentials_are_secret_references_not_plain_text(registered):
    tracker = registered["components"]["experiment_tracker"]["configuration"]
    assert tracker["tracking_uri"] == "https://mlflow.example.com"
    assert tracker["tracking_username"] == f"{{{{{STACK}-mlflow.username}}}}"
    assert tracker["tracking_password"] == f"{{{{{STACK}-mlflow.password}}}}"
    assert registered["mlflow_secret"] == {"username": "reviewer", "password": "s3cret"}


def test_gpu_steps_get_the_step_operator_resources_images_and_node_placement(registered):
    steps = registered["steps"]
    for name in ("calibrate_checkpoint", "build_engine", "benchmark_engine"):
        settings = steps[name]["settings"]
        assert steps[name]["step_operator"] == f"{STACK}-gpu"
        assert settings["resources"]["gpu_count"] == 1
        pod = settings[f"step_operator:{STACK}-gpu"]["pod_settings"]
        assert pod["node_selectors"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert steps["build_engine"]["settings"]["docker"]["parent_image"].startswith(
        "nvcr.io/nvidia/tensorrt-llm/release:1.2."
    )
    assert steps["build_engine"]["settings"]["resources"]["memory"] == "128GB"
    assert "cuda" in steps["calibrate_checkpoint"]["settings"]["docker"]["parent_image"]
    for name in ("ingest_checkpoint", "register_engine", "gate_and_promote"):
        assert steps[name]["step_operator"] is None and "resources" not in steps[name]["settings"]
