"""TorchServe handlers; ``dreamsuite archive`` (backbones) and ``dreamsuite gan export``
(dream2dream models) pack them into model archives (:mod:`handlers.archive`)."""

from pathlib import Path

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_MAX_BATCH_DELAY_MS", "handler_file",
           "dream2dream_handler_file"]

#: The backbone archive's TorchServe batch settings (``batchSize``, ``maxBatchDelay`` in ms),
#: ``dreamsuite archive``'s defaults; measured with ``dreamsuite bench guide --batching``.
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_BATCH_DELAY_MS = 5


def handler_file() -> Path:
    """The backbone handler's source file."""
    return Path(__file__).with_name("backbone_handler.py")


def dream2dream_handler_file() -> Path:
    """The dream2dream handler's source file (one-pass dreams; ``dreamsuite gan export``)."""
    return Path(__file__).with_name("dream2dream_handler.py")
