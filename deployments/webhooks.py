"""Webhook receivers over HTTP: an MLflow registry ``model_version.created`` delivery or a
Hugging Face Hub ``repo.content`` update of a model repo becomes the one re-run event,
``ecocompress.flows.events.emit_model_updated(ModelUpdate(...))`` (checks: webhook_receiver.py).

Run it (the stack's ``server start`` does, with the secrets in the environment)::

    ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET=... ECOCOMPRESS_HF_WEBHOOK_SECRET=... \\
    PREFECT_API_URL=http://127.0.0.1:4200/api \\
    python -m ecocompress.deployments.webhooks --host 127.0.0.1 --port 8790

``POST /mlflow`` and ``POST /hub`` take deliveries; ``GET /health`` and ``GET /stats`` (counts
by outcome, kept with the replay store) answer operators. Every delivery ends in one
``Outcome``, counted; a refusal's answer and log line name the outcome, never a secret.
``ECOCOMPRESS_WEBHOOK_SINK=<file.jsonl>`` is a test/dry-run sink: updates are appended there as
JSON lines instead of being emitted to Prefect.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecocompress.deployments.webhook_receiver import (
    MLFLOW_EVENT,
    Emitter,
    Outcome,
    Receiver,
    Verdict,
    WebhookSettings,
    log,
)
from ecocompress.deployments.webhook_store import DeliveryStore
from ecocompress.flows.events import ModelUpdate
from ecocompress.flows.stack import StackSettings, http_ok, redact
from ecocompress.tasks.errors import UserError

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["WebhookSettings", "Outcome", "create_app", "register_mlflow_webhook", "main"]

MLFLOW_WEBHOOK_NAME = "ecocompress-model-updated"
PATHS = {"mlflow": "/mlflow", "hub": "/hub"}
SECRET_FIELDS = {"mlflow": "mlflow_secret", "hub": "hf_secret"}  # source -> WebhookSettings field
PREFECT_HEALTH_TIMEOUT_S = 10.0  # within MLflow's 30 s delivery timeout


def jsonl_sink(path: Path) -> Emitter:
    """The test/dry-run emitter: each update as one JSON line in ``path``, nothing to Prefect."""
    lock = threading.Lock()

    def emit(update: ModelUpdate) -> str:
        with lock, Path(path).open("a") as f:
            f.write(update.model_dump_json() + "\n")
        return f"sink:{update.key}"

    return emit


def prefect_emitter(api_url: str) -> Emitter:
    """``emit_model_updated``, after asking the Prefect API for its health. Prefect's events
    worker sends in the background and drops an event it cannot deliver (it logs, nothing
    raises), so a server that is down is found here and answered 503: the sender retries."""
    from ecocompress.flows.events import emit_model_updated

    health = api_url.rstrip("/") + "/health"

    def emit(update: ModelUpdate) -> str | None:
        if not http_ok(health, timeout=PREFECT_HEALTH_TIMEOUT_S):
            raise ConnectionError(f"no Prefect API answers at {redact(api_url)}")
        return emit_model_updated(update)

    return emit


def default_emitter(settings: WebhookSettings) -> Emitter:
    """The sink when one is set, else Prefect at ``PREFECT_API_URL`` (required: without it an
    event would go to a temporary server that nothing watches)."""
    if settings.sink is not None:
        return jsonl_sink(settings.sink)
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        var = WebhookSettings.env_var("sink")
        raise UserError(f"set PREFECT_API_URL (the stack's Prefect API) or {var} (a dry-run file)")
    return prefect_emitter(api_url)


async def _read_body(request: Any, limit: int) -> bytes | None:
    """The body, or None past ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: WebhookSettings | None = None, emit: Emitter | None = None) -> Starlette:
    """The ASGI app. ``emit`` (default: the sink if set, else ``emit_model_updated``) is what
    an accepted update is handed to; tests pass one that captures."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    settings = settings or WebhookSettings.from_env()
    receiver = Receiver(
        settings, DeliveryStore(settings.store_path()), emit or default_emitter(settings)
    )

    def endpoint(handle: Callable[[Mapping[str, str], bytes], Verdict], source: str):
        async def receive(request):
            body = await _read_body(request, settings.max_body_bytes)
            if body is None:
                verdict = receiver._finish(source, Verdict(Outcome.TOO_LARGE))
            else:
                verdict = await run_in_threadpool(handle, request.headers, body)
            return JSONResponse(verdict.body(), status_code=verdict.outcome.status_code)

        return receive

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def stats(request):
        return JSONResponse(await run_in_threadpool(receiver.stats))

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/stats", stats),
            Route(PATHS["mlflow"], endpoint(receiver.mlflow, "mlflow"), methods=["POST"]),
            Route(PATHS["hub"], endpoint(receiver.hub, "hub"), methods=["POST"]),
        ]
    )
    app.state.receiver = receiver
    return app


def register_mlflow_webhook(tracking_uri: str, url: str, secret: str) -> str:
    """Create the registry webhook that posts ``model_version.created`` to ``url`` (the
    receiver's ``/mlflow``), signed with ``secret``; its id. An existing webhook with the same
    url is reused, with its events, secret and status set to these.

    The MLflow server must allow the url: for a receiver on 127.0.0.1 it runs with
    ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not secret:
        raise UserError("an MLflow webhook needs a secret (ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET)")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        token = None
        while True:
            page = client.list_webhooks(max_results=100, page_token=token)
            same = [w for w in page if w.url == url]
            if same:
                hook = client.update_webhook(
                    same[0].webhook_id, events=[MLFLOW_EVENT], secret=secret, status="ACTIVE"
                )
                return hook.webhook_id
            token = page.token
            if not token:
                break
        hook = client.create_webhook(
            name=MLFLOW_WEBHOOK_NAME,
            url=url,
            events=[MLFLOW_EVENT],
            secret=secret,
            description="new model versions re-run ecocompress optimize",
        )
    except MlflowException as exc:
        raise UserError(
            f"registering the MLflow webhook at {redact(tracking_uri)} failed: {exc.message}"
        ) from exc
    return hook.webhook_id


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = WebhookSettings.from_env()
    app = create_app(settings)  # bad settings stop here, before anything is logged
    for source, field in SECRET_FIELDS.items():
        if getattr(settings, field) is None:
            var = WebhookSettings.env_var(field)
            log.warning("no %s secret (%s unset): its deliveries are refused", source, var)
    if settings.sink is not None:
        log.warning("dry-run sink: updates go to %s, not to Prefect", settings.sink)
    log.info("webhook store %s", settings.store_path())
    # uvicorn's access log prints query strings; a Hub secret given as ?secret= would leak
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, access_log=False, log_level=args.log_level
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from ecocompress.flows.cli import guarded

    stack = StackSettings()
    parser = argparse.ArgumentParser(
        prog="python -m ecocompress.deployments.webhooks",
        description="Receive MLflow registry and Hugging Face Hub webhooks and emit "
        "ecocompress.model.updated to Prefect.",
    )
    parser.add_argument("--host", default=stack.host, help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=stack.webhook_port, help="(default %(default)s)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return guarded(_serve, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
