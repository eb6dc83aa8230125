"""Archive recipes: TorchServe model archives (.mar) of a backbone and of a dream2dream model.

A backbone archive holds the handler (``backbone_handler.py``, beside this file), the
backbone's pretrained state dict (for the embedded EfficientNet-Lite0, the file its package
ships) and a model-config.yaml with the batch settings and the handler's response cap.

A dream2dream archive (:func:`build_dream2dream_archive`, ``dreamsuite gan export MODEL``) holds
``dream2dream_handler.py``, the EMA network of the model's latest checkpoint as
:func:`~dreamsuite.gan.dream2dream.export_state` (``<name>.pt``), ``dream2dream.json`` (the model
record: conditions with their dream configs, step, evaluation) and a model-config.yaml.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging import generate_model_archive

import dreamsuite
from dreamsuite.artifacts import ArtifactStore
from dreamsuite.backbones import get_backbone_spec, resolve_weights_file
from dreamsuite.backbones.efficientnet_lite import lite0_file
from dreamsuite.backbones.registry import load_state_dict
from dreamsuite.defaults import DEFAULT_MAX_RESPONSE_BYTES
from dreamsuite.errors import InvalidArgument, shorten
from dreamsuite.gan.dream2dream import export_state
from dreamsuite.gan.paired import load_dream2dream
from dreamsuite.gan.records import read_model
from dreamsuite.torchserve import MODEL_NAME
from handlers import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_DELAY_MS,
    dream2dream_handler_file,
    handler_file,
)
from handlers.dream2dream_handler import DEFAULT_MAX_PIXELS

__all__ = ["build_archive", "model_config", "build_dream2dream_archive", "dream2dream_config"]

#: Backbones whose weights an installed package ships as a file: archived as they are.
_PACKAGE_FILES: dict[str, Callable[[], str]] = {"efficientnet_lite0": lite0_file}


def model_config(backbone: str, *, batch_size: int, max_batch_delay: int, workers: int) -> str:
    """model-config.yaml of a backbone archive: worker and batch settings, handler section."""
    return (
        f"minWorkers: {workers}\nmaxWorkers: {workers}\n"
        f"batchSize: {batch_size}\nmaxBatchDelay: {max_batch_delay}\n"
        "responseTimeout: 120\n"
        f"handler:\n  backbone: {backbone}\n  max_response_bytes: {DEFAULT_MAX_RESPONSE_BYTES}\n"
    )


def _weights_file(backbone: str, folder: Path) -> Path:
    """The pretrained state dict as a file: the package's own file when there is one."""
    if backbone in _PACKAGE_FILES:
        return Path(_PACKAGE_FILES[backbone]())
    spec = get_backbone_spec(backbone)
    found = resolve_weights_file(spec)
    if found is not None:
        return found
    path = folder / f"{backbone}.pth"
    torch.save(load_state_dict(spec), path)  # raises WeightsMissing with instructions
    return path


def build_archive(
    backbone: str, store: Path, *, batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS, workers: int = 1,
) -> Path:
    """Write ``store/<backbone>.mar`` (replacing it); returns its path."""
    get_backbone_spec(backbone)
    if batch_size < 1 or workers < 1 or max_batch_delay < 0:
        raise InvalidArgument("batch size and workers must be >= 1, max batch delay >= 0")
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "model-config.yaml"
        config.write_text(model_config(backbone, batch_size=batch_size,
                                       max_batch_delay=max_batch_delay, workers=workers))
        generate_model_archive(ModelArchiverConfig(
            model_name=backbone,
            handler=str(handler_file()),
            version=dreamsuite.__version__,
            serialized_file=str(_weights_file(backbone, Path(tmp))),
            export_path=str(store),
            force=True,
            config_file=str(config),
        ))
    return store / f"{backbone}.mar"


def dream2dream_config(*, batch_size: int, max_batch_delay: int, workers: int,
                       max_pixels: int) -> str:
    """model-config.yaml of a dream2dream archive."""
    return (
        f"minWorkers: {workers}\nmaxWorkers: {workers}\n"
        f"batchSize: {batch_size}\nmaxBatchDelay: {max_batch_delay}\n"
        "responseTimeout: 120\n"
        f"handler:\n  kind: dream2dream\n  max_pixels: {max_pixels}\n"
    )


def dream2dream_record(store: ArtifactStore, model: str) -> dict:
    """The record of ``model`` (``NotFound`` names ListModels), which must be a dream2dream
    model (``InvalidArgument`` otherwise): what an archive is built from."""
    record = read_model(store, model)
    if record.get("kind") != "dream2dream":
        raise InvalidArgument(f"model {shorten(model)!r} is a {record.get('kind')!r} model; only "
                              "dream2dream models are exported to TorchServe")
    return record


def build_dream2dream_archive(
    store: ArtifactStore, model: str, out: Path, *, name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE, max_batch_delay: int = DEFAULT_MAX_BATCH_DELAY_MS,
    workers: int = 1, max_pixels: int | None = None, record: dict | None = None,
    version: str | None = None,
) -> Path:
    """Write ``out/<name>.mar`` (default name: the model's) for the dream2dream ``model`` of
    ``store`` (its latest checkpoint's EMA network), replacing it; returns its path.
    ``record``: the model's record when the caller has read it (:func:`dream2dream_record`);
    ``version``: the archive's model version (default: the dreamsuite version)."""
    record = record if record is not None else dream2dream_record(store, model)
    name = name or model
    if not MODEL_NAME.match(name):
        raise InvalidArgument(f"{shorten(name)!r} is no TorchServe model name (letters, digits, "
                              "'_', '-', '.'; a letter or digit first)")
    if batch_size < 1 or workers < 1 or max_batch_delay < 0:
        raise InvalidArgument("batch size and workers must be >= 1, max batch delay >= 0")
    network, info = load_dream2dream(store, record["checkpoint"], "cpu")
    conditions = info["conditions"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = folder / f"{name}.pt"
        torch.save(export_state(network, [c["name"] for c in conditions], model=model,
                                step=int(info["step"]), checkpoint=str(record["checkpoint"])),
                   weights)
        described = folder / "dream2dream.json"
        described.write_text(json.dumps({
            "model": model, "name": name, "kind": "dream2dream", "step": info["step"],
            "width": info["width"], "checkpoint": record["checkpoint"],
            "sha256": record.get("sha256", ""), "conditions": conditions,
            "evaluation": record.get("evaluation") or {}}, indent=1, sort_keys=True))
        config = folder / "model-config.yaml"
        config.write_text(dream2dream_config(
            batch_size=batch_size, max_batch_delay=max_batch_delay, workers=workers,
            max_pixels=max_pixels or DEFAULT_MAX_PIXELS))
        generate_model_archive(ModelArchiverConfig(
            model_name=name,
            handler=str(dream2dream_handler_file()),
            version=version or dreamsuite.__version__,
            serialized_file=str(weights),
            extra_files=str(described),
            export_path=str(out),
            force=True,
            config_file=str(config),
        ))
    return out / f"{name}.mar"
