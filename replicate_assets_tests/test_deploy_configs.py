"""The instance and workspace files the README shows parse and validate against Dagster's own schemas."""

import shutil
from pathlib import Path

import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name, launcher",
    [
        ("deploy/dagster.yaml", None),
        ("deploy/dagster.postgres.yaml", None),
        ("deploy/dagster.k8s.yaml", "K8sRunLauncher"),
        ("deploy/dagster.docker.yaml", "DockerRunLauncher"),
    ],
)
def test_instance_files_validate(name, launcher, tmp_path):
    shutil.copy(PROJECT / name, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"]["default_limit"] == 1  # the pool keeps Replicate's account limit
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 60
    assert config.get("run_launcher", {}).get("class") == launcher
    if "storage" in config:
        assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert "r8_" not in (PROJECT / name).read_text()  # no token in any file


@pytest.mark.parametrize("name", ["workspace.yaml", "deploy/workspace.grpc.yaml"])
def test_workspace_files_validate(name):
    path = PROJECT / name
    ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))


def test_helm_values_declare_replicas_and_the_secret():
    values = yaml.safe_load((PROJECT / "deploy/helm-values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["replicaCount"] > 1 and deployment["dagsterApiGrpcArgs"] == ["-m", "replicate_assets"]
    assert deployment["envSecrets"] == [{"name": "replicate-api-token"}]


def test_the_instance_the_demo_writes_is_the_one_the_readme_copies():
    assert (PROJECT / "deploy/dagster.yaml").read_text() == (PROJECT / "replicate_assets/instance.yaml").read_text()
