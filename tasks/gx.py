"""great-expectations, set up once for every gate: the benchmark files (tasks) and the
results table (metrics)."""

from __future__ import annotations

from typing import Any


def gx_context() -> Any:
    """A new ephemeral great-expectations context, without progress bars or INFO chatter."""
    import logging
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets this logger to INFO at import and announces every context's temp dir with it.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx
