"""Shared fixtures: offline environment, an isolated ECOCOMPRESS_HOME, the tiny local model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecocompress.flows.environment import HUB_OFFLINE, TELEMETRY_OFF
from tests.tiny_model import build_tiny_model, data_dir

OFFLINE_ENV = {**HUB_OFFLINE, **TELEMETRY_OFF}
for _k, _v in OFFLINE_ENV.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory):
    """ECOCOMPRESS_HOME for the session (caches, MLflow store): a temp dir, or
    ECOCOMPRESS_TEST_HOME to keep the converted GGUF and caches between sessions."""
    home = os.environ.get("ECOCOMPRESS_TEST_HOME") or str(tmp_path_factory.mktemp("eco-home"))
    old = os.environ.get("ECOCOMPRESS_HOME")
    os.environ["ECOCOMPRESS_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield Path(home)
    if old is None:
        os.environ.pop("ECOCOMPRESS_HOME", None)
    else:
        os.environ["ECOCOMPRESS_HOME"] = old


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = data_dir()
    if not (d / "gsm8k").is_dir():
        pytest.fail(f"shared benchmark data not found at {d}; set ECOCOMPRESS_DATA_DIR")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny Gemma-3 causal LM with a trained BPE tokenizer (built once)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-lm"))
