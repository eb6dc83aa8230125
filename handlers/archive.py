"""The archive recipe of the backbone handler: a TorchServe model archive (.mar) of a backbone.

The archive holds the handler (``backbone_handler.py``, beside this file), the backbone's
pretrained state dict (for the embedded EfficientNet-Lite0, the file its package ships) and a
model-config.yaml with the batch settings and the handler's response cap.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from model_archiver.model_archiver_config import ModelArchiverConfig
from model_archiver.model_packaging import generate_model_archive

import dreamsuite
from dreamsuite.backbones import get_backbone_spec, resolve_weights_file
from dreamsuite.backbones.efficientnet_lite import lite0_file
from dreamsuite.backbones.registry import load_state_dict
from dreamsuite.defaults import DEFAULT_MAX_RESPONSE_BYTES
from dreamsuite.errors import InvalidArgument
from handlers import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS, handler_file

__all__ = ["build_archive", "model_config"]

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
