"""MLflow tracking and model registry: the only module in foundry/ that imports mlflow.

A registered model version points at the engine artifact's URI (no multi-GB copy into MLflow) and
carries lineage tags. Promotion moves the alias `production`; stages are deprecated in MLflow 3.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from foundry.errors import FoundryError, InfrastructureError

PRODUCTION_ALIAS = "production"


def sqlite_tracking_uri(state_dir: Path) -> str:
    """Local default: MLflow >= 3.13 refuses a plain ./mlruns file store, so SQLite it is."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"


def ensure_experiment(tracking_uri: str, name: str, artifact_location: Path) -> None:
    """Create the experiment with its artifacts under `artifact_location`. Left to MLflow, a SQLite
    backend puts run artifacts in ./mlruns of whatever directory the process started in."""
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(name) is None:
        artifact_location.mkdir(parents=True, exist_ok=True)
        client.create_experiment(name, artifact_location=artifact_location.resolve().as_uri())


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    source: str
    run_id: str | None


def log_to_active_run(params: dict, metrics: dict[str, float], json_artifacts: dict[str, object], tags: dict) -> str:
    """Log into the MLflow run ZenML's experiment tracker opened for this step; returns its id."""
    run = mlflow.active_run()
    if run is None:
        raise FoundryError("no active MLflow run: the register step must run with the stack's experiment tracker")
    mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
    mlflow.set_tags({k: str(v) for k, v in tags.items()})
    for name, payload in json_artifacts.items():
        mlflow.log_text(json.dumps(payload, indent=2, default=str), f"reports/{name}.json")
    return run.info.run_id


LOCK_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class _RetryingClient:
    """MlflowClient whose calls retry while the SQLite tracking database is locked (concurrent runs
    on one state directory), then fail naming the database and the fix."""

    def __init__(self, client: MlflowClient, tracking_uri: str) -> None:
        self._client, self._tracking_uri = client, tracking_uri

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            for delay_s in (*LOCK_RETRY_DELAYS_S, None):
                try:
                    return attribute(*args, **kwargs)
                except MlflowException as error:
                    if "database is locked" not in str(error):
                        raise
                    if delay_s is None:
                        raise InfrastructureError(
                            f"the MLflow tracking database {self._tracking_uri} stayed locked for "
                            f"{sum(LOCK_RETRY_DELAYS_S):g} s ({name}); another process holds it — retry when it "
                            "finishes, or use a tracking server for concurrent runs"
                        ) from None
                time.sleep(delay_s)

        return call


