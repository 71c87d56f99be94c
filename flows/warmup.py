"""Import the heavy libraries in a background thread while Prefect starts its API server.

A command without ``PREFECT_API_URL`` spends several seconds waiting for a temporary
Prefect server (a subprocess on the other core) before the flow runs. The main thread
only polls during that wait, so importing torch, transformers, lm-eval, MLflow and
great-expectations meanwhile takes their ~9 s of import time off the critical path.
Nothing is computed here: a module that fails to import is simply imported (and fails
with its real error) where it is used.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

HEAVY_MODULES = (
    "torch",
    "transformers",
    "lm_eval",
    "lm_eval.models.huggingface",
    "mlflow",
    "codecarbon",
    "great_expectations",
    "plotly.graph_objects",
    "pymoo.indicators.hv",
)


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the real import, where the module is used, reports it
            log.debug("preload of %s failed: %s", name, exc)


def preload(names: tuple[str, ...] = HEAVY_MODULES) -> threading.Thread:
    """Start importing ``names`` in a daemon thread and return the thread."""
    t = threading.Thread(target=_import_all, args=(names,), name="ecocompress-preload", daemon=True)
    t.start()
    return t
