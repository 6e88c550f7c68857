"""The chart's security (issue 14): who may call what, least privilege, and the database roles for real.

Rendering needs helm (fetched by ``make test``; skipped with the reason otherwise). No Kubernetes API
server can run here, so policies are checked as rendered; the PostgreSQL init script that creates the
roles runs for real against the embedded PostgreSQL 18 server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from dashboard.common import open_store
from services.browse.overview import summarize_store
from services.featurestore import FeatureStore
from services.featurestore.server import _bin_dir, ensure_postgres, stop_postgres
from services.search_api import ReadOnlyStore
from services.settings import PlatformSettings
from tests.deploy.conftest import CHART, RELEASE, VALUES_FILES, Rendered, helm, helm_template, render  # noqa: F401

WORKLOADS = ("Deployment", "StatefulSet", "Job")


@pytest.fixture(scope="module")
def charts(helm: Path) -> dict[str, Rendered]:  # noqa: F811
    return {name: render(helm, name, "-f", str(path)) for name, path in VALUES_FILES.items()}


def _selected(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_every_workload_has_its_own_ingress_and_egress_policy_and_a_default_deny(
    charts: dict[str, Rendered], values: str
) -> None:
    r = charts[values]
    policies = r.of_kind("NetworkPolicy")
    deny = [p for p in policies if p["metadata"]["name"].endswith("-default-deny")]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    for w in (d for d in r.docs if d["kind"] in WORKLOADS):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert _selected(deny[0], labels), f"{w['metadata']['name']}: outside the default deny"
        own = [p for p in policies if p is not deny[0] and _selected(p, labels)]
        assert len(own) == 1, f"{values}: {w['kind']}/{w['metadata']['name']} has {len(own)} policies of its own"
        assert own[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
        for rule in own[0]["spec"].get("egress", []):
            assert rule.get("ports"), f"{own[0]['metadata']['name']}: an egress rule open on every port"


@pytest.mark.parametrize("values", ["default", "gpu"])
def test_no_service_uses_the_superuser_or_root_keys(charts: dict[str, Rendered], values: str) -> None:
    r = charts[values]
    pg_secret, minio_secret = f"{RELEASE}-microsnoop-postgresql", f"{RELEASE}-microsnoop-minio"
    for w in (d for d in r.docs if d["kind"] in WORKLOADS):
        name = w["metadata"]["name"]
        for c in w["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})]
            for ref in refs:
                if ref["name"] == pg_secret and ref["key"] == "postgres-password":
                    assert name.endswith("-postgresql"), f"{name}: holds the PostgreSQL superuser password"
                if ref["name"] == minio_secret:
                    assert name.endswith(("-minio", "-minio-bucket-r1")), f"{name}: holds the MinIO root keys"
            for key in ("MICROSNOOP_PG_DSN", "MLFLOW_BACKEND_STORE_URI"):
                if key in env:
                    user = re.match(r"postgresql://([^:]+):", env[key]["value"]).group(1)  # type: ignore[union-attr]
                    assert user != "postgres", f"{name}: {key} logs in as the superuser"
    search = r.named("Deployment", "-search")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in search["env"]}
    assert not [n for n in env if "S3_ACCESS" in n or n.startswith("AWS_")], "the search API gets no S3 keys"
    assert env["MICROSNOOP_PG_DSN"]["value"].startswith("postgresql://microsnoop_reader:")
    assert env["MICROSNOOP_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "reader-password"
    mlflow = r.named("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0]
    menv = {e["name"]: e for e in mlflow["env"]}
    assert menv["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://mlflow:")
    assert menv["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-microsnoop-minio-users",
        "key": "mlflow-access-key",
    }


def test_search_api_keys_are_hashed_and_mounted(charts: dict[str, Rendered]) -> None:
    r = charts["default"]
    keys = r.named("Secret", "-search-keys")["data"]["api-keys"]
    token = base64.b64decode(r.named("Secret", "-search-client")["data"]["api-key"]).decode()
    line = base64.b64decode(keys).decode().strip()
    assert line == f"default search:read sha256:{hashlib.sha256(token.encode()).hexdigest()}"
    assert token not in base64.b64decode(keys).decode()
    pod = r.named("Deployment", "-search")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "search-keys"][0]
    assert env["MICROSNOOP_SEARCH_API_KEYS"] == f"{mount['mountPath']}/api-keys" and mount["readOnly"]
    volume = [v for v in pod["volumes"] if v["name"] == "search-keys"][0]
    assert "subPath" not in mount, "a subPath mount would never see a rotated Secret"
    assert volume["secret"]["secretName"].endswith("-search-keys")


def test_dashboard_and_mlflow_sit_behind_a_login_by_default(charts: dict[str, Rendered], helm: Path) -> None:  # noqa: F811
    r = charts["default"]
    for component in ("dashboard", "mlflow"):
        pod = r.named("Deployment", f"-{component}")["spec"]["template"]["spec"]
        proxy = [c for c in pod["containers"] if c["name"] == "oauth2-proxy"]
        assert proxy, f"{component}: no oauth2-proxy sidecar"
        args = " ".join(proxy[0]["args"])
        assert "--provider=oidc" in args and "--oidc-issuer-url=https://idp.example.com" in args
        assert "quay.io/oauth2-proxy/oauth2-proxy:v" in proxy[0]["image"]
    dashboard_svc = r.named("Service", "-dashboard")["spec"]["ports"]
    assert [p["targetPort"] for p in dashboard_svc] == ["login"]
    external = charts["external"].named("Ingress", "microsnoop")
    backends = {rule["host"]: rule["http"]["paths"][0]["backend"]["service"]["port"]["name"] for rule in
                external["spec"]["rules"]}  # fmt: skip
    assert backends["mlflow.microsnoop.example.com"] == "login"
    proc = helm_template(helm)  # no identity provider named: refused with the fix
    assert proc.returncode != 0 and "auth.oidc.issuerUrl" in proc.stderr


def test_generated_secrets_are_kept_across_upgrades() -> None:
    """Static (no API server here): every random value comes through a lookup of the existing Secret."""
    for path in CHART.joinpath("templates").rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        if "randAlphaNum" in text:
            assert "lookup" in text, f"{path.name}: a random value not looked up first (rotates on every upgrade)"
        if "kind: Secret" in text:
            assert "helm.sh/resource-policy: keep" in text, f"{path.name}: a generated Secret deleted on uninstall"


@pytest.mark.integration
def test_the_database_roles_created_by_the_chart_work_as_intended(charts: dict[str, Rendered]) -> None:
    """The rendered init script, run by psql against a real PostgreSQL: each role can do its job and no more."""
    import yaml

    config = charts["default"].named("ConfigMap", "-postgresql-initdb")
    script = config["data"]["01-microsnoop.sh"]
    assert yaml.safe_dump(config)  # rendered, parsed
    root = Path(tempfile.mkdtemp(prefix="microsnoop-roles-"))
    settings = PlatformSettings().with_data_dir(root)
    try:
        su = parse_dsn(ensure_postgres(settings))
        conn = psycopg2.connect(make_dsn(**{**su, "dbname": "postgres"}))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE microsnoop")  # the image starts with none: the script creates it
        conn.close()
        env = {**os.environ, "PATH": f"{_bin_dir()}:{os.environ['PATH']}", "PGHOST": su["host"], "PGPORT": su["port"],
               "PGPASSWORD": su["password"], "MICROSNOOP_WRITER_PASSWORD": "w-pw", "MICROSNOOP_READER_PASSWORD": "r-pw",
               "MICROSNOOP_MLFLOW_PASSWORD": "m-pw"}  # fmt: skip
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

        def dsn(user: str, password: str, db: str = "microsnoop") -> str:
            return make_dsn(**{**su, "user": user, "password": password, "dbname": db})

        rng = np.random.default_rng(0)
        table = pd.DataFrame(rng.normal(size=(20, 4)).astype(np.float32), columns=[f"ch0_{i:03d}" for i in range(4)])
        table.insert(0, "Metadata_ImageID", [f"i{i}" for i in range(20)])
        with FeatureStore(dsn("microsnoop", "w-pw")) as writer:  # the writer creates the tables and publishes
            assert writer.publish("image", table, model_version="roles-v1").total == 20
        with ReadOnlyStore(dsn("microsnoop_reader", "r-pw")) as reader:  # the reader searches
            assert len(reader.search("image", model_version="roles-v1", entity_id="i3", k=5)) == 5
        # The dashboard, given the reader's DSN, opens without DDL and browses what the writer published.
        with open_store(PlatformSettings(pg_dsn=dsn("microsnoop_reader", "r-pw"))) as browsing:
            assert isinstance(browsing, ReadOnlyStore)
            assert summarize_store(browsing).counts["image"] == 20
            assert len(browsing.page("image", model_version="roles-v1", limit=7)) == 7
        conn = psycopg2.connect(dsn("microsnoop_reader", "r-pw"))
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction), conn.cursor() as cur:
            cur.execute("DELETE FROM image_embeddings")
        conn.close()
        with pytest.raises(psycopg2.OperationalError, match="permission denied"):
            psycopg2.connect(dsn("mlflow", "m-pw"))  # MLflow: its own database only
        psycopg2.connect(dsn("mlflow", "m-pw", "mlflow")).close()
        conn = psycopg2.connect(dsn("microsnoop", "w-pw"))
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolsuper")
            assert [row[0] for row in cur.fetchall()] == ["postgres"]
        conn.close()
    finally:
        stop_postgres(settings)
        shutil.rmtree(root, ignore_errors=True)
