"""A fresh ECOCOMPRESS_HOME (MLflow store and caches) for one test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def fresh_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """Point ECOCOMPRESS_HOME at a new folder (MLflow follows it) and restore both after."""
    home = tmp_path_factory.mktemp(name)
    old = {k: os.environ.get(k) for k in ("ECOCOMPRESS_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["ECOCOMPRESS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield home
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
