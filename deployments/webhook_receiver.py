"""Verifying a webhook delivery and turning it into a ``ModelUpdate``: the receiver's settings,
the outcome every delivery ends in, what MLflow and the Hugging Face Hub send, and the
``Receiver`` that checks, remembers, counts and hands on. No HTTP here (webhooks.py has the app).

MLflow (checked against ``mlflow/webhooks/delivery.py`` of MLflow 3.17): ``X-MLflow-Signature:
v1,<base64 HMAC-SHA256 of "{delivery_id}.{timestamp}.{raw body}">``, with
``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp`` (unix seconds). Its retries on 5xx resend
the same delivery id, so a delivery whose event could not be handed on is forgotten again.
The Hub does not sign: the webhook's secret arrives in ``X-Webhook-Secret``; a Hub delivery has
no id, so a second delivery of the same (repo, sha) counts as the replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ecocompress.deployments.webhook_store import DeliveryStore
from ecocompress.flows.events import OWN_VERSION_TAG, ModelUpdate
from ecocompress.flows.stack import stack_dir

log = logging.getLogger("ecocompress.webhooks")

# MLflow's header names and signature version (mlflow/webhooks/constants.py).
SIGNATURE_HEADER = "X-MLflow-Signature"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_VERSION = "v1"
HUB_SECRET_HEADER = "X-Webhook-Secret"
MLFLOW_EVENT = "model_version.created"
SECRET_FIELDS = {"mlflow": "mlflow_secret", "hub": "hf_secret"}  # source -> WebhookSettings field
MAX_DELIVERY_ID_CHARS = 200

Emitter = Callable[[ModelUpdate], "str | None"]


class WebhookSettings(BaseModel):
    """The receiver's settings; ``from_env`` reads each field's ``env`` variable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mlflow_secret: SecretStr | None = Field(
        None,
        description="secret the MLflow webhook signs with; unset: MLflow deliveries are refused",
        json_schema_extra={"env": "ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET"},
    )
    hf_secret: SecretStr | None = Field(
        None,
        description="secret of the Hugging Face Hub webhook; unset: Hub deliveries are refused",
        json_schema_extra={"env": "ECOCOMPRESS_HF_WEBHOOK_SECRET"},
    )
    max_skew_s: float = Field(
        300, gt=0, description="seconds an MLflow delivery's timestamp may be off from now"
    )
    db_path: Path | None = Field(
        None,
        description="SQLite file of seen deliveries and counts "
        "(default <ECOCOMPRESS_HOME>/stack/webhooks.db)",
        json_schema_extra={"env": "ECOCOMPRESS_WEBHOOK_DB"},
    )
    sink: Path | None = Field(
        None,
        description="test/dry-run sink: append each ModelUpdate as a JSON line to this file "
        "INSTEAD of emitting it to Prefect",
        json_schema_extra={"env": "ECOCOMPRESS_WEBHOOK_SINK"},
    )
    max_body_bytes: int = Field(1 << 20, gt=0, description="largest delivery body accepted")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        """Settings from the environment (an empty variable counts as unset), then overrides."""
        env = os.environ if environ is None else environ
        values = {
            name: env[var]
            for name in cls.model_fields
            if (var := cls.env_var(name)) and env.get(var)
        }
        return cls(**{**values, **overrides})

    @classmethod
    def env_var(cls, name: str) -> str | None:
        """The environment variable field ``name`` is read from, if any."""
        return (cls.model_fields[name].json_schema_extra or {}).get("env")

    def store_path(self) -> Path:
        return self.db_path or stack_dir() / "webhooks.db"


