"""The Helm chart: lint, render with default / external-services / GPU values, validate the manifests
offline against Kubernetes schemas, and enforce the deployment policy on what was rendered."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, KUBE_VERSION, RELEASE, VALUES_FILES, Rendered, helm_template, render

WORKLOADS = ("Deployment", "StatefulSet", "Job")
SECRET_ENV = re.compile(
    r"(PASSWORD|SECRET(?!_NAME$)|TOKEN|ACCESS_KEY|ACCESS_KEY_ID)", re.I
)  # *_SECRET_NAME holds a name
URL_WITH_PASSWORD = re.compile(r"://[^/:@\s]+:([^@\s]+)@")


def pods(r: Rendered) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every workload."""
    return [(d, d["spec"]["template"]["spec"]) for d in r.docs if d["kind"] in WORKLOADS]


def containers(r: Rendered) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) of every container, init containers included."""
    return [(w, spec, c) for w, spec in pods(r) for c in spec.get("containers", []) + spec.get("initContainers", [])]


def label(w: dict[str, Any]) -> str:
    return f"{w['kind']}/{w['metadata']['name']}"


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_helm_lint_strict(helm: Path, values: str) -> None:
    proc = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), "-f", str(VALUES_FILES[values])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_manifests_validate_strict(
    rendered: dict[str, Rendered], kubernetes_validate: str, values: str, tmp_path: Path
) -> None:
    r = rendered[values]
    out = tmp_path / f"{values}.yaml"
    out.write_text(r.text)
    proc = subprocess.run(
        [kubernetes_validate, "--strict", "--kubernetes-version", KUBE_VERSION, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    problems = [line for line in proc.stdout.splitlines() if not line.startswith("INFO")]
    assert not problems, "\n".join(problems)  # WARN = a kind without a bundled schema: not validated
    assert proc.stdout.count(" passed for resource ") == len(r.docs)


def test_default_values_install_every_component(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    for kind, name in [
        ("StatefulSet", "-postgresql"),
        ("StatefulSet", "-minio"),
        ("Deployment", "-mlflow"),
        ("Deployment", "-search"),
        ("Deployment", "-dashboard"),
        ("NetworkPolicy", "-postgresql"),
        ("NetworkPolicy", "-minio"),
        ("Job", "-pipelines-r1"),
        ("Job", "-minio-bucket-r1"),
    ]:
        r.named(kind, name)
    pg = r.named("StatefulSet", "-postgresql")
    image = pg["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"docker\.io/pgvector/pgvector:\d+\.\d+\.\d+-pg\d+", image)
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    args = pg["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "postgres" and "shared_preload_libraries=pg_prewarm" in args and "shared_buffers=1GB" in args
    minio = r.named("StatefulSet", "-minio")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio)
    assert not r.of_kind("Ingress"), "the Ingress is optional and off by default"


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_every_container_non_root_with_resources(rendered: dict[str, Rendered], values: str) -> None:
    for w, spec, c in containers(rendered[values]):
        where = f"{values}: {label(w)} container {c['name']}"
        pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) > 0, f"{where}: runs as uid 0"
        assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert sc.get("privileged", False) is False, f"{where}: privileged"
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: drop ALL capabilities"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where}: read-only root filesystem"
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for key in ("cpu", "memory") if kind == "requests" else ("memory",):
                assert res.get(kind, {}).get(key), f"{where}: resources.{kind}.{key}"
        assert spec.get("automountServiceAccountToken") is False, f"{where}: no Kubernetes API token is needed"


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_every_server_container_has_probes(rendered: dict[str, Rendered], values: str) -> None:
    """Deployments and StatefulSets: liveness and readiness on every container. Job containers are batch
    work with no server to probe (bounded by activeDeadlineSeconds instead)."""
    servers = [(w, c) for w, _, c in containers(rendered[values]) if w["kind"] != "Job"]
    assert servers
    for w, c in servers:
        for probe in ("livenessProbe", "readinessProbe"):
            assert c.get(probe), f"{values}: {label(w)} container {c['name']} has no {probe}"
            assert {"httpGet", "tcpSocket", "exec", "grpc"} & set(c[probe])
    for w in rendered[values].of_kind("Job"):
        assert w["spec"]["activeDeadlineSeconds"] > 0 and w["spec"]["backoffLimit"] >= 0


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_images_are_pinned(rendered: dict[str, Rendered], values: str) -> None:
    for w, _, c in containers(rendered[values]):
        image = c["image"]
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.split("/")[-1]), f"{image}: no tag"
        tag = image.rsplit(":", 1)[-1]
        assert tag not in {"latest", "stable", "main", "master"}, f"{label(w)}: {image} floats"
        assert c.get("imagePullPolicy") in {"IfNotPresent", "Never"} or "@sha256:" in image


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_no_plaintext_password(rendered: dict[str, Rendered], values: str) -> None:
    r = rendered[values]
    for w, _, c in containers(r):
        for env in c.get("env", []):
            where = f"{values}: {label(w)} {c['name']} env {env['name']}"
            if SECRET_ENV.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), f"{where}: from a Secret only"
            for match in URL_WITH_PASSWORD.finditer(str(env.get("value", ""))):
                assert re.fullmatch(r"\$\([A-Z_]+\)", match.group(1)), f"{where}: a literal password in a URL"
        joined = " ".join(c.get("command", []) + c.get("args", []))
        assert not URL_WITH_PASSWORD.search(joined), f"{label(w)}: credentials on a command line"
    for secret in r.of_kind("Secret"):
        assert "stringData" not in secret, f"{secret['metadata']['name']}: stringData holds plaintext"
    values_text = (CHART / "values.yaml").read_text()
    assert not re.search(r"(?im)^\s*(password|rootPassword|secretKey|accessKey)\s*:\s*\S", values_text)


def test_generated_secrets_are_random_not_defaults(helm: Path) -> None:
    def passwords() -> list[str]:
        r = render(helm, "default", "-f", str(VALUES_FILES["default"]))
        return [
            base64.b64decode(v).decode() for s in r.of_kind("Secret") for k, v in s["data"].items() if "password" in k
        ]

    first, second = passwords(), passwords()
    assert len(first) == 5, "PostgreSQL: writer, reader, MLflow and superuser; MinIO: root"
    assert all(len(p) >= 24 and p.isalnum() for p in first), "generated passwords: long and URL-safe"
    assert not set(first) & set(second), "a generated password must be random, never a fixed default"


GENERATED_ALWAYS = ("-oauth2-proxy",)  # the login cookies' signing key: nothing to bring


def test_existing_secrets_render_no_secret(rendered: dict[str, Rendered], helm: Path) -> None:
    external = {
        s["metadata"]["name"].removeprefix(f"{RELEASE}-microsnoop") for s in rendered["external"].of_kind("Secret")
    }
    assert external == {"-oauth2-proxy", "-search-keys", "-search-client"}, "external services: no database/S3 secret"
    r = render(
        helm,
        "existing",
        "-f",
        str(VALUES_FILES["default"]),
        "--set",
        "postgresql.auth.existingSecret=pg-creds",
        "--set",
        "minio.auth.existingSecret=minio-creds",
        "--set",
        "minio.auth.serviceUsersSecret=minio-users",
        "--set",
        "search.auth.existingSecret=search-keys",
    )
    assert [s["metadata"]["name"] for s in r.of_kind("Secret")] == [f"{RELEASE}-microsnoop-oauth2-proxy"]
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for _, _, c in containers(r)
        for env in c.get("env", [])
        if "valueFrom" in env
    }
    assert refs == {"pg-creds", "minio-creds", "minio-users", "microsnoop-oidc", f"{RELEASE}-microsnoop-oauth2-proxy"}
    volumes = [v["secret"]["secretName"] for _, spec in pods(r) for v in spec.get("volumes", []) if "secret" in v]
    assert volumes == ["search-keys"]


def test_network_policies_admit_only_platform_pods(rendered: dict[str, Rendered]) -> None:
    r = rendered["default"]
    for component, port, client in [("postgresql", 5432, "postgresql-client"), ("minio", 9000, "s3-client")]:
        policy = r.named("NetworkPolicy", f"-{component}")["spec"]
        target = r.named("StatefulSet", f"-{component}")["spec"]["template"]["metadata"]["labels"]
        assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == [], f"{component}: calls nobody"
        assert policy["podSelector"]["matchLabels"].items() <= target.items(), f"{component}: policy selects its pods"
        (rule,) = policy["ingress"]
        assert [p["port"] for p in rule["ports"]] == [port]
        peers = rule["from"]
        assert all("ipBlock" not in p for p in peers)
        local = [p for p in peers if "namespaceSelector" not in p]
        assert local == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE, f"microsnoop.io/{client}": "true"}}}
        ]
        pipeline = [p for p in peers if "namespaceSelector" in p]
        assert len(pipeline) == 1 and pipeline[0]["podSelector"]["matchLabels"], "pipeline pods: namespace AND labels"
    # every pod that holds database or S3 credentials is labelled as a client, and only those are
    for w, spec in pods(r):
        names = {e["name"] for c in spec["containers"] + spec.get("initContainers", []) for e in c.get("env", [])}
        labels = w["spec"]["template"]["metadata"]["labels"]
        if w["metadata"]["name"].endswith(("-postgresql", "-minio")):
            continue
        uses_db = bool(names & {"MICROSNOOP_PG_DSN", "MLFLOW_BACKEND_STORE_URI"})
        uses_s3 = bool(names & {"MICROSNOOP_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"})
        assert (labels.get("microsnoop.io/postgresql-client") == "true") == uses_db, label(w)
        assert (labels.get("microsnoop.io/s3-client") == "true") == uses_s3, label(w)


def test_external_services(rendered: dict[str, Rendered]) -> None:
    r = rendered["external"]
    assert not r.of_kind("StatefulSet"), "external PostgreSQL and S3: nothing stateful in the release"
    assert not r.of_kind("NetworkPolicy") or all(
        "postgresql" not in n["metadata"]["name"] for n in r.of_kind("NetworkPolicy")
    )
    search = r.named("Deployment", "-search")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in search["env"]}
    assert env["MICROSNOOP_PG_DSN"]["value"] == (
        "postgresql://microsnoop:$(MICROSNOOP_PG_PASSWORD)@microsnoop.abcdefgh.eu-west-1.rds.amazonaws.com:5432/"
        "microsnoop?sslmode=require"
    )
    assert env["MICROSNOOP_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "microsnoop-db", "key": "password"}
    names = [e["name"] for e in search["env"]]
    assert names.index("MICROSNOOP_PG_PASSWORD") < names.index("MICROSNOOP_PG_DSN"), "$(VAR) expands only earlier vars"
    assert "MICROSNOOP_S3_ACCESS_KEY" not in env, "the search API gets no S3 keys"
    dashboard = r.named("Deployment", "-dashboard")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in dashboard["env"]}
    assert env["MICROSNOOP_S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com:443"
    assert env["MICROSNOOP_S3_SECURE"]["value"] == "true"
    assert env["MICROSNOOP_STORAGE_URI"]["value"].startswith("s3://microsnoop-prod/")
    assert env["MICROSNOOP_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "microsnoop-s3"
    mlflow = r.named("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0]
    menv = {e["name"]: e for e in mlflow["env"]}
    assert menv["MLFLOW_BACKEND_STORE_URI"]["value"].endswith("/mlflow?sslmode=require")
    assert menv["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://s3.eu-west-1.amazonaws.com:443"
    assert "s3://microsnoop-prod/mlflow" in mlflow["args"]
    assert "mlflow.microsnoop.example.com" in menv["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    ingress = r.named("Ingress", "microsnoop")
    hosts = {rule["host"]: rule["http"]["paths"][0]["backend"]["service"]["name"] for rule in ingress["spec"]["rules"]}
    assert hosts == {
        "microsnoop.example.com": f"{RELEASE}-microsnoop-dashboard",
        "mlflow.microsnoop.example.com": f"{RELEASE}-microsnoop-mlflow",
        "search.microsnoop.example.com": f"{RELEASE}-microsnoop-search",
    }


def test_gpu_values_reach_the_pipeline_job(rendered: dict[str, Rendered]) -> None:
    job = rendered["gpu"].named("Job", "-pipelines-r1")
    spec = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["MICROSNOOP_GPU_LIMIT"] == "1"
    assert env["MICROSNOOP_GPU_NODE_SELECTOR"] == "nvidia.com/gpu.present=true"
    assert env["MICROSNOOP_GPU_TOLERATION"] == "nvidia.com/gpu=present:NoSchedule"
    assert env["MICROSNOOP_IMAGE"] == "registry.example.com/microsnoop/microsnoop:0.1.0-cuda12.8"
    token = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    assert token and token[0]["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    default_env = {
        e["name"]: e.get("value")
        for e in rendered["default"].named("Job", "-pipelines-r1")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert default_env["MICROSNOOP_GPU_LIMIT"] == "0", "CPU steps unless the values ask for GPUs"
    assert default_env["MICROSNOOP_GPU_NODE_SELECTOR"] == "" and default_env["MICROSNOOP_GPU_TOLERATION"] == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "image.tag=latest"], "/image/tag"),
        (["--set", "postgresql.image.tag=latest"], "/postgresql/image/tag"),
        (
            [
                "--set-json",
                'pipelines.gpu.tolerations=[{"key":"a","effect":"NoSchedule"},{"key":"b","effect":"NoSchedule"}]',
            ],
            "maxItems",
        ),
        (["--set-json", 'pipelines.gpu.nodeSelector={"a":"1","b":"2"}'], "maxProperties"),
        (["--set-json", 'pipelines.recurringRuns=[{"pipeline":"profiling"}]'], "cron"),
        (["--set", "pipelines.upload[0]=nightly"], "/pipelines/upload/0"),
        (["--set", "postgresql.enabled=false"], "externalDatabase.host"),
        (["--set", "minio.enabled=false"], "externalS3.endpoint"),
        (["--set", "postgresql.auth.password=hunter2"], "additional properties"),
    ],
)
def test_bad_values_are_rejected_with_the_fix(helm: Path, args: list[str], message: str) -> None:
    proc = helm_template(helm, *args)
    assert proc.returncode != 0, f"{args} rendered"
    assert message in proc.stderr, proc.stderr


def _documented(values_text: str) -> set[str]:
    return set(re.findall(r"^\s*## @param ([\w.\-]+)", values_text, re.M))


def _leaves(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict) and tree:
        return [leaf for k, v in tree.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = _documented(text)
    values = yaml.safe_load(text)
    missing = [leaf for leaf in _leaves(values) if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not missing, f"values without a ## @param line: {missing}"
    leaves = _leaves(values)
    stale = [d for d in documented if not any(leaf == d or leaf.startswith(d + ".") for leaf in leaves)]
    assert not stale, f"## @param lines naming no value: {stale}"
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]) == set(values), "values.schema.json and values.yaml list different top-level keys"
