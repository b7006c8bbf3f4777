"""The stack's process handling, port checks and polling, with real processes and sockets."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from heart_mlops.devstack import StackError
from heart_mlops.devstack.processes import Child, Children, check_ports, http_ok, wait_for


def test_a_taken_port_names_the_port_and_its_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} .*HEART_MLOPS_AIRFLOW_PORT"):
            check_ports({"HEART_MLOPS_MLFLOW_PORT": 0, "HEART_MLOPS_AIRFLOW_PORT": port})


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free():
    # a server that closed its side of a connection first leaves it in TIME_WAIT for a minute;
    # `make run` right after Ctrl-C must not call that port taken
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gunicorn
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()
            client.recv(1)
    check_ports({"HEART_MLOPS_MLFLOW_PORT": port})


def test_stop_ends_children_and_the_processes_that_left_their_group(tmp_path):
    # a child that starts a grandchild in a session of its own (as task supervisors do),
    # both ignoring SIGTERM
    script = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(600)'\n"
        "p = subprocess.Popen([sys.executable, '-c', code], start_new_session=True)\n"
        "open(sys.argv[1], 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    children, child, pid_file = _start_script(tmp_path, "stubborn", script)
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "the grandchild")
    grandchild = int(pid_file.read_text())

    killed = children.stop(timeout=2)

    assert "stubborn" in killed and f"pid {grandchild}" in killed
    assert child.process.poll() is not None
    time.sleep(0.5)
    assert not _alive(grandchild)


def test_stop_terminates_orphans_of_the_stack_without_killing_them(tmp_path):
    # a child whose own child left its session and outlived it (as idle joblib workers of a
    # finished task do): no longer a descendant, found by the stack's marker, ends on SIGTERM
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "start_new_session=True)\n"
        "open(sys.argv[1], 'w').write(str(p.pid))\n"
    )
    children, child, pid_file = _start_script(tmp_path, "parent", script)
    child.process.wait(timeout=30)
    orphan = int(pid_file.read_text())
    assert _alive(orphan)

    assert children.stop(timeout=10) == []  # nothing needed SIGKILL
    wait_for(lambda: not _alive(orphan), 10, "the orphan to end")


def _start_script(tmp_path: Path, name: str, script: str) -> tuple[Children, Child, Path]:
    """A child running the Python `script`, which gets a pid file to write as its argument."""
    children = Children(tmp_path / "logs")
    pid_file = tmp_path / f"{name}.pid"
    child = children.start(name, [sys.executable, "-c", script, str(pid_file)], dict(os.environ))
    return children, child, pid_file


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_wait_for_names_what_it_waited_for_when_time_is_up():
    with pytest.raises(StackError, match="timed out after 0s waiting for the answer"):
        wait_for(lambda: False, 0.2, "the answer", interval=0.05)


def test_wait_for_stops_at_once_when_a_needed_process_exited(tmp_path):
    children = Children(tmp_path / "logs")
    child = children.start(
        "quitter", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ)
    )
    child.process.wait(timeout=30)
    started = time.monotonic()
    with pytest.raises(StackError, match=r"quitter exited with code 3; see .*quitter\.log"):
        wait_for(lambda: False, 60, "the quitter", alive=children.check)
    assert time.monotonic() - started < 10
    assert children.stop(timeout=2) == []


def test_http_ok_only_for_a_success_status():
    statuses = {"/ok": 200, "/missing": 404, "/broken": 500}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses[self.path])
            self.end_headers()

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            assert http_ok(f"{base}/ok")
            assert not http_ok(f"{base}/missing")
            assert not http_ok(f"{base}/broken")
        finally:
            server.shutdown()
    assert not http_ok(f"{base}/ok")  # nothing listens any more
