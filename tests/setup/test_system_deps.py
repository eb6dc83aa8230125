"""The Makefile's system-package check (scripts/system-deps), driven through make.

Each test builds a PATH folder of symlinks to the tools it keeps, so a tool is "missing" by
being left out. ``DREAMSUITE_AUTO_INSTALL=0`` (or no apt-get on that PATH) takes the path a
non-root user sees: one line naming the package and the command, and a stop. Where make would
go on past the check, ``PYTHON=/bin/false`` and a venv under tmp_path make it fail at once
instead of installing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
#: What `make test` checks; `make demo` (and the plain install) needs java alone.
TEST_DEPS = "java prometheus node"
#: The real tools a "complete" fake PATH links to.
TOOLS = ("java", "prometheus", "promtool", "node", "npm")


def real_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed here: `make test` installs it (scripts/system-deps)")
    return path


def fake_path(folder: Path, keep: tuple[str, ...]) -> str:
    """A PATH of one folder holding bash and symlinks to the tools in ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("bash", *keep):
        (folder / name).symlink_to(real_tool(name))
    return str(folder)


def run_make(tmp_path: Path, *args: str, path: str, auto_install: bool = False,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None, "make is not installed"
    env = {k: v for k, v in os.environ.items()
           if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DREAMSUITE_AUTO_INSTALL",
                        "DEBIAN_FRONTEND"}}
    env["PATH"] = path
    if not auto_install:
        env["DREAMSUITE_AUTO_INSTALL"] = "0"
    # Should the check ever let make go on, it fails here instead of building a venv.
    guard = ("PYTHON=/bin/false", f"VENV={tmp_path / 'venv'}")
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), *args, *guard], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def message_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What the check printed: the output less make's own "make: *** ..." trailer."""
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.strip() and not line.startswith("make")]


def assert_stops(proc: subprocess.CompletedProcess[str], tmp_path: Path, *names: str,
                 packages: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = message_lines(proc)
    assert len(lines) == 1, f"expected one line, got:\n{proc.stdout}{proc.stderr}"
    line = lines[0]
    assert line.startswith("dreamsuite: "), line
    for name in names:
        assert name in line, line
    assert line.endswith(f"install it with: sudo apt-get install {packages}") or line.endswith(
        f"install them with: sudo apt-get install {packages}"), line
    assert not (tmp_path / "venv").exists(), "make went on past the check"


def test_make_test_checks_every_tool_before_pip(tmp_path):
    proc = run_make(tmp_path, "-n", "test", path=os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.splitlines()
    assert commands[0] == f"scripts/system-deps {TEST_DEPS}", commands[:3]
    assert "/bin/false -m venv" in commands[1]


def test_make_demo_needs_java_alone(tmp_path):
    proc = run_make(tmp_path, "-n", "demo", path=os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "scripts/system-deps java"
    # ... so a machine without prometheus and node passes the demo's check.
    ok = run_make(tmp_path, "system-deps", path=fake_path(tmp_path / "bin", ("java",)))
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.parametrize("auto_install", [False, True], ids=["auto-install-off", "no-apt-get"])
def test_missing_prometheus_stops_make_test(tmp_path, auto_install):
    # auto_install=True: the PATH has no apt-get, so even root cannot install it.
    path = fake_path(tmp_path / "bin", ("java", "node", "npm"))
    proc = run_make(tmp_path, "test", path=path, auto_install=auto_install)
    assert_stops(proc, tmp_path, "prometheus", packages="prometheus")


def test_missing_promtool_is_named(tmp_path):
    path = fake_path(tmp_path / "bin", ("java", "prometheus", "node", "npm"))
    proc = run_make(tmp_path, "test", path=path)
    assert_stops(proc, tmp_path, "promtool", packages="prometheus")


def test_missing_java_stops_make_test(tmp_path):
    path = fake_path(tmp_path / "bin", ("prometheus", "promtool", "node", "npm"))
    proc = run_make(tmp_path, "test", path=path)
    assert_stops(proc, tmp_path, "java 17", packages="openjdk-17-jre-headless")


def test_old_java_stops_make_demo(tmp_path):
    path = fake_path(tmp_path / "bin", ())
    java = tmp_path / "bin" / "java"
    java.write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    java.chmod(0o755)
    proc = run_make(tmp_path, "demo", path=path)
    assert_stops(proc, tmp_path, "java 17 or newer (found java 11)",
                 packages="openjdk-17-jre-headless")


def test_missing_node_stops_make_test(tmp_path):
    path = fake_path(tmp_path / "bin", ("java", "prometheus", "promtool"))
    proc = run_make(tmp_path, "test", path=path)
    assert_stops(proc, tmp_path, "node", "npm", packages="nodejs npm")


def test_everything_missing_is_one_line(tmp_path):
    proc = run_make(tmp_path, "test", path=fake_path(tmp_path / "bin", ()))
    assert_stops(proc, tmp_path, "java", "prometheus", "node", "npm",
                 packages="openjdk-17-jre-headless prometheus nodejs npm")


def write_fake_apt_get(folder: Path, log: Path) -> None:
    """An apt-get that logs its calls and "installs" prometheus as two stub commands."""
    script = folder / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> {log}
case " $* " in *" install "*)
    for tool in prometheus promtool; do
        printf '#!/bin/sh\\n' > {folder}/$tool && /bin/chmod +x {folder}/$tool
    done;;
esac
""")
    script.chmod(0o755)


def test_everything_present_runs_no_apt_get(tmp_path):
    folder = tmp_path / "bin"
    path = fake_path(folder, TOOLS)
    log = tmp_path / "apt-get.log"
    write_fake_apt_get(folder, log)
    proc = run_make(tmp_path, "system-deps", f"SYSTEM_DEPS={TEST_DEPS}", path=path,
                    auto_install=True, timeout=15)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert message_lines(proc) == []
    assert not log.exists(), f"apt-get ran: {log.read_text()}"


def test_everything_present_on_this_machine(tmp_path):
    proc = run_make(tmp_path, "system-deps", f"SYSTEM_DEPS={TEST_DEPS}", path=os.environ["PATH"],
                    timeout=15)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="auto-install only runs as root")
def test_root_installs_what_is_missing_with_apt_get(tmp_path):
    folder = tmp_path / "bin"
    path = fake_path(folder, ("java", "node", "npm"))
    log = tmp_path / "apt-get.log"
    write_fake_apt_get(folder, log)
    proc = run_make(tmp_path, "system-deps", f"SYSTEM_DEPS={TEST_DEPS}", path=path,
                    auto_install=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert log.read_text().splitlines() == [
        "DEBIAN_FRONTEND= update",
        "DEBIAN_FRONTEND=noninteractive install -y --no-install-recommends prometheus",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="auto-install only runs as root")
def test_failed_apt_get_stops_with_the_message(tmp_path):
    folder = tmp_path / "bin"
    path = fake_path(folder, ("java", "node", "npm"))
    (folder / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package' >&2\nexit 100\n")
    (folder / "apt-get").chmod(0o755)
    proc = run_make(tmp_path, "system-deps", f"SYSTEM_DEPS={TEST_DEPS}", path=path,
                    auto_install=True)
    assert proc.returncode != 0
    last = message_lines(proc)[-1]
    assert last.startswith("dreamsuite: prometheus is missing (apt-get failed"), last
    assert last.endswith("install it with: sudo apt-get install prometheus"), last