class Registry:
    """Thin, explicit wrapper over MlflowClient for the operations the pipeline and CLI need."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = _RetryingClient(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), tracking_uri)

    def ensure_registered_model(self, model_name: str) -> None:
        try:
            self.client.get_registered_model(model_name)
        except MlflowException:
            self.client.create_registered_model(
                model_name, description="TensorRT-LLM / reference engines built by LLM Engine Foundry"
            )

    def register_engine(self, model_name: str, engine_uri: str, run_id: str | None, tags: dict) -> RegisteredVersion:
        self.ensure_registered_model(model_name)
        version = self.client.create_model_version(
            name=model_name,
            source=engine_uri,
            run_id=run_id,
            tags={k: str(v) for k, v in tags.items()},
            description=f"engine artifact at {engine_uri}",
        )
        return RegisteredVersion(model_name, str(version.version), engine_uri, run_id)

    def production_version(self, model_name: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(model_name, PRODUCTION_ALIAS).version)
        except (MlflowException, RestException):
            return None

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(model_name, version).tags)

    def set_production(self, model_name: str, version: str) -> None:
        self.client.set_registered_model_alias(model_name, PRODUCTION_ALIAS, version)

    def restore_production(self, model_name: str, previous_version: str | None) -> None:
        """Undo a promotion: put the alias back where it was (or remove it if there was none)."""
        if previous_version is None:
            self.client.delete_registered_model_alias(model_name, PRODUCTION_ALIAS)
        else:
            self.client.set_registered_model_alias(model_name, PRODUCTION_ALIAS, previous_version)

    def tag_version(self, model_name: str, version: str, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model_name, version, key, str(value))

    def list_versions(self, model_name: str) -> list:
        return sorted(self.client.search_model_versions(f"name='{model_name}'"), key=lambda v: int(v.version))

    def model_tag(self, model_name: str, key: str) -> str | None:
        return dict(self.client.get_registered_model(model_name).tags).get(key)

    def set_model_tag(self, model_name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(model_name, key, value)

    def delete_model_tag(self, model_name: str, key: str) -> None:
        try:
            self.client.delete_registered_model_tag(model_name, key)
        except (MlflowException, RestException):
            pass  # already gone: the journal is idempotent

    def record_production_change(self, model_name: str, change: dict) -> str:
        """One MLflow run per production change (experiment PRODUCTION_CHANGES), tagged with who,
        when, why, from which version to which and the gate decision; returns the run id."""
        experiment = self.client.get_experiment_by_name(PRODUCTION_CHANGES)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PRODUCTION_CHANGES)
        tags = {f"foundry.{k}": str(v) for k, v in change.items() if v is not None} | {"foundry.model": model_name}
        run = self.client.create_run(experiment_id, tags=tags, run_name=f"{model_name}:{change.get('action')}")
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def production_history(self, model_name: str) -> list[dict]:
        """Every recorded production change of `model_name`, oldest first."""
        experiment = self.client.get_experiment_by_name(PRODUCTION_CHANGES)
        if experiment is None:
            return []
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`foundry.model` = '{model_name}'",
            order_by=["attributes.start_time ASC"],
            max_results=10_000,
        )
        return [
            {k.removeprefix("foundry."): v for k, v in run.data.tags.items() if k.startswith("foundry.")}
            | {"mlflow_run_id": run.info.run_id}
            for run in runs
        ]

    def model_names(self) -> list[str]:
        return sorted(model.name for model in self.client.search_registered_models())

    def engine_dir(self, model_name: str, version: str | None) -> tuple[str, Path, str]:
        """(version, local engine directory, source URI) of a registered engine: `version`, or the
        production one. Unknown models and versions are refused naming what there is."""
        names = self.model_names()
        if model_name not in names:
            raise FoundryError(
                f"--model: no registered model {model_name!r} in MLflow at {self.tracking_uri}; "
                f"registered: {', '.join(names) or 'none yet (run the pipeline first)'}"
            )
        version = version or self.production_version(model_name)
        if version is None:
            raise FoundryError(f"model {model_name!r} has no production version in MLflow; pass --version N")
        try:
            source = self.client.get_model_version(model_name, str(version)).source
        except (MlflowException, RestException):
            known = ", ".join(str(v.version) for v in self.list_versions(model_name))
            raise FoundryError(f"--version: model {model_name!r} has no version {version}; versions: {known}") from None
        engine_dir = Path(source.removeprefix("file://"))
        if not engine_dir.is_dir():
            raise FoundryError(
                f"{model_name} version {version}: engine source {source} is not a local directory; run this "
                "where the artifact store is mounted"
            )
        return str(version), engine_dir, source

    def resolve_version(self, model_name: str, alias: str | None = None, version: int | str | None = None):
        """A model version by alias or number, with an error that names the fix."""
        try:
            if alias is not None:
                return self.client.get_model_version_by_alias(model_name, alias)
            return self.client.get_model_version(model_name, str(version))
        except (MlflowException, RestException) as error:
            which = f"alias '{alias}'" if alias is not None else f"version {version}"
            raise FoundryError(
                f"model.source: MLflow registry at {self.tracking_uri} has no model '{model_name}' with {which} "
                f"({error.message if hasattr(error, 'message') else error}); register it or fix registered_model/alias/version"
            ) from None

    def checkpoint_path(
        self,
        model_name: str,
        alias: str | None = None,
        version: int | str | None = None,
        download_dir: Path | None = None,
        fetch: bool = True,
    ) -> Path | None:
        """Local path of a model version's checkpoint: its source when that is a local path,
        otherwise its artifacts downloaded (once per version) into `download_dir` — or, with
        `fetch=False` (a cheap look), None."""
        model_version = self.resolve_version(model_name, alias, version)
        source = model_version.source or ""
        local = Path(source[len("file://") :] if source.startswith("file://") else source)
        if (source.startswith("file://") or source.startswith("/")) and local.exists():
            return local
        if not fetch:
            return None
        if download_dir is None:
            raise FoundryError(
                f"model version {model_name}/{model_version.version} lives at {source}; a download_dir is needed"
            )
        target = Path(download_dir) / f"{model_name}-v{model_version.version}"
        if target.exists():
            return target
        partial = Path(download_dir) / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            downloaded = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=str(partial), tracking_uri=self.tracking_uri
            )
            os.replace(downloaded, target)
        except (MlflowException, OSError) as error:
            raise FoundryError(
                f"could not fetch model version {model_name}/{model_version.version} from {source!r}: {error}; "
                "check the registry's artifact store and its credentials"
            ) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def run_metrics_by_name(self, run_name: str) -> dict[str, float]:
        """Metrics of the newest MLflow run with this name (ZenML names the MLflow run after the
        pipeline run). Refuses an unknown name rather than comparing against nothing."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self.client.search_runs(
            experiments,
            filter_string=f"attributes.run_name = '{run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise FoundryError(f"--compare-with: no run named {run_name!r} in MLflow at {self.tracking_uri}")
        return dict(runs[0].data.metrics)

    def version_run_metrics(self, model_name: str, version: str) -> dict[str, float]:
        """The metrics of the MLflow run a model version was registered from ({} when it has none)."""
        run_id = self.client.get_model_version(model_name, version).run_id
        if not run_id:
            return {}
        return dict(self.client.get_run(run_id).data.metrics)


PRODUCTION_CHANGES = "foundry-production-changes"


def mlflow_version() -> str:
    return mlflow.__version__


def disable_mlflow_telemetry() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
