"""The Kubernetes GPU job template: valid, requests a GPU, and every placeholder has a variable
(a placeholder without one renders as nothing and the job is created without, e.g., its GPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_job_template_requests_gpus_and_defines_every_placeholder() -> None:
    template = json.loads((REPO / "deploy" / "k8s-gpu-job-template.json").read_text())
    text = json.dumps(template["job_configuration"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
    assert used <= set(template["variables"]["properties"])
    [container] = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] >= 1


def test_gpu_job_template_mounts_a_shared_checkpoints_volume() -> None:
    """A lost pod's finished chunks must outlive it: the checkpoints live on a claim, not the pod."""
    template = json.loads((REPO / "deploy" / "k8s-gpu-job-template.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["checkpoints"] == "/var/lib/llmrelease/checkpoints"
    [claim] = [v for v in pod["volumes"] if v["name"] == "checkpoints"]
    assert claim["persistentVolumeClaim"]["claimName"] == "{{ checkpoints_claim }}"
    assert template["variables"]["properties"]["checkpoints_claim"]["default"]
