"""Child processes of a stack, each in a process group of its own, and what stops them all.

`Children.stop` also ends the processes that left their group (task supervisors call setsid),
found in /proc as descendants and by a marker in their environment. Port checks and polling
for a service to answer are here too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from heart_mlops.devstack import StackError

MARKER = "HEART_MLOPS_STACK_ID"  # set in every child's environment, to find strays


def check_ports(ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Check that each port of `ports` (setting name -> port) is free to bind on `host`.

    Returns None. Raises StackError naming the first port in use and the setting that chose it.
    """
    for setting, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the servers do: connections of a stopped server in TIME_WAIT don't block it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise StackError(
                    f"port {port} is already in use; stop what listens there or "
                    f"choose another port with {setting}=<port>"
                ) from None


def http_ok(url: str) -> bool:
    """True when a GET of `url` succeeds within 5 seconds, False for an error status (4xx
    and 5xx) or no answer; never raises those."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except (OSError, urllib.error.URLError):
        return False


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 1.0,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll `predicate()` every `interval` seconds until it is true.

    Returns None. Raises StackError naming `what` when `timeout` seconds pass first; `alive()`,
    called before each poll, may raise (StackError when a needed process died), as may
    `predicate()`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive:
            alive()
        if predicate():
            return
        time.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Child:
    """A started child process and the file its output goes to."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def check(self) -> None:
        """Returns None while the process runs; raises StackError with its exit code and log."""
        code = self.process.poll()
        if code is not None:
            raise StackError(f"{self.name} exited with code {code}; see {self.log_path}")


class Children:
    """Child processes, each in its own process group; `stop()` ends them all."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.stack_id = secrets.token_hex(8)
        self.children: list[Child] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Child:
        """Start `command` in a new session, output appended to `log_dir/<name>.log`.

        Returns the Child. Raises OSError when the command or the log cannot be opened.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                env={**env, MARKER: self.stack_id},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Returns None while every child runs; raises StackError for the first that exited."""
        for child in self.children:
            child.check()

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every group, SIGKILL what remains after `timeout` seconds.

        Returns the names of the children and "pid N" of the strays that needed SIGKILL; never
        raises for processes that are gone already. Processes that left their group (task
        supervisors call setsid) are found beforehand, as descendants and by the marker in their
        environment (orphans too, such as idle joblib workers of finished tasks), and get
        SIGTERM like the groups.
        """
        groups = {child.process.pid for child in self.children}
        tracked = _descendants(groups) | set(self.strays())
        for child in reversed(self.children):
            _signal_group(child.process.pid, signal.SIGTERM)
        for pid in tracked:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) not in groups:
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            while _group_alive(child.process.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(child.process.pid):
                killed.append(child.name)
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=10)
        while tracked & _live_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        strays = sorted((tracked | set(self.strays())) & _live_pids())
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.children.clear()
        return killed + [f"pid {pid}" for pid in strays]

    def strays(self) -> list[int]:
        """Returns the pids of live processes with this stack's marker in their environment."""
        needle = f"{MARKER}={self.stack_id}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may contain spaces
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _live_pids() -> set[int]:
    return set(_parents())


def _descendants(roots: set[int]) -> set[int]:
    parents = _parents()
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
