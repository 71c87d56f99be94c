"""The one event that starts a re-run: a new model or model revision was seen.

The watch flow (local folders, GGUF files, Hub ids, MLflow registry versions) and the webhook
receivers (MLflow registry, Hugging Face Hub) all say the same thing through
``emit_model_updated``; a ``DeploymentEventTrigger`` on ``MODEL_UPDATED`` starts optimize for it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ecocompress.tasks.artifacts import sha256_text

MODEL_UPDATED = "ecocompress.model.updated"
RESOURCE_PREFIX = "ecocompress.model"
# A registry version ecocompress registered itself (optimize's recommendation): never announced,
# or every search would start a search of its own result.
OWN_VERSION_TAG = "ecocompress.compressed"

Source = Literal["hub", "local", "mlflow"]


class ModelUpdate(BaseModel):
    """A model at a revision: what ``--model`` and ``--revision`` of a run are given, and where
    it was seen. ``revision`` is the Hub commit sha, the content hash of a local folder or file,
    or the MLflow registry version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, description="what --model is given (id, path, models:/name/N)")
    revision: str = Field(min_length=1, description="commit sha, content hash or registry version")
    source: Source
    seen_by: str = Field(description="watch, mlflow-webhook or hub-webhook")

    @property
    def key(self) -> str:
        """One (model, revision): what de-duplication and the search thread id are keyed on."""
        return sha256_text(self.model, self.revision)[:16]

    @property
    def run_revision(self) -> str | None:
        """The ``--revision`` a run is given: a Hub sha pins the download; a local content hash
        or a registry version is already in the model reference."""
        return self.revision if self.source == "hub" else None

    def resource(self) -> dict[str, str]:
        return {
            "prefect.resource.id": f"{RESOURCE_PREFIX}.{self.key}",
            "prefect.resource.name": self.model,
            "ecocompress.model": self.model,
            "ecocompress.revision": self.revision,
        }

    def payload(self) -> dict[str, str | None]:
        return {
            "model": self.model,
            "revision": self.revision,
            "run_revision": self.run_revision,
            "source": self.source,
            "seen_by": self.seen_by,
            "key": self.key,
        }


def emit_model_updated(update: ModelUpdate) -> str | None:
    """Emit ``MODEL_UPDATED`` to the configured Prefect API; the event id, or None when Prefect
    has no events client (no API configured)."""
    from prefect.events import emit_event

    event = emit_event(
        event=MODEL_UPDATED,
        resource=update.resource(),
        payload=update.payload(),
    )
    return str(event.id) if event is not None else None
