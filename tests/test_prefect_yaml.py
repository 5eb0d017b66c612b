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
        names.append(dep["name"])
    assert "release" in names
