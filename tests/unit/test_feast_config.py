"""The generated Feast repo config holds no database password; Feast still connects with the right one."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.featurestore.feast_repo import PASSWORD_PLACEHOLDER, PASSWORD_VARIABLE, feature_store_yaml, repo_config

DSN = "host=/tmp/pgsock port=5433 dbname=microsnoop user=postgres password=s3cr3t-Pa55"


def test_feature_store_yaml_has_a_placeholder_not_the_password(tmp_path: Path) -> None:
    text = feature_store_yaml(DSN, tmp_path)
    assert "s3cr3t-Pa55" not in text
    assert text.count(f"password: {PASSWORD_PLACEHOLDER}") == 2  # offline and online store
    assert PASSWORD_VARIABLE in text.splitlines()[0]  # the header says what to export for the feast CLI


@pytest.mark.slow  # imports feast (~8 s of CPU)
def test_our_config_and_the_feast_cli_both_get_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feast.repo_config import load_repo_config

    (tmp_path / "feature_store.yaml").write_text(feature_store_yaml(DSN, tmp_path))
    ours = repo_config(tmp_path, DSN)  # in memory, from the DSN: no environment needed
    assert ours.online_store.password == ours.offline_store.password == "s3cr3t-Pa55"
    assert ours.online_store.host == "/tmp/pgsock" and ours.online_store.port == 5433
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cr3t-Pa55")  # what a feast CLI user exports
    cli = load_repo_config(tmp_path, tmp_path / "feature_store.yaml")
    assert cli.online_store.password == cli.offline_store.password == "s3cr3t-Pa55"


def test_a_dsn_without_password_writes_an_empty_one(tmp_path: Path) -> None:
    text = feature_store_yaml("host=/tmp/pgsock dbname=microsnoop user=postgres", tmp_path)
    assert PASSWORD_PLACEHOLDER not in text.split("\n", 2)[2] and "password: ''" in text