class Outcome(str, Enum):
    """How a delivery ended; each is counted and answered with its HTTP status."""

    ACCEPTED = "accepted"  # 202: the event was handed on
    IGNORED = "ignored"  # 200: authentic, but not an event that means a new model
    FORGED = "forged"  # 401: MLflow signature missing or not of the v1,<base64> form
    # 401: a v1 signature that does not match the delivery as received: body, id or timestamp
    # changed after signing, or signed with another secret (an HMAC cannot tell these apart)
    TAMPERED = "tampered"
    STALE = "stale"  # 401: authentic, but its timestamp is more than max_skew_s from now
    WRONG_SECRET = "wrong_secret"  # 401: Hub secret missing or wrong
    NO_SECRET = "no_secret"  # 401: this receiver has no secret for the source: nothing verifies
    REPLAYED = "replayed"  # 409: this delivery (MLflow id, Hub repo and sha) was accepted before
    MALFORMED = "malformed"  # 400: headers or JSON body not what the source sends
    TOO_LARGE = "too_large"  # 413: body over max_body_bytes
    NOT_EMITTED = "not_emitted"  # 503: the event could not be handed on; the sender may retry

    @property
    def status_code(self) -> int:
        return HTTP_STATUS[self]


HTTP_STATUS = {
    Outcome.ACCEPTED: 202,
    Outcome.IGNORED: 200,
    Outcome.FORGED: 401,
    Outcome.TAMPERED: 401,
    Outcome.STALE: 401,
    Outcome.WRONG_SECRET: 401,
    Outcome.NO_SECRET: 401,
    Outcome.REPLAYED: 409,
    Outcome.MALFORMED: 400,
    Outcome.TOO_LARGE: 413,
    Outcome.NOT_EMITTED: 503,
}
REFUSALS = [o for o in Outcome if o.status_code >= 400]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    update: ModelUpdate | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome.value}
        if self.update is not None:
            out.update(model=self.update.model, revision=self.update.revision)
        return out


# ---- what the two senders send (only the fields used; the rest is ignored)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MlflowDelivery(_Lenient):
    entity: str
    action: str
    data: dict[str, Any]


class MlflowModelVersion(_Lenient):
    name: str = Field(min_length=1)
    version: str | int
    tags: dict[str, Any] | None = None


class HubEvent(_Lenient):
    scope: str
    action: str


class HubRepo(_Lenient):
    type: str
    name: str = Field(min_length=1)
    headSha: str | None = None


class HubRef(_Lenient):
    ref: str
    newSha: str | None = None


class HubDelivery(_Lenient):
    event: HubEvent
    repo: HubRepo
    updatedRefs: list[HubRef] = []

    def revision(self) -> str | None:
        """The main branch's new sha, else the repo's head sha."""
        main = [r.newSha for r in self.updatedRefs if r.ref == "refs/heads/main" and r.newSha]
        return main[0] if main else self.repo.headSha or None


def v1_digests(header: str | None) -> list[bytes]:
    """The HMAC-SHA256 digests in an ``X-MLflow-Signature`` header (space-separated
    ``v1,<base64>`` entries, as Standard Webhooks allows); [] when there is none."""
    out = []
    for part in (header or "").split():
        version, _, b64 = part.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            digest = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(digest) == hashlib.sha256().digest_size:
            out.append(digest)
    return out


