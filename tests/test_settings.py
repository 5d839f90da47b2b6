"""Settings specification: one object, read from RAGOPS_* variables, validated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.errors import SettingsError
from tasks.settings import DEFAULT_INCLUDE, Settings


def test_defaults_are_a_local_store_and_the_bundled_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = Settings()
    assert settings.lancedb_uri == ".ragops/lancedb" and settings.is_local_store
    assert settings.table == "chunks"
    assert settings.embedding_model == "" and settings.device == "auto"
    assert settings.dask_address == "" and settings.sync_deletes is True
    assert settings.include == DEFAULT_INCLUDE


def test_environment_variables_configure_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGOPS_LANCEDB_URI", "s3://bucket/ragops")
    monkeypatch.setenv("RAGOPS_STORAGE_OPTIONS", '{"region": "eu-west-1", "endpoint": "http://127.0.0.1:9000"}')
    monkeypatch.setenv("RAGOPS_TABLE", "docs_v2")
    monkeypatch.setenv("RAGOPS_EMBEDDING_MODEL", "/models/bge-small")
    monkeypatch.setenv("RAGOPS_DEVICE", "cuda")
    monkeypatch.setenv("RAGOPS_EMBED_BATCH_SIZE", "256")
    monkeypatch.setenv("RAGOPS_PARTITION_MB", "64")
    monkeypatch.setenv("RAGOPS_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    monkeypatch.setenv("RAGOPS_CHUNK_TOKENS", "128")
    monkeypatch.setenv("RAGOPS_CHUNK_OVERLAP", "16")
    monkeypatch.setenv("RAGOPS_INCLUDE", '["**/*.md"]')
    monkeypatch.setenv("RAGOPS_SYNC_DELETES", "false")
    settings = Settings()
    assert settings.lancedb_uri == "s3://bucket/ragops" and not settings.is_local_store
    assert settings.object_store_options() == {"region": "eu-west-1", "endpoint": "http://127.0.0.1:9000"}
    assert (settings.table, settings.embedding_model, settings.device) == ("docs_v2", "/models/bge-small", "cuda")
    assert (settings.embed_batch_size, settings.partition_mb) == (256, 64.0)
    assert settings.dask_address == "tcp://10.0.0.5:8786"
    assert (settings.chunk_tokens, settings.chunk_overlap) == (128, 16)
    assert settings.include == ["**/*.md"] and settings.sync_deletes is False


def test_a_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RAGOPS_TABLE=from_dotenv\n")
    assert Settings().table == "from_dotenv"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RAGOPS_DEVICE", "tpu", "invalid setting RAGOPS_DEVICE: Input should be 'auto', 'cpu' or 'cuda'"),
        ("RAGOPS_CHUNK_OVERLAP", "500", "chunk_overlap (500) must be smaller than chunk_tokens"),
        ("RAGOPS_EMBED_BATCH_SIZE", "0", "invalid setting RAGOPS_EMBED_BATCH_SIZE: Input should be greater than"),
    ],
)
def test_invalid_values_are_rejected_with_the_field_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(message)) as raised:
        Settings()
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # pydantic's echo of the input: gone


def test_local_cluster_size_follows_cores_or_gpus() -> None:
    assert Settings(dask_workers=3).local_workers(gpus=0) == 3
    assert Settings().local_workers(gpus=4) == 4
    assert Settings().local_workers(gpus=0) >= 1


def test_the_kubernetes_query_service_probes_health_and_runs_ragops_serve() -> None:
    import yaml

    from .conftest import REPO

    deployment, service = yaml.safe_load_all((REPO / "deployments/kubernetes/query-service.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["ragops", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert Settings(_env_file=None).serve_port == int(container["command"][-1])  # type: ignore[call-arg]
