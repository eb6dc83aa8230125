"""Configuration of the GAN service: flags, each with a ``DREAMSUITE_*`` environment default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from dreamsuite.artifacts import DEFAULT_ARTIFACTS
from dreamsuite.cpus import MAX_THREADS, available_cpus
from dreamsuite.defaults import DEFAULT_MAX_PIXELS
from dreamsuite.errors import InvalidArgument
from services.common.config import (
    ServerConfig,
    add_env_argument,
    add_server_arguments,
    server_config_from_args,
)

__all__ = ["GanServiceConfig", "add_arguments", "config_from_args", "DEFAULT_PORT",
           "DEFAULT_METRICS_PORT", "LAUNCHERS"]

DEFAULT_PORT = 50053
DEFAULT_METRICS_PORT = 9103
LAUNCHERS = ("local", "kubernetes")


@dataclass(frozen=True)
class GanServiceConfig:
    """Everything ``dreamsuite serve gan`` can be told."""

    server: ServerConfig = field(default_factory=ServerConfig)
    artifacts: str = DEFAULT_ARTIFACTS
    #: The dream service (HOST:PORT) that dreams the data sets.
    dream: str | None = None
    launcher: str = "local"
    #: Trainings running at once; more are RESOURCE_EXHAUSTED.
    max_jobs: int = 1
    #: Torch threads of each local trainer (0: :meth:`trainer_thread_budget` picks).
    trainer_threads: int = 0
    #: Restarts of a trainer that died (from its latest checkpoint) before the job fails.
    max_restarts: int = 3
    #: Folders a BuildDataset request may read photos from (none: folders are refused).
    folder_roots: tuple[Path, ...] = ()
    #: Device of sampling in the service (training chooses its own).
    device: str | None = None
    #: Device the trainer processes use (None: CUDA when present).
    train_device: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Trainers use deterministic algorithms and fixed threads (CPU): a killed and resumed run
    #: ends with exactly the weights of an uninterrupted one, at some cost in speed.
    deterministic: bool = False
    #: Seconds a cancelled or stopped trainer gets to checkpoint before it is killed.
    stop_grace: float = 60.0
    #: Kubernetes launcher: the image of the trainer Job and the namespace.
    image: str = "dreamsuite:latest"
    namespace: str = "dreamsuite"
    #: PublishModel: TorchServe's management API (``http://HOST:PORT``; a name with one address
    #: per replica reaches them all), its management key (a file read at every use:
    #: TorchServe's key_file.json or the bare key; or the key itself), the model store folder
    #: TorchServe reads too (None: archives go through each replica's management gateway) and
    #: how often every replica is checked for the published models (0: at start only).
    torchserve_management: str | None = None
    torchserve_management_key_file: Path | None = None
    torchserve_management_key: str | None = None
    torchserve_model_store: Path | None = None
    torchserve_resync: float = 0.0
    #: PublishModel: seconds an old version keeps its workers after its queue is empty, for
    #: the requests they are computing (a replaced version is then unregistered).
    torchserve_drain: float = 2.0

    def validate(self) -> GanServiceConfig:
        self.server.validate()
        if self.launcher not in LAUNCHERS:
            raise InvalidArgument(f"--launcher must be one of {LAUNCHERS}")
        if self.max_jobs < 1 or self.max_restarts < 0 or not 0 <= self.stop_grace <= 3600:
            raise InvalidArgument("--max-jobs must be >= 1, --max-restarts >= 0 and --stop-grace "
                                  "between 0 and 3600 seconds")
        if not 0 <= self.trainer_threads <= MAX_THREADS:
            raise InvalidArgument(f"--trainer-threads must be between 1 and {MAX_THREADS}, or 0 (the "
                                  "available CPUs shared by --max-jobs trainers and the services)")
        for root in self.folder_roots:
            if not Path(root).is_dir():
                raise InvalidArgument(f"--folder-roots: {str(root)!r} is not a folder")
        management = self.torchserve_management
        if management and not management.startswith(("http://", "https://")):
            raise InvalidArgument("--torchserve-management: give http://HOST:PORT")
        store = self.torchserve_model_store
        if store is not None and not Path(store).is_dir():
            raise InvalidArgument(f"--torchserve-model-store: {str(store)!r} is not a folder")
        if not 0 <= self.torchserve_resync <= 86400:  # not NaN either
            raise InvalidArgument("--torchserve-resync must be between 0 and 86400 seconds")
        if not 0 <= self.torchserve_drain <= 3600:
            raise InvalidArgument("--torchserve-drain must be between 0 and 3600 seconds")
        return self

    def trainer_thread_budget(self, cpus: int | None = None) -> int:
        """Threads of each local trainer: ``trainer_threads``, else the available CPUs
        (``cpus``, or :func:`~dreamsuite.cpus.available_cpus`) shared by ``max_jobs`` trainers
        and one more share for the services beside them, at least 1."""
        if self.trainer_threads:
            return self.trainer_threads
        cpus = available_cpus() if cpus is None else cpus
        return max(1, cpus // (self.max_jobs + 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``dreamsuite serve gan``."""
    add_server_arguments(parser, "gan", port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)
    add_env_argument(parser, "--artifacts", default=DEFAULT_ARTIFACTS,
                     help="artifact store: s3://BUCKET?endpoint=HOST:PORT&secure=false, "
                          "file:///PATH or a folder (data sets, checkpoints, samples)")
    add_env_argument(parser, "--dream", help="dream service HOST:PORT that dreams the data sets")
    add_env_argument(parser, "--launcher", default="local", env="DREAMSUITE_GAN_LAUNCHER",
                     help="where trainings run: local (child processes) or kubernetes (Jobs)")
    add_env_argument(parser, "--max-jobs", default=1, cast=int, env="DREAMSUITE_GAN_MAX_JOBS",
                     help="trainings at once; more are RESOURCE_EXHAUSTED")
    add_env_argument(parser, "--trainer-threads", default=0, cast=int,
                     env="DREAMSUITE_GAN_TRAINER_THREADS",
                     help="torch threads of each local trainer (0: the available CPUs // "
                          "(--max-jobs + 1), at least 1, leaving a share for the services)")
    add_env_argument(parser, "--max-restarts", default=3, cast=int,
                     help="restarts of a dead trainer from its latest checkpoint")
    add_env_argument(parser, "--folder-roots", default="", env="DREAMSUITE_GAN_FOLDER_ROOTS",
                     help="colon-separated folders BuildDataset may read photos from")
    add_env_argument(parser, "--device", help="sampling device (cpu, cuda; default CUDA if present)")
    add_env_argument(parser, "--train-device", help="trainer device (default CUDA if present)")
    add_env_argument(parser, "--stop-grace", default=60.0, cast=float,
                     help="seconds a stopping trainer may take to checkpoint")
    parser.add_argument("--deterministic", action="store_true",
                        default=os.environ.get("DREAMSUITE_GAN_DETERMINISTIC") == "1",
                        help="trainers use deterministic algorithms (exact resumes on CPU) "
                             "[env DREAMSUITE_GAN_DETERMINISTIC=1]")
    add_env_argument(parser, "--image", default="dreamsuite:latest", env="DREAMSUITE_GAN_IMAGE",
                     help="kubernetes launcher: image of the trainer Job")
    add_env_argument(parser, "--namespace", default="dreamsuite",
                     env="DREAMSUITE_GAN_NAMESPACE", help="kubernetes launcher: namespace")
    add_env_argument(parser, "--torchserve-management",
                     help="PublishModel: TorchServe's management API, http://HOST:PORT (a name "
                          "with one address per replica: each gets the model)")
    add_env_argument(parser, "--torchserve-management-key-file", metavar="PATH",
                     help="PublishModel: TorchServe's key_file.json, or a file with just the "
                          "management key (read at every use)")
    add_env_argument(parser, "--torchserve-management-key",
                     help="PublishModel: the management key itself (prefer the environment "
                          "variable: flags are visible)")
    add_env_argument(parser, "--torchserve-model-store", metavar="DIR",
                     help="PublishModel: a model store folder TorchServe reads too (NAME.mar is "
                          "written there); unset: uploaded through each replica's management "
                          "gateway (python -m dreamsuite.torchserve_gateway)")
    add_env_argument(parser, "--torchserve-resync", default=0.0, cast=float,
                     help="PublishModel: seconds between checks that every TorchServe replica "
                          "serves the published models (0: once, at start)")
    add_env_argument(parser, "--torchserve-drain", default=2.0, cast=float,
                     help="PublishModel: seconds a replaced version keeps its workers once its "
                          "queue is empty, for the requests they are computing (set it above "
                          "your slowest one-pass request)")


def config_from_args(args: argparse.Namespace) -> GanServiceConfig:
    artifacts = args.artifacts
    if "://" not in artifacts:  # a folder: make it absolute, as the store reports it
        artifacts = Path(artifacts).resolve().as_uri()
    roots = tuple(Path(r).resolve() for r in args.folder_roots.split(":") if r.strip())
    return GanServiceConfig(
        server=server_config_from_args(args), artifacts=artifacts, dream=args.dream or None,
        launcher=args.launcher, max_jobs=args.max_jobs, max_restarts=args.max_restarts,
        trainer_threads=args.trainer_threads,
        folder_roots=roots, device=args.device, train_device=args.train_device,
        stop_grace=args.stop_grace, image=args.image, namespace=args.namespace,
        deterministic=args.deterministic,
        torchserve_management=args.torchserve_management or None,
        torchserve_management_key_file=_path(args.torchserve_management_key_file),
        torchserve_management_key=args.torchserve_management_key or None,
        torchserve_model_store=_path(args.torchserve_model_store),
        torchserve_resync=args.torchserve_resync, torchserve_drain=args.torchserve_drain,
    ).validate()


def _path(text: str | None) -> Path | None:
    return Path(text).resolve() if text else None
