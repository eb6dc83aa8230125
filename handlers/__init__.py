"""TorchServe handlers; ``dreamsuite archive`` packs them into model archives
(:mod:`handlers.archive`)."""

from pathlib import Path

__all__ = ["handler_file"]


def handler_file() -> Path:
    """The backbone handler's source file."""
    return Path(__file__).with_name("backbone_handler.py")
