"""Model records: ``models/<model>.json``, which the trainer keeps for every checkpointed
generator (kind, data set, step, checkpoint key, evaluation, finished), read by sampling, the
service's ``ListModels`` and the CLI."""

from __future__ import annotations

import json

from dreamsuite.artifacts import ArtifactStore
from dreamsuite.errors import InvalidArgument, NotFound, shorten

__all__ = ["MODELS_PREFIX", "record_key", "model_key", "read_model", "list_models"]

MODELS_PREFIX = "models/"


def record_key(name: str) -> str:
    """Where the record of the model ``name`` lives (no checks: see :func:`model_key`)."""
    return f"{MODELS_PREFIX}{name}.json"


def model_key(model: str) -> str:
    if not model:
        raise InvalidArgument("model is empty: name a model (ListModels lists them)")
    if len(model) > 128 or "/" in model or model.startswith("."):
        raise InvalidArgument(f"model {shorten(model)!r} is not a model name")
    return record_key(model)


def read_model(store: ArtifactStore, model: str) -> dict:
    """The record of ``model``; :class:`NotFound` when there is none."""
    try:
        return json.loads(store.get(model_key(model)))
    except NotFound:
        raise NotFound(f"no model {shorten(model)!r} in {store.url} (ListModels, or `dreamsuite "
                       "gan models`, lists them)") from None


def list_models(store: ArtifactStore) -> list[dict]:
    """Every readable model record, sorted by key."""
    records = []
    for key in store.iter_keys(MODELS_PREFIX):
        if key.endswith(".json"):
            try:
                records.append(json.loads(store.get(key)))
            except (NotFound, ValueError):
                continue
    return records
