"""The whole suite on one machine, no containers: TorchServe, the guide and the dream service
(and Prometheus, when asked) as child processes on loopback ports.

>>> with Suite(run_dir).start() as suite:        # waits until every service is SERVING
...     suite.endpoints()["dream"]               # "127.0.0.1:PORT"

Every child runs in a process group of its own; :meth:`Suite.stop` ends each group (SIGTERM,
then SIGKILL after a grace period), the dream service first, TorchServe last. The run directory
holds ``state.json`` (pids, process groups, ports) and the logs, so ``dreamsuite status`` and
``dreamsuite down`` work from another shell, and a crashed launcher leaves nothing that
``down`` cannot find.
"""

from dreamsuite.launcher.processes import (
    ServiceProcess,
    check_health,
    check_torchserve,
    default_run_dir,
    read_state,
    recorded_processes,
    stop_recorded,
    wait_serving,
)
from dreamsuite.launcher.prometheus import prometheus_config
from dreamsuite.launcher.suite import Suite

__all__ = [
    "ServiceProcess",
    "Suite",
    "check_health",
    "check_torchserve",
    "default_run_dir",
    "read_state",
    "recorded_processes",
    "stop_recorded",
    "wait_serving",
    "prometheus_config",
]
