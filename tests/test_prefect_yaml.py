"""prefect.yaml: valid, and every deployment's entrypoint resolves to a real flow."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_every_deployment_entrypoint_is_a_flow(monkeypatch) -> None:
    from prefect.flows import Flow, load_flow_from_entrypoint

    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = []
    for dep in config["deployments"]:
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        assert isinstance(flow, Flow)
        params = set(flow.parameters.properties)
        assert set(dep.get("parameters", {})) <= params, dep["name"]
        for trigger in dep.get("triggers", []):
            assert set(trigger["parameters"]) <= params, dep["name"]
            required = set(flow.parameters.required or [])
            assert required <= set(trigger["parameters"]) | set(dep.get("parameters", {})), dep["name"]
        names.append(dep["name"])
    assert {"release", "nightly", "harvest", "on-push", "on-alias"} <= set(names)


def test_triggers_match_the_events_the_relay_posts() -> None:
    """The trigger's resource labels and event names are the ones the relay builds (one source
    of truth would be nicer; this test keeps the two in step)."""
    from fnmatch import fnmatch

    from llmrelease.tasks.triggers.relay.events import github_push_event, mlflow_event
    from tests.github_payloads import push_payload

    config = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    push = github_push_event(push_payload(before="a" * 40, after="b" * 40, modified=["x"]), "d")
    alias = mlflow_event(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": "a", "alias": "champion", "version": "1"},
        },
        "d",
    )
    for name, event in (("on-push", push), ("on-alias", alias)):
        [trigger] = config[name]["triggers"]
        assert event["event"] in trigger["expect"]
        for label, pattern in trigger["match"].items():
            assert fnmatch(event["resource"][label], pattern), (name, label)
        for template in trigger["parameters"].values():
            key = template.strip("{} ").removeprefix("event.payload.")
            assert key in event["payload"], (name, key)