def mlflow_digest(secret: str, delivery_id: str, timestamp: str, body: bytes) -> bytes:
    """MLflow's HMAC over ``{delivery_id}.{timestamp}.{raw body}`` (it signs the UTF-8 text it
    sends, so signing the raw bytes is the same)."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()


class Receiver:
    """Verifies deliveries, remembers them, counts outcomes and hands updates to ``emit``."""

    def __init__(self, settings: WebhookSettings, store: DeliveryStore, emit: Emitter) -> None:
        self.settings = settings
        self.store = store
        self.emit = emit

    def mlflow(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        return self._finish("mlflow", self._mlflow(headers, body))

    def hub(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        return self._finish("hub", self._hub(headers, body))

    def _mlflow(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        if self.settings.mlflow_secret is None:
            return Verdict(Outcome.NO_SECRET)
        digests = v1_digests(headers.get(SIGNATURE_HEADER))
        if not digests:
            return Verdict(Outcome.FORGED)
        delivery_id = headers.get(DELIVERY_ID_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        if not (0 < len(delivery_id) <= MAX_DELIVERY_ID_CHARS and timestamp.isdigit()):
            return Verdict(Outcome.MALFORMED)
        secret = self.settings.mlflow_secret.get_secret_value()
        expected = mlflow_digest(secret, delivery_id, timestamp, body)
        if not any(hmac.compare_digest(expected, d) for d in digests):
            return Verdict(Outcome.TAMPERED)
        # checked after the signature: only an authentic delivery is called stale
        if abs(time.time() - int(timestamp)) > self.settings.max_skew_s:
            return Verdict(Outcome.STALE)
        try:
            delivery = MlflowDelivery.model_validate_json(body)
            if f"{delivery.entity}.{delivery.action}" != MLFLOW_EVENT:
                return Verdict(Outcome.IGNORED)
            version = MlflowModelVersion.model_validate(delivery.data)
        except ValidationError:
            return Verdict(Outcome.MALFORMED)
        if OWN_VERSION_TAG in (version.tags or {}):  # optimize's own result, not a new model
            return Verdict(Outcome.IGNORED)
        update = ModelUpdate(
            model=f"models:/{version.name}/{version.version}",
            revision=str(version.version),
            source="mlflow",
            seen_by="mlflow-webhook",
        )
        # a replay of a delivery received over 2 skews ago is stale anyway: its id can go
        self.store.prune("mlflow", older_than_s=2 * self.settings.max_skew_s + 60)
        return self._hand_on("mlflow", delivery_id, update)

    def _hub(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        if self.settings.hf_secret is None:
            return Verdict(Outcome.NO_SECRET)
        given = headers.get(HUB_SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.settings.hf_secret.get_secret_value().encode()):
            return Verdict(Outcome.WRONG_SECRET)
        try:
            delivery = HubDelivery.model_validate_json(body)
        except ValidationError:
            return Verdict(Outcome.MALFORMED)
        event = delivery.event
        if (event.scope, event.action, delivery.repo.type) != ("repo.content", "update", "model"):
            return Verdict(Outcome.IGNORED)
        revision = delivery.revision()
        if not revision:
            return Verdict(Outcome.MALFORMED)
        update = ModelUpdate(
            model=delivery.repo.name, revision=revision, source="hub", seen_by="hub-webhook"
        )
        return self._hand_on("hub", f"{update.model}@{update.revision}", update)

    def _hand_on(self, source: str, delivery_id: str, update: ModelUpdate) -> Verdict:
        if not self.store.remember(source, delivery_id):
            return Verdict(Outcome.REPLAYED, update)
        try:
            event_id = self.emit(update)
        except Exception as exc:  # the receiver keeps serving; the sender retries on 503
            log.error(
                "%s: handing on %s failed: %s: %s", source, update.model, type(exc).__name__, exc
            )
            event_id = None
        if event_id is None:
            self.store.forget(source, delivery_id)
            return Verdict(Outcome.NOT_EMITTED, update)
        return Verdict(Outcome.ACCEPTED, update)

    def _finish(self, source: str, verdict: Verdict) -> Verdict:
        self.store.count(source, verdict.outcome.value)
        if verdict.outcome is Outcome.ACCEPTED:
            u = verdict.update
            log.info("%s delivery accepted: %s at %s", source, u.model, u.revision)
        else:
            log.warning("%s delivery %s", source, verdict.outcome.value)
        return verdict

    def stats(self) -> dict[str, Any]:
        counts = self.store.counts()

        def total(outcome: Outcome) -> int:
            return sum(c.get(outcome.value, 0) for c in counts.values())

        return {
            "accepted": total(Outcome.ACCEPTED),
            "ignored": total(Outcome.IGNORED),
            "refused": {o.value: total(o) for o in REFUSALS},
            "by_source": counts,
        }
