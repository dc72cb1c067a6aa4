"""The Kubernetes GPU stack: what scales out.

Components (names prefixed with the stack name):

* orchestrator ``kubernetes`` (runs every step as a pod; supports cron schedules),
* artifact store ``s3`` (``s3://bucket/prefix``; credentials from the ZenML secret
  ``<stack>-s3`` or the pods' IAM role). ``gs://`` needs ZenML's gcp integration, which this project
  does not install: it is refused with that fix,
* experiment tracker + model registry ``mlflow`` on a remote tracking server (its own PostgreSQL
  backend: ``mlflow server --backend-store-uri postgresql://...``); username/password come from the
  ZenML secret ``<stack>-mlflow`` as ``{{<stack>-mlflow.username}}`` references, never as plain text,
* container registry ``default`` (ECR/GCR/any OCI registry URI),
* image builder ``kaniko`` (builds in the cluster; no Docker daemon needed),
* step operator ``kubernetes`` for the GPU steps: calibrate, build and benchmark get
  ``ResourceSettings`` (GPUs, CPU, memory), ``DockerSettings`` (TensorRT-LLM 1.2.x release image for
  the build, a CUDA image for the others) and node selectors + tolerations for the GPU node pool.

The definition is a YAML file (see stacks/kubernetes_gpu.example.yaml) whose every key can be
overridden by an environment variable ``FOUNDRY_K8S_<KEY>``; `load_definition` validates all of it
before anything is registered, naming each missing or bad field and how to supply it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from foundry.errors import FoundryError, NotSupportedError

DEFINITION_NAME = "kubernetes-gpu"
ENV_PREFIX = "FOUNDRY_K8S_"
GPU_STEPS = ("calibrate_checkpoint", "build_engine", "benchmark_engine")
# With build.backend trtllm the engine is also served (trtllm-serve) by the evaluation.
TRTLLM_SERVED_STEPS = ("build_engine", "benchmark_engine", "evaluate_engine_quality")
CUDA_IMAGE = "nvcr.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
MLFLOW_USERNAME_ENV, MLFLOW_PASSWORD_ENV = "FOUNDRY_MLFLOW_USERNAME", "FOUNDRY_MLFLOW_PASSWORD"
AWS_KEY_ENV, AWS_SECRET_ENV = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    operator: str = Field(default="Exists", pattern="^(Exists|Equal)$")
    value: str | None = None
    effect: str = Field(default="NoSchedule", pattern="^(NoSchedule|PreferNoSchedule|NoExecute)$")


class GpuStepResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_count: int = Field(default=1, ge=1)
    cpu_count: float = Field(default=8, gt=0)
    memory: str = Field(default="64GB", pattern=r"^\d+(KB|KiB|MB|MiB|GB|GiB|TB|TiB|PB|PiB)$")


class KubernetesGpuStackDefinition(BaseModel):
    """Every field of the stack; required ones have no default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stack_name: str = Field(default="foundry-k8s-gpu", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    kubernetes_context: str = Field(description="kubeconfig context of the cluster")
    kubernetes_namespace: str = "foundry"
    artifact_store_path: str = Field(description="s3://bucket/prefix")
    mlflow_tracking_uri: str = Field(description="https://mlflow.example.com (server with a PostgreSQL backend)")
    container_registry_uri: str = Field(description="e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/foundry")
    service_account_name: str | None = None
    gpu_node_selector: dict[str, str] = Field(default={"nvidia.com/gpu.present": "true"})
    gpu_tolerations: list[Toleration] = Field(default=[Toleration(key="nvidia.com/gpu")])
    cuda_image: str = CUDA_IMAGE
    trtllm_image: str | None = Field(default=None, description="default: stacks.gpu_build_settings (1.2.x release)")
    calibrate_resources: GpuStepResources = GpuStepResources()
    build_resources: GpuStepResources = GpuStepResources()
    benchmark_resources: GpuStepResources = GpuStepResources()

    @field_validator("artifact_store_path")
    @classmethod
    def _remote_store(cls, value: str) -> str:
        if value.startswith("gs://"):
            raise ValueError(
                "gs:// needs ZenML's gcp integration (kfp, gcsfs, google-cloud-*), which this project does not "
                "install; use an s3:// bucket (or add the gcp integration and a GCS flavor here)"
            )
        if not value.startswith("s3://") or len(value) <= len("s3://"):
            raise ValueError(
                "must be a remote bucket path like s3://my-bucket/foundry (the pods cannot see a local path)"
            )
        return value.rstrip("/")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _remote_mlflow(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// MLflow tracking server (sqlite/file URIs are local to one machine)")
        return value.rstrip("/")

    @field_validator("trtllm_image")
    @classmethod
    def _trtllm_1_2(cls, value: str | None) -> str | None:
        if value is not None and not value.rpartition(":")[2].startswith("1.2."):
            raise ValueError("engines are built with TensorRT-LLM 1.2.x: use a 1.2.x release image tag")
        return value

    # ---- derived names ----
    @property
    def mlflow_secret(self) -> str:
        return f"{self.stack_name}-mlflow"

    @property
    def s3_secret(self) -> str:
        return f"{self.stack_name}-s3"

    def component_name(self, role: str) -> str:
        return f"{self.stack_name}-{role}"


def _env_overrides() -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for field in KubernetesGpuStackDefinition.model_fields:
        raw = os.environ.get(ENV_PREFIX + field.upper())
        if raw is None:
            continue
        # dict/list/resources fields take JSON; plain strings stay strings
        overrides[field] = json.loads(raw) if raw[:1] in "{[" else raw
    return overrides


def load_definition(path: Path | str | None) -> KubernetesGpuStackDefinition:
    """YAML (optional) + FOUNDRY_K8S_* env overrides → a validated definition, or one error listing
    every missing/bad field with the YAML key and env variable that supply it."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FoundryError(f"{path}: stack definition not found (start from stacks/kubernetes_gpu.example.yaml)")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise FoundryError(f"{path}: the stack definition must be a mapping of fields")
        data.update(loaded)
    data.update(_env_overrides())
    try:
        return KubernetesGpuStackDefinition.model_validate(data)
    except ValidationError as error:
        where = str(path) if path is not None else "environment"
        lines = [f"{where}: the {DEFINITION_NAME} stack definition is incomplete or invalid:"]
        for item in error.errors():
            field = ".".join(str(p) for p in item["loc"])
            top = str(item["loc"][0]) if item["loc"] else ""
            if item["type"] == "missing":
                message = f"required — set `{field}:` in the YAML or ${ENV_PREFIX}{top.upper()}"
            elif item["type"] == "extra_forbidden":
                message = "unknown field (see stacks/kubernetes_gpu.example.yaml)"
            else:
                message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  - {field}: {message}")
        raise FoundryError("\n".join(lines)) from None


# ---------------------------------------------------------------------------------------------
# Component configurations (validated by ZenML's own flavor config classes)
# ---------------------------------------------------------------------------------------------


def component_specs(definition: KubernetesGpuStackDefinition, with_s3_secret: bool) -> list:
    from zenml.enums import StackComponentType

    from stacks.local import ComponentSpec

    d = definition
    mlflow = {
        "tracking_uri": d.mlflow_tracking_uri,
        "tracking_username": f"{{{{{d.mlflow_secret}.username}}}}",
        "tracking_password": f"{{{{{d.mlflow_secret}.password}}}}",
    }
    k8s = {"kubernetes_context": d.kubernetes_context, "kubernetes_namespace": d.kubernetes_namespace}
    if d.service_account_name:
        k8s["service_account_name"] = d.service_account_name
    artifact_store = {"path": d.artifact_store_path}
    if with_s3_secret:
        artifact_store["authentication_secret"] = d.s3_secret
    return [
        ComponentSpec(d.component_name("orchestrator"), "kubernetes", StackComponentType.ORCHESTRATOR, dict(k8s)),
        ComponentSpec(d.component_name("artifacts"), "s3", StackComponentType.ARTIFACT_STORE, artifact_store),
        ComponentSpec(d.component_name("mlflow"), "mlflow", StackComponentType.EXPERIMENT_TRACKER, mlflow),
        ComponentSpec(d.component_name("mlflow-registry"), "mlflow", StackComponentType.MODEL_REGISTRY, {}),
        ComponentSpec(
            d.component_name("registry"),
            "default",
            StackComponentType.CONTAINER_REGISTRY,
            {"uri": d.container_registry_uri},
        ),
        ComponentSpec(
            d.component_name("kaniko"),
            "kaniko",
            StackComponentType.IMAGE_BUILDER,
            {"kubernetes_context": d.kubernetes_context, "kubernetes_namespace": d.kubernetes_namespace},
        ),
        ComponentSpec(d.component_name("gpu"), "kubernetes", StackComponentType.STEP_OPERATOR, dict(k8s)),
    ]


def validate_component_configs(specs, secret_values: dict[str, dict[str, str]] | None = None) -> None:
    """Each configuration through its ZenML flavor's config class (what `zenml ... register` does).

    `{{secret.key}}` references are checked against `secret_values` (ZenML would otherwise look the
    secret up, and nothing is written before validation passes)."""
    import re

    from zenml.client import Client

    client = Client()
    secret_values = secret_values or {}

    def substitute(value):
        match = re.fullmatch(r"\{\{([^.}]+)\.([^}]+)\}\}", value) if isinstance(value, str) else None
        if match is None:
            return value
        secret, key = match.groups()
        if key not in secret_values.get(secret, {}):
            raise FoundryError(f"missing credentials: ZenML secret '{secret}' has no key '{key}'")
        return secret_values[secret][key]

    for spec in specs:
        try:
            flavor = client.get_flavor_by_name_and_type(spec.flavor, spec.component_type)
        except KeyError:
            raise NotSupportedError(
                f"ZenML flavor '{spec.flavor}' ({spec.component_type.value}) is not available: its integration's "
                "packages are missing; reinstall the project (`pip install -c constraints.txt -e .`)"
            ) from None
        from zenml.stack.flavor import Flavor

        config_class = Flavor.from_model(flavor).config_class
        try:
            config_class(**{k: substitute(v) for k, v in spec.configuration.items()})
        except ValidationError as error:
            raise FoundryError(f"component {spec.name} ({spec.flavor} {spec.component_type.value}): {error}") from None


# ---------------------------------------------------------------------------------------------
# GPU step settings
# ---------------------------------------------------------------------------------------------


def _trtllm_image(definition: KubernetesGpuStackDefinition) -> str:
    if definition.trtllm_image:
        return definition.trtllm_image
    from stacks.gpu_build_settings import trtllm_parent_image  # one place pins the 1.2.x release image

    return trtllm_parent_image()


def gpu_step_configurations(
    definition: KubernetesGpuStackDefinition, backend: str = "reference", reference_on_cuda: bool = False
) -> dict[str, dict]:
    """`pipeline.with_options(steps=...)` for calibrate / build / benchmark on the GPU step operator;
    with the trtllm backend, build, benchmark and evaluate run in the TensorRT-LLM release image
    (trtllm-build, trtllm-serve) and the evaluation gets a GPU too; so does a reference engine that
    runs on CUDA (build.device: cuda), in the CUDA image."""
    from zenml.config import DockerSettings, ResourceSettings
    from zenml.integrations.kubernetes.flavors import KubernetesStepOperatorSettings
    from zenml.integrations.kubernetes.pod_settings import KubernetesPodSettings

    pod = KubernetesPodSettings(
        node_selectors=dict(definition.gpu_node_selector),
        tolerations=[t.model_dump(exclude_none=True) for t in definition.gpu_tolerations],
    )
    served = backend == "trtllm"
    images = {
        "calibrate_checkpoint": definition.cuda_image,
        "build_engine": _trtllm_image(definition),
        "benchmark_engine": _trtllm_image(definition) if served else definition.cuda_image,
        "evaluate_engine_quality": _trtllm_image(definition) if served else definition.cuda_image,
    }
    resources = {
        "calibrate_checkpoint": definition.calibrate_resources,
        "build_engine": definition.build_resources,
        "benchmark_engine": definition.benchmark_resources,
        "evaluate_engine_quality": definition.benchmark_resources,
    }
    configurations = {}
    for step in GPU_STEPS + (("evaluate_engine_quality",) if served or reference_on_cuda else ()):
        r = resources[step]
        configurations[step] = {
            "step_operator": definition.component_name("gpu"),
            "settings": {
                "resources": ResourceSettings(gpu_count=r.gpu_count, cpu_count=r.cpu_count, memory=r.memory),
                "docker": DockerSettings(parent_image=images[step], environment={"FOUNDRY_GPU_STEP": step}),
                "step_operator.kubernetes": KubernetesStepOperatorSettings(pod_settings=pod),
            },
        }
    return configurations


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def _secret_exists(client, name: str) -> bool:
    try:
        client.get_secret(name)
        return True
    except KeyError:
        return False


def _put_secret(client, name: str, values: dict[str, str]) -> None:
    if _secret_exists(client, name):
        client.update_secret(name, add_or_update_values=values)
    else:
        client.create_secret(name, values=values)


def register_kubernetes_gpu_stack(definition: KubernetesGpuStackDefinition, activate: bool = False) -> str:
    """Idempotent: validates everything first (secrets, flavor configs), then creates or updates."""
    from zenml.client import Client

    from stacks.local import _ensure_component

    client = Client()
    d = definition
    mlflow_values = None
    if os.environ.get(MLFLOW_USERNAME_ENV) and os.environ.get(MLFLOW_PASSWORD_ENV):
        mlflow_values = {"username": os.environ[MLFLOW_USERNAME_ENV], "password": os.environ[MLFLOW_PASSWORD_ENV]}
    missing_mlflow = (
        f"missing credentials: ZenML secret '{d.mlflow_secret}' (MLflow tracking server username/password) does not "
        f"exist; create it with `zenml secret create {d.mlflow_secret} --username=... --password=...` or set "
        f"${MLFLOW_USERNAME_ENV} and ${MLFLOW_PASSWORD_ENV} when registering"
    )
    s3_values = None
    if os.environ.get(AWS_KEY_ENV) and os.environ.get(AWS_SECRET_ENV):
        s3_values = {"aws_access_key_id": os.environ[AWS_KEY_ENV], "aws_secret_access_key": os.environ[AWS_SECRET_ENV]}
    # Validate everything before writing anything: credentials, flavor configs, step settings.
    if mlflow_values is None:
        if not _secret_exists(client, d.mlflow_secret):
            raise FoundryError(missing_mlflow)
        mlflow_values = dict(client.get_secret(d.mlflow_secret).secret_values)
        store_mlflow = False
    else:
        store_mlflow = True
    specs = component_specs(d, with_s3_secret=s3_values is not None or _secret_exists(client, d.s3_secret))
    validate_component_configs(specs, {d.mlflow_secret: mlflow_values})
    gpu_step_configurations(d)  # ResourceSettings / DockerSettings / pod settings validate on construction
    if store_mlflow:
        _put_secret(client, d.mlflow_secret, mlflow_values)
    if s3_values is not None:
        _put_secret(client, d.s3_secret, s3_values)

    components = {spec.component_type: _ensure_component(client, spec).id for spec in specs}
    labels = {"foundry.definition": DEFINITION_NAME, "foundry.spec": d.model_dump_json()}
    try:
        client.get_stack(d.stack_name, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(d.stack_name, components=components, labels=labels)
    else:
        client.update_stack(d.stack_name, component_updates={k: [v] for k, v in components.items()}, labels=labels)
    if activate:
        client.activate_stack(d.stack_name)
    return d.stack_name


def definition_of_stack(stack_model) -> KubernetesGpuStackDefinition | None:
    """The definition a registered stack was made from (stored in its labels), or None."""
    labels = stack_model.labels or {}
    if labels.get("foundry.definition") != DEFINITION_NAME or "foundry.spec" not in labels:
        return None
    return KubernetesGpuStackDefinition.model_validate_json(labels["foundry.spec"])
