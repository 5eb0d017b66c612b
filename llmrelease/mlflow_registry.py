"""The MLflow adapter: the only module that imports mlflow.

Prompt versions live in the Prompt Registry (``<app>-prompt``; prompts and registered models share
one namespace in open-source MLflow), candidates are versions of the registered model ``<app>``,
and aliases (challenger, champion, previous-champion) are set on both. Every write is idempotent
where it can be: re-running on unchanged files finds the existing versions by content hash.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmrelease.errors import InfrastructureError
from llmrelease.faults import checkpoint
from llmrelease.runtime import preserved_environ
from llmrelease.store import redact_uri

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "PREVIOUS",
    "TAG",
    "VersionInfo",
    "MlflowRegistry",
    "prompt_name",
    "model_name",
    "experiment_name",
    "utc_now",
]

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
TAG = "llmrelease."


def prompt_name(app: str) -> str:
    return f"{app}-prompt"


def model_name(app: str) -> str:
    return app


_ROUTER_SUFFIX = ".router"


def router_name(app: str) -> str:
    """The registered model (and lock) of ``app``'s routers, beside the app's own model."""
    return f"{app}{_ROUTER_SUFFIX}"


def app_of(registered_model: str) -> str:
    """The app a registered model belongs to: itself, or the app of a router (``<app>.router``)."""
    return registered_model.removesuffix(_ROUTER_SUFFIX)


def experiment_name(app: str) -> str:
    return f"llmrelease/{app}"


@dataclass(frozen=True)
class VersionInfo:
    """A registered candidate, as the registry knows it."""

    version: str
    tags: dict[str, str]

    @property
    def prompt_version(self) -> int | None:
        v = self.tags.get(TAG + "prompt_version")
        return int(v) if v else None

    @property
    def eval_run_id(self) -> str | None:
        return self.tags.get(TAG + "eval_run_id")

    @property
    def candidate_key(self) -> str | None:
        return self.tags.get(TAG + "candidate_key")


def utc_now() -> str:
    """The timestamp format of every llmrelease tag (``…_at``): UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class MlflowRegistry:
    def __init__(self, tracking_uri: str | None = None, *, artifact_root: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; in a long-lived process that
            # would silently redirect the next release to this store. Keep the environment as it was.
            with preserved_environ("MLFLOW_TRACKING_URI"):
                mlflow.set_tracking_uri(uri)
                mlflow.set_registry_uri(uri)
        self.tracking_uri = mlflow.get_tracking_uri()
        self.artifact_root = artifact_root or os.environ.get("LLMRELEASE_ARTIFACT_ROOT") or None
        self._mlflow = mlflow
        from llmrelease.locks import store_init_lock

        # A SQLite store is created (schema migrations) by its first user; two releases starting on
        # a fresh store at once would both migrate it and one would fail.
        with store_init_lock(self.tracking_uri):
            self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            self.client.search_experiments(max_results=1)
            self.client.search_registered_models(max_results=1)

    # ------------------------------------------------------------------------------------ prompts

    def _prompt_versions(self, name: str) -> list[Any]:
        from mlflow.exceptions import MlflowException

        out: list[Any] = []
        token = None
        try:
            while True:
                page = self.client.search_prompt_versions(name, max_results=100, page_token=token)
                out.extend(page)
                token = page.token
                if not token:
                    return out
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return out
            raise

    def ensure_prompt_version(
        self,
        app: str,
        template: list[dict[str, str]],
        *,
        content_hash: str,
        commit_message: str,
        tags: dict[str, str],
    ) -> tuple[int, bool]:
        """The prompt version with this content, registering it only if it does not exist yet."""
        name = prompt_name(app)
        for pv in self._prompt_versions(name):
            if pv.tags.get(TAG + "content_hash") == content_hash:
                return int(pv.version), False
        pv = self._mlflow.genai.register_prompt(
            name=name,
            template=template,
            commit_message=commit_message,
            tags={**tags, TAG + "content_hash": content_hash, TAG + "app": app},
        )
        return int(pv.version), True

    def load_prompt_template(self, app: str, version: int) -> list[dict[str, str]]:
        pv = self.client.get_prompt_version(prompt_name(app), version)
        template = pv.template
        return json.loads(template) if isinstance(template, str) else list(template)

    def prompt_alias(self, app: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_prompt_version_by_alias(prompt_name(app), alias).version)
        except MlflowException:
            return None

    # ------------------------------------------------------------------------------------- models

    def versions(self, app: str) -> list[VersionInfo]:
        name = model_name(app)
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(
            (VersionInfo(str(mv.version), dict(mv.tags)) for mv in found), key=lambda v: int(v.version)
        )

    def find_candidate(self, app: str, candidate_key: str) -> VersionInfo | None:
        for v in self.versions(app):
            if v.candidate_key == candidate_key:
                return v
        return None

    def ensure_model_version(
        self,
        app: str,
        *,
        candidate_key: str,
        prompt_version: int,
        params: dict[str, str],
        tags: dict[str, str],
    ) -> tuple[VersionInfo, bool]:
        """The model version for this candidate (model spec + prompt version), created only once.

        A config-only LoggedModel carries the spec as params and is linked to its prompt version.
        """
        return self._ensure_version(
            app,
            key=candidate_key,
            experiment_app=app,
            prompts=[(app, prompt_version)],
            params=params,
            tags={**tags, TAG + "prompt_version": str(prompt_version)},
            model_type="llm-candidate",
            description=f"llmrelease candidates of app '{app}'",
        )

    def ensure_router_version(
        self,
        router_app: str,
        *,
        app: str,
        router_key: str,
        prompt_versions: list[int],
        params: dict[str, str],
        tags: dict[str, str],
    ) -> tuple[VersionInfo, bool]:
        """The router's version (its spec and both routes' prompt versions), created only once, in
        the registered model ``router_app``; its LoggedModel is linked to every route's prompt version
        of ``app`` and lives in the app's experiment."""
        return self._ensure_version(
            router_app,
            key=router_key,
            experiment_app=app,
            prompts=[(app, v) for v in prompt_versions],
            params=params,
            tags=tags,
            model_type="llm-router",
            description=f"llmrelease routers of app '{app}'",
        )

    def _ensure_version(
        self,
        name_app: str,
        *,
        key: str,
        experiment_app: str,
        prompts: list[tuple[str, int]],
        params: dict[str, str],
        tags: dict[str, str],
        model_type: str,
        description: str,
    ) -> tuple[VersionInfo, bool]:
        from mlflow.exceptions import MlflowException

        existing = self.find_candidate(name_app, key)
        if existing is not None:
            self.set_version_tags(name_app, existing.version, tags)
            return VersionInfo(existing.version, {**existing.tags, **tags}), False
        name = model_name(name_app)
        try:
            self.client.create_registered_model(
                name, tags={TAG + "app": experiment_app}, description=description
            )
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        logged = self._mlflow.create_external_model(
            name=name_app.replace(".", "-"),  # LoggedModel names may not hold a dot
            params=params,
            tags={TAG + "candidate_key": key},
            model_type=model_type,
            experiment_id=self.experiment_id(experiment_app),
        )
        for prompt_app, version in dict.fromkeys(prompts):
            self.client.link_prompt_version_to_model(prompt_name(prompt_app), str(version), logged.model_id)
        all_tags = {**tags, TAG + "candidate_key": key, TAG + "logged_model_id": logged.model_id}
        mv = self.client.create_model_version(
            name, source=f"models:/{logged.model_id}", tags=all_tags, model_id=logged.model_id
        )
        return VersionInfo(str(mv.version), all_tags), True

    def set_version_tags(self, app: str, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(model_name(app), version, k, v)

    def version_description(self, app: str, version: str) -> str:
        return self.client.get_model_version(model_name(app), version).description or ""

    def set_version_description(self, app: str, version: str, text: str) -> None:
        """The version page's markdown (MLflow renders a version's description as markdown)."""
        self.client.update_model_version(model_name(app), version, description=text)

    def set_prompt_version_tags(self, app: str, version: int, tags: dict[str, str]) -> None:
        """Tags on a prompt version (its description is the commit message, which stays)."""
        for k, v in tags.items():
            self.client.set_prompt_version_tag(prompt_name(app), version, k, v[:5000])

    def alias(self, app: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(model_name(app), alias)
        except MlflowException:
            return None
        return VersionInfo(str(mv.version), dict(mv.tags))

    # ------------------------------------------------------------------------------------ aliases
    # Primitives only: every move is read back and checked. Which aliases move together, under the
    # app's lock and with an intent record, is llmrelease.tasks.promotion.transaction's job.

    def set_model_alias(self, app: str, alias: str, version: str | None) -> None:
        """Point (or, with None, remove) the registered model's ``alias``; checked by reading it back."""
        from mlflow.exceptions import MlflowException

        if version is None:
            try:
                self.client.delete_registered_model_alias(model_name(app), alias)
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code) and self.alias(app, alias):
                    raise
        else:
            self.client.set_registered_model_alias(model_name(app), alias, version)
        now = self.alias(app, alias)
        if (now.version if now else None) != version:
            raise InfrastructureError(
                f"model alias '{alias}' of '{app}' reads back "
                f"{'v' + now.version if now else 'unset'} after it was set to {version or 'unset'}"
            )

    def set_prompt_alias(self, app: str, alias: str, version: int | None) -> None:
        """Point (or, with None, remove) the prompt's ``alias``; checked by reading it back."""
        if version is None:
            with contextlib.suppress(Exception):  # absent alias: nothing to delete
                self._mlflow.genai.delete_prompt_alias(prompt_name(app), alias)
        else:
            self._mlflow.genai.set_prompt_alias(prompt_name(app), alias, version)
        now = self.prompt_alias(app, alias)
        if now != version:
            raise InfrastructureError(
                f"prompt alias '{alias}' of '{app}' reads back {now or 'unset'} after it was set to "
                f"{version or 'unset'}"
            )

    def set_challenger(self, app: str, candidate: VersionInfo) -> None:
        self.set_model_alias(app, CHALLENGER, candidate.version)
        if candidate.prompt_version is not None:
            self.set_prompt_alias(app, CHALLENGER, candidate.prompt_version)

    # The unfinished-move record: a registered-model tag, written before the first alias moves and
    # removed after the last one was checked.

    _INTENT = TAG + "intent"

    def read_intent(self, app: str) -> dict[str, Any] | None:
        raw = (self.model_tags(app) or {}).get(self._INTENT)
        return json.loads(raw) if raw else None

    def write_intent(self, app: str, intent: dict[str, Any]) -> None:
        self.set_model_tag(app, self._INTENT, json.dumps(intent, sort_keys=True, separators=(",", ":")))

    def clear_intent(self, app: str) -> None:
        self.client.delete_registered_model_tag(model_name(app), self._INTENT)

    # --------------------------------------------------------------------------------------- runs

    def experiment_id(self, app: str) -> str:
        exp = self.client.get_experiment_by_name(experiment_name(app))
        if exp is not None:
            return exp.experiment_id
        location = f"{self.artifact_root.rstrip('/')}/{app}" if self.artifact_root else None
        return self.client.create_experiment(
            experiment_name(app), artifact_location=location, tags={TAG + "app": app}
        )

    def log_evaluation(
        self,
        app: str,
        *,
        run_name: str,
        params: dict[str, str],
        metrics: dict[str, float],
        tags: dict[str, str],
        tables: dict[str, Callable[[Path], None]],
        artifacts: dict[str, Any],
        datasets: list[tuple[Any, str, str]],
        final_tags: dict[str, str] | None = None,
        inside_run: Callable[[str], None] | None = None,
    ) -> str:
        """One MLflow run per evaluation; metrics in one batched call; ``final_tags`` (the verdict)
        written last, just before the run is marked FINISHED.

        ``tables``: artifact path -> a function that writes the table file (MLflow's ``split`` JSON,
        see :func:`llmrelease.tasks.evaluation.items.write_table`) to the path it is given; written to disk
        by the caller's code, streaming, then uploaded, and tagged so the UI shows them as tables.
        ``artifacts``: path -> JSON-able value, or text (``str``, e.g. an HTML report).
        ``datasets``: (Hugging Face dataset, name, digest) triples logged as run inputs."""
        import tempfile

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        with self._run(app, run_name, tags, params, metrics, final_tags=final_tags) as run_id:
            checkpoint("log.run_started")
            if datasets:
                # The client call, not mlflow.start_run(run_id=...): leaving that block marks the run
                # FINISHED, before its artifacts are written.
                inputs = [self._dataset_input(*d, "evaluation") for d in datasets]
                self.client.log_inputs(run_id, datasets=inputs)
            for path, write in tables.items():
                with tempfile.TemporaryDirectory(prefix="llmrelease-table-") as tmp:
                    local = Path(tmp) / Path(path).name
                    write(local)
                    self.client.log_artifact(run_id, str(local), str(Path(path).parent) or None)
            if tables:
                logged = [{"path": path, "type": "table"} for path in tables]
                self.client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(logged))
            for path, obj in artifacts.items():
                if isinstance(obj, str):
                    self.client.log_text(run_id, obj, path)
                else:
                    self.client.log_dict(run_id, obj, path)
            checkpoint("log.artifacts_written")
            if inside_run is not None:  # e.g. the items as traces: before the verdict, like the rest
                inside_run(run_id)
        checkpoint("log.finished")
        return run_id

    @contextlib.contextmanager
    def _run(
        self,
        app: str,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        metrics: dict[str, float] | None = None,
        *,
        final_tags: dict[str, str] | None = None,
    ) -> Iterator[str]:
        """A run in the app's experiment with its params, metrics and tags in one batched call.

        FINISHED only when the block ends, after ``final_tags`` (the verdict) are written: a run that
        says what it decided has every artifact. FAILED (and re-raised) when the block raises; a
        process killed inside it leaves it RUNNING, tagged with its owner, so the next release of the
        app can tell (:meth:`mark_killed_runs`)."""
        from mlflow.entities import Metric, Param, RunTag

        from llmrelease.runtime import process_owner

        run = self.client.create_run(
            self.experiment_id(app),
            run_name=run_name,
            tags={TAG + "app": app, TAG + "owner": process_owner(), **tags},
        )
        run_id = run.info.run_id
        try:
            now = int(datetime.now(UTC).timestamp() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            yield run_id
            if final_tags:
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in final_tags.items()])
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def mark_killed_runs(self, app: str) -> list[str]:
        """Runs of ``app`` left RUNNING by a process of this machine that no longer exists: marked
        KILLED (with a note), so no one reads them as in progress. Runs owned by another machine are
        left alone: from here, a live release there looks the same as a dead one."""
        from llmrelease.runtime import owner_alive

        exp = self.client.get_experiment_by_name(experiment_name(app))
        if exp is None:
            return []
        killed = []
        for run in self.client.search_runs(
            [exp.experiment_id], "attributes.status = 'RUNNING'", max_results=200
        ):
            owner = run.data.tags.get(TAG + "owner")
            if owner and owner_alive(owner) is False:
                note = f"marked KILLED at {utc_now()}: its process ({owner}) died before the run ended"
                self.client.set_tag(run.info.run_id, TAG + "killed", note)
                self.client.set_terminated(run.info.run_id, status="KILLED")
                killed.append(run.info.run_id)
        return killed

    def find_experiment(self, ref: str) -> str | None:
        """An experiment's id from its name or id; None when there is none."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(ref)
        if exp is None and ref.isdigit():
            try:
                exp = self.client.get_experiment(ref)
            except MlflowException:
                exp = None
        return exp.experiment_id if exp is not None else None

    def latest_run(self, app: str, *, kind: str) -> tuple[str, dict[str, str]] | None:
        """(run id, tags) of the app's latest FINISHED run tagged ``llmrelease.kind = kind``."""
        exp = self.client.get_experiment_by_name(experiment_name(app))
        if exp is None:
            return None
        runs = self.client.search_runs(
            [exp.experiment_id],
            f"tags.`{TAG}kind` = '{kind}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return (runs[0].info.run_id, dict(runs[0].data.tags)) if runs else None

    def log_record(
        self,
        app: str,
        *,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        record: dict[str, Any],
        path: str,
    ) -> str:
        """A small run that records a fact (a rollout, an override) with its JSON."""
        with self._run(app, run_name, tags, params) as run_id:
            self.client.log_dict(run_id, record, path)
        return run_id

    def _dataset_input(self, ds: Any, name: str, digest: str, context: str) -> Any:
        """A Hugging Face dataset as a run input, under our digest (MLflow's own hashes only the first
        10,000 rows), tagged with what the run used it for."""
        from mlflow.entities import DatasetInput, InputTag

        dataset = self._mlflow.data.from_huggingface(ds, name=name, digest=digest)._to_mlflow_entity()
        return DatasetInput(dataset, [InputTag("mlflow.data.context", context)])

    def log_snapshot_run(
        self,
        app: str,
        *,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        metrics: dict[str, float],
        datasets: list[tuple[Any, str, str, str]],
        files: list[tuple[Path, str]],
    ) -> str:
        """A run that records data it built (a harvest): ``datasets`` as (Hugging Face dataset, name,
        digest, context) run inputs, ``files`` as (local path, artifact directory)."""
        with self._run(app, run_name, tags, params, metrics) as run_id:
            inputs = [self._dataset_input(*d) for d in datasets]
            if inputs:
                self.client.log_inputs(run_id, datasets=inputs)
            for path, where in files:
                self.client.log_artifact(run_id, str(path), where)
        return run_id

    def log_item_traces(
        self,
        app: str,
        run_id: str,
        *,
        model_id: str | None,
        prompt_version: int | None,
        items: Iterable[Mapping[str, Any]],
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Each item as a trace with its scores as assessments, linked to the run, the logged model
        and the prompt version: MLflow's GenAI evaluation view (see :mod:`llmrelease.mlflow_traces`)."""
        from llmrelease.mlflow_traces import log_item_traces

        return log_item_traces(
            self.tracking_uri,
            experiment_id=self.experiment_id(app),
            run_id=run_id,
            model_id=model_id,
            prompt_uri=f"prompts:/{prompt_name(app)}/{prompt_version}" if prompt_version else None,
            items=items,
            progress=progress,
        )

    def model_tags(self, app: str) -> dict[str, str] | None:
        """The registered model's tags, or None when no such model exists."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(model_name(app)).tags)
        except MlflowException:
            return None

    def set_model_tag(self, app: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(model_name(app), key, value)

    def sync_prompt_alias(self, app: str, alias: str, version: VersionInfo) -> bool:
        """Point the prompt's ``alias`` at ``version``'s prompt version; True if it moved."""
        if version.prompt_version is None or self.prompt_alias(app, alias) == version.prompt_version:
            return False
        self.set_prompt_alias(app, alias, version.prompt_version)
        return True

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def download_artifact(self, run_id: str, path: str, dest: Path) -> Path:
        """A run's artifact file, downloaded under ``dest``; InfrastructureError (one line) when it is
        gone from the store."""
        with self._reading_artifact(run_id, path):
            return Path(self.client.download_artifacts(run_id, path, str(dest)))

    def load_artifact_dict(self, run_id: str, path: str) -> dict[str, Any]:
        """A JSON artifact of a run; InfrastructureError (one line) when it is gone from the store."""
        with self._reading_artifact(run_id, path):
            return self._mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")

    @contextlib.contextmanager
    def _reading_artifact(self, run_id: str, path: str) -> Iterator[None]:
        """A failed artifact read as one line naming the artifact, the run and the store (redacted)."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, OSError) as exc:
            uri = self.client.get_run(run_id).info.artifact_uri
            raise InfrastructureError(
                f"artifact '{path}' of run {run_id} cannot be read from {redact_uri(uri)} "
                f"(deleted or unreachable): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
