"""An app's router: ``registry/<app>/router.yaml`` and the route specs it names, loaded and cross-checked.

Each route is the app with another prompt and/or model spec: exactly what ``release --prompt
--model`` evaluates, so a route's release plan is built by the same function (its evalsets scanned,
its prompts counted against the context) and nothing about a route is checked twice or differently.
Every problem names router.yaml's line and field before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmrelease.errors import SpecError
from llmrelease.inputfiles import check_file, check_inside
from llmrelease.project import AppSpec, _line, _metric_hint, load_app
from llmrelease.specfile import load_spec
from llmrelease.specs import ROUTER_METRICS, GateStatistics, RouterSpec

__all__ = ["ROUTER_FILE", "Route", "RouterApp", "load_router", "has_router"]

ROUTER_FILE = "router.yaml"
"""Optional: a cascade between two routes, released and gated like a candidate (see RouterSpec)."""


@dataclass(frozen=True)
class Route:
    name: str
    app: AppSpec
    """The app as this route answers it: its prompt and model spec in place of the app's own."""


@dataclass(frozen=True)
class RouterApp:
    spec: RouterSpec
    path: Path
    app: AppSpec
    routes: list[Route]

    @property
    def cheap(self) -> Route:
        return self.routes[0]

    @property
    def strong(self) -> Route:
        return self.routes[-1]

    @property
    def statistics(self) -> GateStatistics:
        return self.spec.statistics or self.app.gates.stats

    @property
    def quality_evalset(self) -> str:
        return self.spec.quality.split(".", 1)[0]


def router_path(root: Path, app: str) -> Path:
    return root.resolve() / "registry" / app / ROUTER_FILE


def has_router(root: Path, app: str) -> bool:
    path = router_path(root, app)
    return path.exists() or path.is_symlink()


def load_router(root: Path, app: str) -> RouterApp:
    """Load the app, its router.yaml and every route's specs; raises SpecError naming router.yaml's
    line and field (a route file that is missing, a route model without token prices, a quality
    metric that is not a quality evalset's scorer, a gate on an unknown router metric)."""
    spec = load_app(root, app)
    path = router_path(root, app)
    if not has_router(root, app):
        raise SpecError(
            "this app has no router",
            file=path,
            fix=f"add registry/{app}/{ROUTER_FILE} with two routes and a policy (see README: 'Routing')",
        )
    check_inside(path, spec.root)
    check_file(path)
    router = load_spec(path, RouterSpec)
    routes: list[Route] = []
    for i, route in enumerate(router.routes):
        files = {}
        for key in ("prompt", "model"):
            target = (path.parent / getattr(route, key)).resolve()
            where = {"file": path, "line": _line(path, ("routes", i, key)), "field": f"routes[{i}].{key}"}
            check_inside(path.parent / getattr(route, key), spec.root, **where)
            if not target.is_relative_to(spec.root):
                raise SpecError(
                    f"route '{route.name}': {target} is outside the project",
                    fix="keep route specs in the project (they are released from its Git history)",
                    **where,
                )
            if not target.is_file():
                raise SpecError(f"route '{route.name}': {key} spec {target} not found", **where)
            files[key] = target
        route_app = load_app(root, app, prompt_file=files["prompt"], model_file=files["model"])
        pricing = route_app.model.pricing
        if pricing is None or not pricing.token_priced:
            raise SpecError(
                f"route '{route.name}': its model spec {files['model'].name} has no token prices; a router "
                "is judged on cost",
                file=path,
                line=_line(path, ("routes", i, "model")),
                field=f"routes[{i}].model",
                fix=f"add pricing.input_per_mtok and pricing.output_per_mtok to {files['model']}",
            )
        routes.append(Route(route.name, route_app))
    _check_quality(router, path, spec)
    for i, gate in enumerate(router.gates):
        if gate.metric not in ROUTER_METRICS:
            raise SpecError(
                f"unknown router metric '{gate.metric}'; {_metric_hint(gate.metric, list(ROUTER_METRICS))}",
                file=path,
                line=_line(path, ("gates", i, "metric")),
                field=f"gates[{i}].metric",
            )
        if gate.max_regression is not None and gate.metric != "router.quality":
            raise SpecError(
                f"max_regression compares with the strong route and applies to router.quality only; "
                f"for '{gate.metric}' use min or max",
                file=path,
                line=_line(path, ("gates", i, "max_regression")),
                field=f"gates[{i}].max_regression",
            )
        if gate.interval != "auto":
            raise SpecError(
                "router bounds are bootstrap bounds; leave 'interval' out",
                file=path,
                line=_line(path, ("gates", i, "interval")),
                field=f"gates[{i}].interval",
            )
    return RouterApp(router, path, spec, routes)


def _check_quality(router: RouterSpec, path: Path, spec: AppSpec) -> None:
    where = {"file": path, "line": _line(path, ("quality",)), "field": "quality"}
    scorers = [
        f"{ev.name}.{s.name}" for ev in spec.evalsets if ev.card.kind == "quality" for s in ev.card.scorers
    ]
    if router.quality not in scorers:
        hint = _metric_hint(router.quality, scorers) if scorers else "no quality evalset has a scorer"
        raise SpecError(
            f"quality must be a quality evalset's scorer; '{router.quality}' is not: {hint}", **where
        )
    if spec.catalogue[router.quality].direction != "higher":
        raise SpecError(
            f"'{router.quality}' is lower-is-better; a router's quality must be higher-is-better", **where
        )
