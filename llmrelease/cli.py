"""``llmrelease``: thin command line over the flows. Parses, calls, prints, maps errors to exit codes.

Exit codes: 0 promoted / already champion / ok, 1 gates failed (nothing promoted), 2 invalid input
(file, line, field; nothing registered), 3 not promoted because the champion moved during the
evaluation, 4 the release could not complete (tracking server unreachable, artifacts missing, engine
crashed: one line of cause, the traceback with --verbose), 5 not promoted because a gate was
INCONCLUSIVE (no gate failed, but the evalset is too small to tell; the report says how many items
would decide it). With --json, stdout carries exactly one JSON object, errors included.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llmrelease.errors import InputError, LLMReleaseError
from llmrelease.report import console as report_console

app = typer.Typer(
    name="llmrelease",
    help="Release pipeline for LLM apps: specs in Git -> MLflow -> vLLM batch evaluation -> gates -> "
    "aliases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project",
        "-p",
        help="Project directory holding registry/ and evalsets/.",
        exists=True,
        file_okay=False,
        resolve_path=True,
    ),
]
TrackingOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<project>/.llmrelease/mlflow.db.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable report on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show vLLM's and Prefect's own logs.")]


def _quiet(verbose: bool) -> None:
    from llmrelease.lifeline import start_lifeline
    from llmrelease.runtime import configure

    start_lifeline()  # first: children started from here on die with this process, even by SIGKILL
    configure(verbose=verbose)


@contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """With --json, everything but the report (including engine subprocesses, which inherit fd 1)
    writes to stderr, so stdout carries exactly one JSON document."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _fail(exc: LLMReleaseError, as_json: bool = False) -> None:
    from rich.text import Text

    if as_json:
        from llmrelease.errors import error_payload

        print(json.dumps(error_payload(exc), indent=2, default=str))
    label = "error: " if exc.exit_code != 4 else "error (infrastructure): "
    # soft_wrap: no newline inserted at the console's width (80 when stderr is a pipe or a CI log):
    # "path/to/model.yaml:13: field ..." stays one searchable, clickable line whatever its length.
    err.print(Text(label, style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors_reported(as_json: bool = False, verbose: bool = False, *, flows: bool = False) -> Iterator[None]:
    """Every failure ends in its exit code and one message (a JSON object with --json), never a bare
    traceback: llmrelease's own errors keep theirs; anything else is an infrastructure failure (4).
    ``flows``: the command runs Prefect flows, whose console tracebacks are kept for --verbose."""
    if flows and not verbose:
        from llmrelease.runtime import console_without_prefect_errors

        console_without_prefect_errors()
    try:
        with _stdout_to_stderr(as_json):
            yield
    except (typer.Exit, KeyboardInterrupt):
        raise
    except LLMReleaseError as exc:
        _fail(exc, as_json)
    except Exception as exc:
        from llmrelease.failures import as_infrastructure_error

        if verbose:
            err.print_exception()
        _fail(as_infrastructure_error(exc), as_json)


@app.command()
def release(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    prompt: Annotated[
        Path | None,
        typer.Option(
            "--prompt",
            help="Release this prompt spec instead of registry/APP/prompt.yaml (an experiment).",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Release this model spec instead of registry/APP/model.yaml.",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ] = None,
    git_commit: Annotated[
        str | None,
        typer.Option(
            help="Release the specs as of this commit (read from a temporary worktree; the checkout "
            "is not touched). Default: the working tree at HEAD.",
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    allow_rolled_back: Annotated[
        bool,
        typer.Option(
            "--allow-rolled-back",
            help="Release a candidate that was rolled back before (refused otherwise); recorded on "
            "the version and the run.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate APP's candidate against its gates and promote it to champion if every gate passes.

    Exit 0: promoted or already champion. 1: a gate failed, nothing promoted. 2: invalid input
    (file, line and field are named; nothing registered), or a rolled-back candidate without
    --allow-rolled-back. 3: the champion moved meanwhile. 4: the release could not complete
    (tracking server, artifacts, engine); the registry is left consistent. 5: no gate failed but at
    least one was INCONCLUSIVE (too few items to tell), nothing promoted.
    """
    _quiet(verbose)
    from llmrelease import api
    from llmrelease.report import outcome_panel

    with _errors_reported(as_json, verbose, flows=True):
        outcome = api.release(
            app_name,
            project,
            prompt=prompt,
            model=model,
            git_commit=git_commit,
            tracking_uri=tracking_uri,
            allow_rolled_back=allow_rolled_back,
        )
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2, default=str))
    else:
        report_console().print(outcome_panel(outcome.to_dict(), outcome.mlflow_ui))
    raise typer.Exit(outcome.exit_code)


@app.command()
def shadow(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    version: Annotated[
        str | None,
        typer.Option("--version", help="Registered version to compare. Default: the challenger."),
    ] = None,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Version to compare with. Default: the champion."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Replay recorded production traffic (registry/APP/shadow.yaml) through the champion and a
    registered version: TTFT, time per token, cost per 1,000 requests, prefix-cache hits, output
    agreement. Records an MLflow run with an HTML report; moves no alias.

    Exit 0: every shadow gate passed (or there are none). 1: a shadow gate failed. 2: invalid input.
    """
    _quiet(verbose)
    from llmrelease.report import shadow_panel
    from llmrelease.store import resolve_store

    with _errors_reported(as_json, verbose, flows=True):
        from llmrelease.project import load_app

        load_app(project, app_name)  # fail fast on bad specs, before Prefect starts
        store = resolve_store(project, tracking_uri)
        from llmrelease.flows.shadow import shadow_flow

        with store.exported():
            outcome = shadow_flow(
                app=app_name,
                project_dir=str(project),
                candidate_version=version,
                champion_version=against,
            )
    if as_json:
        print(json.dumps({**outcome, "mlflow_ui": store.ui_command}, indent=2, default=str))
    else:
        report_console().print(shadow_panel(outcome, store.ui_command))
    raise typer.Exit(outcome["exit_code"])


def _known_app(project: Path, app_name: str) -> None:
    from llmrelease.errors import UnknownNameError
    from llmrelease.project import list_apps

    apps = list_apps(project)
    if app_name not in apps:
        raise UnknownNameError(
            "app", app_name, apps, fix=f"an app is a folder under {project / 'registry'} with its specs"
        )


@app.command()
def status(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show which model and prompt versions hold champion, challenger and previous-champion, and
    whether the model's and the prompt's aliases agree. Finishes an alias move a killed release left
    half-way (and says so). Reads a store; never creates one."""
    _quiet(False)
    from llmrelease.report import router_status_table, status_table
    from llmrelease.store import resolve_store

    with _errors_reported(as_json):
        _known_app(project, app_name)
        store = resolve_store(project, tracking_uri, create=False)
        if store.missing:
            st = _empty_status(app_name, store.tracking_uri)
        else:
            from llmrelease.mlflow_registry import MlflowRegistry
            from llmrelease.tasks.promotion.status import app_status

            st = app_status(MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root), app_name)
    if as_json:
        print(json.dumps(st, indent=2, default=str))
        raise typer.Exit(1 if st.get("disagreements") else 0)
    out = report_console()
    for note in st.get("notes", []):
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    out.print(status_table(st))
    router_table = router_status_table(st)
    if router_table is not None:
        out.print(router_table)
    out.print(f"{st['versions']} registered version(s) in {st['tracking_uri']}")
    if st.get("disagreements"):
        raise typer.Exit(1)


def _empty_status(app_name: str, tracking_uri: str) -> dict[str, object]:
    from llmrelease.store import redact_uri

    return {
        "app": app_name,
        "override": None,
        "tracking_uri": redact_uri(tracking_uri),
        "versions": 0,
        "aliases": [{"alias": a, "version": None} for a in ("champion", "challenger", "previous-champion")],
        "disagreements": [],
        "router": None,
        "notes": ["no store yet: nothing has been released to it"],
    }


@app.command()
def plan(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin", min=0.0, help="Plan every comparison gate for this margin. Default: each gate's own."
        ),
    ] = None,
    power: Annotated[
        float | None,
        typer.Option("--power", min=0.5, max=0.99, help="Power to plan for. Default: gates.yaml's (0.8)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """How many evalset items each comparison gate needs to decide at its margin (and each gate on
    a bound, at the champion's distance from its threshold), from the champion's recorded per-item
    scores (their spread and clusters), with the generation cost and time that many items would
    take at the champion's recorded tokens, pricing and speed.

    Exit 0: every gate's evalset is large enough. 1: at least one is not (INCONCLUSIVE is likely).
    2: invalid input, or no champion to read from yet.
    """
    _quiet(False)
    from llmrelease.report import plan_table
    from llmrelease.store import resolve_store

    with _errors_reported(as_json):
        if margin is not None and margin <= 0:
            raise InputError(f"--margin must be > 0, got {margin}", field="--margin")
        from llmrelease.project import load_app

        spec = load_app(project, app_name)
        store = resolve_store(project, tracking_uri, create=False)
        if store.missing:
            raise InputError(
                f"no MLflow store at {store.tracking_uri}: a plan is read from the champion's release run",
                fix=f"release the app first (llmrelease release {app_name}), or pass --tracking-uri",
            )
        from llmrelease.mlflow_registry import MlflowRegistry
        from llmrelease.tasks.planning import plan_sizes

        result = plan_sizes(
            MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root),
            spec,
            margin=margin,
            power=power,
        )
    short = [g["gate"] for g in result["gates"] if not g["enough"]]
    if as_json:
        print(json.dumps({**result, "exit_code": 1 if short else 0}, indent=2, default=str))
    else:
        report_console().print(plan_table(result))
    raise typer.Exit(1 if short else 0)


@app.command()
def rollback(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move champion back to previous-champion (model and prompt aliases, all or nothing) and clear
    previous-champion. The demoted version is tagged rolled_back_at: releasing it again is refused
    unless `release --allow-rolled-back`."""
    _quiet(False)
    from llmrelease.store import resolve_store

    with _errors_reported(as_json):
        _known_app(project, app_name)
        store = resolve_store(project, tracking_uri, create=False)
        if store.missing:
            from llmrelease.errors import InputError

            raise InputError(
                f"app '{app_name}' has never been released to {store.tracking_uri}: nothing to roll back"
            )
        from llmrelease.mlflow_registry import MlflowRegistry
        from llmrelease.tasks.promotion.transaction import rollback as roll_back

        registry = MlflowRegistry(store.tracking_uri, artifact_root=store.artifact_root)
        restored, demoted, notes = roll_back(registry, app_name)
    result = {
        "app": app_name,
        "status": "rolled_back",
        "champion": restored.version,
        "demoted": demoted.version,
        "notes": notes,
        "exit_code": 0,
    }
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for note in notes:
        report_console().print(f"[yellow]note:[/] {note}", highlight=False)
    report_console().print(
        f"[bold green]rolled back[/] {app_name}: champion is v{restored.version} again "
        f"(was v{demoted.version}); previous-champion cleared"
    )


@app.command()
def demo(
    project: Annotated[
        Path | None,
        typer.Option(
            "--project",
            "-p",
            help="Project with the demo app. Default: this checkout.",
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the bundled support-triage demo on a fresh local store: a first release (baseline prompt),
    a better candidate that is promoted, and a worse one that the gates reject."""
    _quiet(verbose)
    from llmrelease.demo import run_demo

    with _errors_reported(False, verbose, flows=True):
        code = run_demo(project)
    raise typer.Exit(code)


@app.command()
def nightly(
    apps: Annotated[
        list[str] | None,
        typer.Argument(metavar="[APP]...", help="Apps to check. Default: every app of the project."),
    ] = None,
    project: ProjectOpt = Path("."),
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest |now - at release| of a metric that is not drift.")
    ] = 0.02,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Re-evaluate each champion on its app's current evalsets and compare with its release run
    (the scheduled `nightly` deployment runs the same flow); replay recent traffic through the
    router champion, if any, and flag it when the share it escalates left its band. Records a run,
    tags the versions, moves nothing. Exit 0: no drift. 1: drift in at least one app. 2: an app
    could not be checked."""
    _quiet(verbose)
    from llmrelease.flows.nightly import nightly_flow
    from llmrelease.store import resolve_store
    from llmrelease.tasks.promotion.nightly import NightlyFailed

    store = resolve_store(project, tracking_uri)
    code = 0
    with _errors_reported(as_json, verbose, flows=True):
        try:
            with store.exported():
                result = nightly_flow(project_dir=str(project), apps=apps or None, tolerance=tolerance)
        except NightlyFailed as exc:
            result, code = exc.result, 2
    if code == 0 and result["drift"]:
        code = 1
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        raise typer.Exit(code)
    from llmrelease.report import nightly_table

    table = nightly_table(result)
    report_console().print(table)
    report_console().print(f"recorded in {result.get('tracking_uri', store.tracking_uri)}")
    raise typer.Exit(code)


@app.command()
def harvest(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    traffic: Annotated[
        str | None,
        typer.Option(help="Traffic log with feedback (path or s3://). Default: shadow.yaml's source."),
    ] = None,
    traces: Annotated[
        str | None,
        typer.Option(
            help="Also read production traces and their assessments (mlflow.log_feedback / "
            "log_expectation) from this MLflow experiment (name or id)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the snapshots go. Default: harvests/<app>/ in the project.")
    ] = None,
    skip_bad_lines: Annotated[
        bool, typer.Option(help="List bad log lines and go on, instead of stopping at the first.")
    ] = False,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Turn production feedback into data: a regression evalset (corrections as references, with
    its card), an SFT set and a preference set, each named by its content digest, plus a summary
    per served version. Every request is attributed to the model and prompt version that answered;
    personal data is scrubbed. Records a harvest run; moves nothing. Review the evalset and copy it
    to evalsets/<app>/ to gate releases on it."""
    _quiet(verbose)
    from llmrelease import api

    with _errors_reported(as_json, verbose, flows=True):
        _known_app(project, app_name)
        result = api.harvest(
            app_name,
            project,
            traffic=traffic,
            traces=traces,
            out=out,
            skip_bad_lines=skip_bad_lines,
            tracking_uri=tracking_uri,
        )
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        raise typer.Exit(0)
    from llmrelease.report import harvest_report

    harvest_report(result, report_console())


@app.command()
def route(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="App name: a folder under registry/.")],
    project: ProjectOpt = Path("."),
    git_commit: Annotated[
        str | None,
        typer.Option(
            help="Evaluate the specs as of this commit (a temporary worktree). Default: the working tree."
        ),
    ] = None,
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Release APP's router (registry/APP/router.yaml): both routes answer every evalset item, the
    policy picks one answer per item (a cascade escalates the least confident cheap answers; a
    classifier sends each request by its text, judged out-of-fold), and the router is judged on
    quality and cost per 1,000 requests with bootstrap intervals, APGR, CPT(50%)/CPT(80%), against a
    random router at equal cost and each route alone. Registers it in APP.router, records a run with
    the cost-quality curve (router/router_report.html), and makes it the router champion only if
    every gate passed.

    Exit codes as for release: 0 promoted or already champion; 1 a gate failed; 2 invalid input
    (file, line and field named; nothing registered); 3 the router champion moved meanwhile; 4 the
    run could not complete; 5 no gate failed but one was INCONCLUSIVE.
    """
    _quiet(verbose)
    from llmrelease import api

    with _errors_reported(as_json, verbose, flows=True):
        _known_app(project, app_name)
        result = api.route(app_name, project, git_commit=git_commit, tracking_uri=tracking_uri)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        from llmrelease.report import router_report

        router_report(result, report_console())
    raise typer.Exit(result["exit_code"])


PortOpt = Annotated[int, typer.Option(min=1, max=65535)]


@app.command()
def serve(
    project: ProjectOpt = Path("."),
    host: Annotated[str, typer.Option(help="Interface every service listens on.")] = "127.0.0.1",
    prefect_port: PortOpt = 4200,
    mlflow_port: PortOpt = 5000,
    relay_port: PortOpt = 8787,
    prefect_api_url: Annotated[
        str | None,
        typer.Option(help="Use this Prefect API (http://host:4200/api) instead of starting a server."),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(help="Use this MLflow tracking server (http://host:5000) instead of starting one."),
    ] = None,
    public_relay_url: Annotated[
        str | None,
        typer.Option(help="The relay's URL as GitHub and MLflow reach it (a tunnel, a load balancer)."),
    ] = None,
    backend_store_uri: Annotated[
        str | None,
        typer.Option(
            envvar="LLMRELEASE_BACKEND_STORE_URI",
            show_envvar=True,
            help="Store of the MLflow server started here, e.g. postgresql://user:pw@host:5432/mlflow "
            "(default: the project's SQLite store). Give a password through the variable, not the flag.",
        ),
    ] = None,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(
            help="Artifacts of the MLflow server started here, e.g. s3://bucket/mlflow (with the usual "
            "AWS variables, and MLFLOW_S3_ENDPOINT_URL for an S3-compatible store).",
        ),
    ] = None,
    prefect_file: Annotated[
        Path | None,
        typer.Option(
            help="Deployments to register. Default: PROJECT/prefect.yaml, else llmrelease's own.",
            exists=True,
            dir_okay=False,
            resolve_path=True,
        ),
    ] = None,
) -> None:
    """Run the local stack until Ctrl-C: Prefect server, MLflow server with the UI (the project's
    SQLite store), the deployments from prefect.yaml, a worker per pool (cpu, gpu) and the webhook
    relay; registers the MLflow alias webhook and prints every URL.

    The GitHub webhook secret is $LLMRELEASE_GITHUB_WEBHOOK_SECRET, else one generated into
    PROJECT/.llmrelease/serve/github-webhook-secret (paste it into the GitHub webhook form)."""
    from llmrelease.stack import Stack, StackConfig

    out = report_console()
    config = StackConfig(
        project=project,
        host=host,
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        relay_port=relay_port,
        prefect_api_url=prefect_api_url,
        mlflow_uri=mlflow_uri,
        public_relay_url=public_relay_url,
        prefect_file=prefect_file,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
    )
    stack = Stack(config, say=lambda line: out.print(f"[dim]{line}[/]"))
    stopping = False

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    import signal

    # Ctrl-C must stop the stack even when its parent started it with SIGINT ignored or blocked
    # (both are inherited across exec: a background job of a non-interactive shell, a test runner or
    # supervisor that had SIGINT masked while it spawned us); Python would then never see it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _term)
    code = 0
    try:
        with out.status("starting the llmrelease stack"):
            stack.start()
        from rich.table import Table

        table = Table(title="llmrelease stack: ready (Ctrl-C stops everything)", show_header=False)
        for name, url in stack.urls.items():
            table.add_row(name, url)
        secret_file = config.home / "github-webhook-secret"
        if secret_file.exists():
            table.add_row("GitHub secret", f"in {secret_file}")
        table.add_row("Logs", str(config.home / "logs"))
        out.print(table)
        out.print("llmrelease stack ready", highlight=False)
        stack.wait()
    except KeyboardInterrupt:
        stopping = True
    except LLMReleaseError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        code = exc.exit_code
    finally:
        # A second Ctrl-C (or the SIGTERM a supervisor sends after it) must not abort the clean-up
        # half way and leave servers running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with out.status("stopping"):
            stack.stop()
        out.print("stopped" if stopping or code == 0 else "stopped after an error")
    raise typer.Exit(code)


@app.command()
def relay(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: PortOpt = 8787,
) -> None:
    """Run the webhook relay alone: POST /hooks/github, POST /hooks/mlflow, GET /healthz.

    Reads PREFECT_API_URL (and PREFECT_API_KEY or PREFECT_API_AUTH_STRING),
    LLMRELEASE_GITHUB_WEBHOOK_SECRET, LLMRELEASE_MLFLOW_WEBHOOK_SECRET, LLMRELEASE_RELAY_MAX_BODY
    (bytes, default 5 MiB) and LLMRELEASE_RELAY_HOME (where delivery ids are kept). A hook whose
    secret is unset answers 503 to everything."""
    import uvicorn

    from llmrelease.tasks.triggers.relay.app import RelayConfig, create_app

    try:
        config = RelayConfig.from_env()
    except RuntimeError as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)


def main() -> None:
    """The console script. Command-line mistakes (an unknown option, a --project that does not exist)
    are input errors too: exit 2, and with --json one JSON object on stdout like every other error."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors, as typer vendors them
        exit_code = getattr(exc, "exit_code", 2)
        if "--json" in sys.argv[1:]:
            from llmrelease.errors import InputError, error_payload

            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            param = getattr(exc, "param", None)
            field = param.opts[0] if param is not None and getattr(param, "opts", None) else None
            payload = {**error_payload(InputError(message, field=field)), "exit_code": exit_code}
            print(json.dumps(payload, indent=2))
        if hasattr(exc, "show"):
            exc.show()
        else:
            err.print(f"error: {exc}")
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
