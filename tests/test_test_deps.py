"""`make test-deps` (scripts/test_deps.sh): what the suite needs from the machine.

Run on a copy of the script with a package list of the test's own, and a stand-in `apt-get`
first on PATH that records its calls, so nothing is installed on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import ROOT

MISSING = "heart-mlops-no-such-package"


@pytest.fixture
def tree():
    """A copy of the script beside a package list of its own, readable by any user."""
    path = Path(tempfile.mkdtemp(prefix="test-deps-"))
    (path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "test_deps.sh", path / "scripts")
    (path / "tests").mkdir()
    (path / "bin").mkdir()
    apt_get = path / "bin" / "apt-get"
    apt_get.write_text(f'#!/bin/sh\necho "$*" >> {path}/apt-calls\n')
    apt_get.chmod(0o755)
    for part in (path, path / "scripts", path / "tests", path / "bin"):
        part.chmod(0o777)
    yield path
    shutil.rmtree(path)


def run_script(tree: Path, packages: str, *, as_nobody: bool = False):
    (tree / "tests" / "debian-packages.txt").write_text(packages)
    command = ["bash", str(tree / "scripts" / "test_deps.sh")]
    if as_nobody and os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "PATH": f"{tree / 'bin'}:{os.environ['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    return result, time.monotonic() - started


def apt_calls(tree: Path) -> list[str]:
    calls = tree / "apt-calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_not_root_and_a_package_missing_stops_at_once_with_one_message(tree):
    result, seconds = run_script(
        tree, f"# comment\n{MISSING}  no-such-command\nbash bash\n", as_nobody=True
    )
    assert result.returncode == 1 and seconds < 10
    assert result.stdout == ""
    message = result.stderr
    assert f"Debian packages: {MISSING}\n" in message  # bash is there: only the missing one
    assert f"apt-get install -y --no-install-recommends {MISSING}" in message
    assert message.startswith("make test cannot start")
    assert apt_calls(tree) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
def test_as_root_installs_only_what_is_missing(tree):
    result, _ = run_script(tree, f"{MISSING}  no-such-command\nbash  bash\n")
    assert result.returncode == 0, result.stderr
    assert apt_calls(tree) == ["update -qq", f"install -y -qq --no-install-recommends {MISSING}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="installing needs root")
def test_as_root_with_nothing_missing_asks_no_package_index(tree):
    result, _ = run_script(tree, "bash  bash\ncoreutils  ls\n")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    assert apt_calls(tree) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="starting servers needs root")
def test_a_docker_engine_that_cannot_start_is_named_with_its_log(tree, monkeypatch):
    bin_dir = tree / "bin"
    for name, script in {
        "docker": "exit 1",  # no engine answers
        "dockerd": 'echo "failed to start daemon: no storage driver"; exit 1',
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / name).chmod(0o755)
    log = tree / "dockerd.log"
    monkeypatch.setenv("DOCKERD_LOG", str(log))
    result, seconds = run_script(tree, "bash  bash\n")
    assert result.returncode == 1 and seconds < 20, result.stderr
    assert f"dockerd exited at start; the end of its log ({log}):" in result.stderr
    assert "failed to start daemon: no storage driver" in result.stderr
    assert apt_calls(tree) == []


def test_the_suites_list_names_each_command_once():
    from tests.support import debian_packages

    lines = [
        line.split()
        for line in (ROOT / "tests" / "debian-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(fields) == 2 for fields in lines), lines
    assert len(debian_packages()) == len(lines) >= 1


def test_browser_npm_packages_installed_only_when_their_lock_changed(tree):
    npm = tree / "bin" / "npm"  # stands in for npm: records its calls, makes node_modules
    npm.write_text(f'#!/bin/sh\nmkdir -p node_modules\necho "$*" >> {tree}/npm-calls\n')
    npm.chmod(0o755)
    browser = tree / "tests" / "browser"
    browser.mkdir(mode=0o777)
    browser.chmod(0o777)
    lock = browser / "package-lock.json"
    lock.write_text('{"lockfileVersion": 3}\n')

    def npm_calls() -> list[str]:
        calls = tree / "npm-calls"
        return calls.read_text().splitlines() if calls.exists() else []

    first, _ = run_script(tree, "bash bash\n")
    assert first.returncode == 0, first.stderr
    assert npm_calls() == ["ci --loglevel=error --no-audit --no-fund --ignore-scripts"]
    again, _ = run_script(tree, "bash bash\n")
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
    assert len(npm_calls()) == 1  # the same lock: nothing to do
    lock.write_text('{"lockfileVersion": 3, "changed": true}\n')
    changed, _ = run_script(tree, "bash bash\n")
    assert changed.returncode == 0 and len(npm_calls()) == 2, changed.stderr
