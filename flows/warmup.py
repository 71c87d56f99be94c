"""Import the heavy libraries in a background thread while Prefect starts its API server.

A command without ``PREFECT_API_URL`` spends several seconds waiting for a temporary
Prefect server (a subprocess on the other core) before the flow runs. The main thread
only polls during that wait, so importing MLflow, torch, transformers and lm-eval
meanwhile takes their import time off the critical path.
Nothing is computed here: a module that fails to import is simply imported (and fails
with its real error) where it is used.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

# Only what the first steps need: a module still importing while lm-eval runs would
# compete with it for the GIL (measured: preloading great-expectations and plotly too
# made the evaluation step slower).
HEAVY_MODULES = (
    "mlflow",
    "torch",
    "transformers",
    "lm_eval",
    "lm_eval.models.huggingface",
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
