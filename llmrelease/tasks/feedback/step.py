"""The harvest's I/O: read the app's logged requests, attribute them with the registry, write the
snapshots (content-addressed, never overwritten with other bytes) and record a harvest run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llmrelease.errors import InputError
from llmrelease.mlflow_registry import TAG, MlflowRegistry
from llmrelease.project import AppSpec
from llmrelease.specs import PromptSpec, Scorer, TrafficRecord, TrafficSpec
from llmrelease.store import redact_uri
from llmrelease.tasks.feedback.attribution import attribute
from llmrelease.tasks.feedback.harvest import Harvest, LoggedRequest, Render, build_harvest
from llmrelease.tasks.promotion.champion_history import champion_history
from llmrelease.tasks.shadow.traffic import read_traffic

__all__ = ["traffic_source", "read_requests", "harvest_app", "write_snapshots", "log_harvest", "default_out"]

MAX_REQUESTS = 1_000_000


def default_out(project: Path, app: str) -> Path:
    return project / "harvests" / app


def traffic_source(spec: AppSpec, source: str | None, *, traces: str | None = None) -> str | None:
    """``--traffic`` or the shadow spec's log (the production traffic the app already replays); None
    when the feedback comes from MLflow traces only."""
    if source:
        return source
    if spec.shadow is not None:
        return spec.shadow.traffic.source
    if traces:
        return None
    raise InputError(
        f"app '{spec.name}' has no traffic log to harvest",
        fix="pass --traffic PATH (or s3://bucket/key) or --traces EXPERIMENT, "
        "or add registry/<app>/shadow.yaml with traffic.source",
    )


def read_requests(
    spec: AppSpec,
    registry: MlflowRegistry,
    source: str | None,
    *,
    traces: str | None = None,
    on_bad_line: str = "fail",
) -> tuple[list[LoggedRequest], int, list[str]]:
    """Every request of the app in the log and/or the MLflow experiment's traces, attributed; the
    number of log lines read; why traces (or their assessments) were left out. Bad log lines are
    reported with file, line and field (or skipped with ``on_bad_line='skip'``)."""
    versions = registry.versions(spec.name)
    registered = {v.version: v.prompt_version for v in versions}
    history = champion_history(registry, spec.name)
    logged: list[tuple[TrafficRecord, int]] = []
    lines_read = 0
    if source is not None:
        traffic = TrafficSpec(source=source, sample="first", n=MAX_REQUESTS, on_bad_line=on_bad_line)  # type: ignore[arg-type]
        sample = read_traffic(traffic, spec.name, project_root=spec.root)
        logged = [(rec, sample.line_of(i) or 0) for i, rec in enumerate(sample.records)]
        lines_read = sample.lines_read
    skipped: list[str] = []
    if traces is not None:
        from llmrelease.tasks.feedback.mlflow_feedback import traces_as_records

        experiment = registry.find_experiment(traces)
        if experiment is None:
            raise InputError(
                f"no MLflow experiment '{traces}' in {redact_uri(registry.tracking_uri)}",
                fix="--traces takes the name or id of the experiment the app's production traces go to",
            )
        models = {
            v.tags[TAG + "logged_model_id"]: v.version
            for v in versions
            if v.tags.get(TAG + "logged_model_id")
        }
        found, skipped = traces_as_records(
            registry.tracking_uri,
            experiment,
            spec.name,
            variables=spec.prompt.variables,
            logged_models=models,
        )
        logged += [(rec, 0) for rec in found]  # line 0: a trace, named by its id
    requests = [
        LoggedRequest(rec, line, attribute(rec.served, rec.timestamp, registered=registered, history=history))
        for rec, line in logged
    ]
    return requests, lines_read, skipped


def _renderer(registry: MlflowRegistry, app: str) -> Render:
    cache: dict[int, PromptSpec | None] = {}

    def render(version: int, variables: dict[str, str]) -> list[dict[str, str]] | None:
        if version not in cache:
            try:
                messages = registry.load_prompt_template(app, version)
                cache[version] = PromptSpec.model_validate(
                    {"version": f"v{version}", "messages": messages}, context={"recorded": True}
                )
            except Exception:  # noqa: BLE001 - a prompt version gone from the registry: listed, not fatal
                cache[version] = None
        prompt = cache[version]
        if prompt is None:
            return None
        try:
            return prompt.render(variables)
        except KeyError:
            return None

    return render


def _scorers(spec: AppSpec) -> list[Scorer]:
    return [s for ev in spec.evalsets if ev.card.kind == "quality" for s in ev.card.scorers]


def harvest_app(
    spec: AppSpec,
    registry: MlflowRegistry,
    source: str | None,
    *,
    traces: str | None = None,
    on_bad_line: str = "fail",
) -> Harvest:
    requests, lines_read, skipped = read_requests(
        spec, registry, source, traces=traces, on_bad_line=on_bad_line
    )
    parts = [source] if source else []
    if traces:
        parts.append(f"mlflow traces of experiment '{traces}'")
    return build_harvest(
        spec.name,
        requests,
        source=" + ".join(parts),
        skipped=skipped,
        render=_renderer(registry, spec.name),
        scorers=_scorers(spec),
        structured=spec.model.response_schema is not None,
        lines_read=lines_read,
    )


def write_snapshots(harvest: Harvest, out: Path) -> dict[str, Path]:
    """Each snapshot under its content-addressed name; one already there is left as it is (same
    name, same bytes). Written to a temporary name first: a killed harvest leaves no half file."""
    out.mkdir(parents=True, exist_ok=True)
    files = {kind: (s.name, s.data) for kind, s in harvest.snapshots.items()}
    files["card"] = (harvest.card_name, harvest.card)
    paths = {}
    for kind, (name, data) in files.items():
        path = out / name
        if not (path.is_file() and path.read_bytes() == data):
            with tempfile.NamedTemporaryFile(dir=out, prefix=f".{name}.", delete=False) as fh:
                fh.write(data)
            Path(fh.name).replace(path)
        paths[kind] = path
    return paths


def log_harvest(registry: MlflowRegistry, spec: AppSpec, harvest: Harvest, paths: dict[str, Path]) -> str:
    """A harvest run in the app's experiment: each JSONL snapshot a dataset input (named by its
    digest), the summary and the card as artifacts, the counts as metrics."""
    import datasets

    s = harvest.summary
    metrics: dict[str, float] = {
        "harvest.requests": float(s["requests"]),
        "harvest.feedback": float(s["feedback"]),
        "harvest.duplicates_dropped": float(s["duplicates_dropped"]),
        **{f"harvest.{k}_rows": float(v.rows) for k, v in harvest.snapshots.items() if k != "summary"},
    }
    if s["attributed"]["share"] is not None:
        metrics["harvest.attributed_share"] = float(s["attributed"]["share"])
    tags = {TAG + "kind": "harvest", "mlflow.note.content": _note(harvest)}
    tags |= {TAG + f"harvest.{k}": v.digest for k, v in harvest.snapshots.items()}
    inputs = [
        (datasets.Dataset.from_json(str(paths[kind])), snap.name, snap.digest[:16], kind)
        for kind in ("regression", "sft", "preference")
        if (snap := harvest.snapshots[kind]).rows
    ]
    return registry.log_snapshot_run(
        spec.name,
        run_name=f"{spec.name}-harvest-{harvest.snapshots['summary'].digest[:8]}",
        tags=tags,
        params={"traffic": str(s["traffic"]), "lines_read": str(s["lines_read"])},
        metrics=metrics,
        datasets=inputs,
        files=[(paths["summary"], "harvest"), (paths["card"], "harvest")],
    )


def _note(harvest: Harvest) -> str:
    s = harvest.summary
    rows = ", ".join(f"{k} {v.rows}" for k, v in harvest.snapshots.items() if k != "summary")
    share = s["attributed"]["share"]
    attributed = f"{share:.0%}" if share is not None else "n/a"
    return (
        f"Harvest of {s['feedback']} feedback records on {s['requests']} requests "
        f"({s['traffic']}): {rows} rows; "
        f"{attributed} attributed to an exact model and prompt version."
    )
