"""Helpers shared by the tests."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # the test environment's own commands
ROOT = Path(__file__).resolve().parents[1]
DEBIAN_PACKAGES = ROOT / "tests" / "debian-packages.txt"
HEART_CSV = ROOT / "data" / "heart.csv"


def debian_packages() -> dict[str, str]:
    """The Debian tools of the suite, from tests/debian-packages.txt: command -> package."""
    lines = (line.split() for line in DEBIAN_PACKAGES.read_text().splitlines())
    return {fields[1]: fields[0] for fields in lines if fields and not fields[0].startswith("#")}


def tool(name: str) -> str:
    """Path of a command of the test environment (uv.lock's dev extra) or of the machine;
    fails the test, naming what installs it, if it is absent."""
    import pytest

    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        package = debian_packages().get(name)
        where = (
            f"the Debian package {package} (`make test-deps` installs it)"
            if package
            else "the dev extra of pyproject.toml (`make setup`)"
        )
        pytest.fail(f"'{name}' not found: it comes with {where}", pytrace=False)
    return found


def debian_tool(name: str) -> str:
    """Path of a command that a Debian package of tests/debian-packages.txt provides."""
    assert name in debian_packages(), f"list the package of '{name}' in {DEBIAN_PACKAGES.name}"
    return tool(name)


def free_port() -> int:
    """A loopback port nothing listens on (the system picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def rclone_s3_command(root: Path, port: int, access_key: str, secret_key: str) -> list[str]:
    """A real S3 server (`rclone serve s3`) on a loopback port; buckets are folders under root."""
    return [
        tool("rclone"),
        "serve",
        "s3",
        str(root),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{access_key},{secret_key}",
        "--config",
        "/dev/null",
    ]


def use_s3(monkeypatch, endpoint: str, access_key: str, secret_key: str) -> None:
    """Point this process's S3 clients at `endpoint` (the standard AWS variables)."""
    from heart_mlops import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage._client.cache_clear()


@functools.cache
def heart_dataset():
    """data/heart.csv loaded as the pipeline loads it (validated, deduplicated): a Dataset."""
    from heart_mlops.data import load_bytes

    return load_bytes(HEART_CSV.read_bytes())


def heart_split(seed: int = 42):
    """heart.csv's distinct patients split as the pipeline splits them. -> (train, holdout)"""
    from heart_mlops.evaluation import split_holdout

    return split_holdout(heart_dataset().frame, 0.2, seed, cv_folds=5)


def fitted_candidate(name: str, frame, params: dict | None = None, *, labels=None):
    """Candidate `name` of model_params.yaml with `params`, fitted on `frame` (or on `labels`
    in place of the frame's own)."""
    from heart_mlops.evaluation import xy
    from heart_mlops.models import load_candidates
    from heart_mlops.settings import Settings

    candidate = load_candidates(Settings().model_params_path)[name]
    X, y = xy(frame)
    return candidate.build(params, seed=0).fit(X, y if labels is None else labels)


def untrainable_files(folder: Path) -> dict[str, str]:
    """A UCI file with no cholesterol anywhere, and a file with 3 patients of one class."""
    cleveland = (ROOT / "data" / "uci" / "processed.cleveland.data").read_text()
    no_chol = "\n".join(
        ",".join(f if i != 4 else "0" for i, f in enumerate(line.split(",")))
        for line in cleveland.splitlines()
    )
    import pandas as pd

    heart = pd.read_csv(ROOT / "data" / "heart.csv").drop_duplicates()
    few = pd.concat([heart[heart["target"] == 0].head(3), heart[heart["target"] == 1].head(21)])
    files = {"no_chol.data": no_chol, "three_sick.csv": few.to_csv(index=False)}
    for name, text in files.items():
        (folder / name).write_text(text)
    return {name: str(folder / name) for name in files}


def heavy_imports(module: str, libraries: set[str]) -> list[str]:
    """Which of `libraries` importing `module` loads, in a fresh interpreter (sorted names)."""
    script = (
        f"import sys, {module}; "
        f"print(' '.join(sorted(set({sorted(libraries)!r}) & set(sys.modules))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return completed.stdout.split()
