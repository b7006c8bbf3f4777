"""Fixtures of the Compose stack checks: the repository's files, a generated .env, the tools.

These checks need no Docker engine (test_compose_up.py, which runs the stack, does). Their
Debian tools (docker-compose, promtool, psql) are listed in tests/debian-packages.txt, which
`make test` installs.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import debian_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
PROFILES = ("all", "airflow", "mlflow", "api", "monitoring", "minio")
# step -> seconds of the Compose stack test (test_compose_up.py), printed after the run
STEP_TIMES = pytest.StashKey[dict[str, float]]()
RUN_SUMMARY = pytest.StashKey[list[str]]()  # what the stack's DAG run and API did


def pytest_terminal_summary(terminalreporter, config):
    times = config.stash.get(STEP_TIMES, {})
    if times:
        terminalreporter.write_sep("-", "compose stack test, wall time per step")
        for step, seconds in times.items():
            terminalreporter.write_line(f"{seconds:>8.1f} s  {step}")
    summary = config.stash.get(RUN_SUMMARY, [])
    if summary:
        terminalreporter.write_sep("-", "compose stack test, what ran")
        for line in summary:
            terminalreporter.write_line(line)


def load_script(name: str):
    """A module of scripts/ (they are plain files, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)


def parse_env_file(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


@pytest.fixture(scope="session")
def env_file(tmp_path_factory) -> Path:
    """A .env made from env.example by the same code as `make env` (fresh random secrets)."""
    make_env = load_script("make_env")
    path = tmp_path_factory.mktemp("compose") / ".env"
    assert make_env.main(["--output", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def env_values(env_file) -> dict[str, str]:
    return parse_env_file(env_file)


def compose_config(env_file: Path, profile: str) -> dict:
    """`docker-compose config` (Debian's 1.29) for one profile, parsed."""
    docker_compose = debian_tool("docker-compose")
    result = run(
        [
            docker_compose,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "--file",
            str(COMPOSE_FILE),
            "--profile",
            profile,
            "config",
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        f"docker-compose config --profile {profile} failed:\n{result.stderr}"
    )
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="session")
def resolved(env_file) -> dict:
    """The whole file as Compose resolves it (profile all, .env interpolated)."""
    return compose_config(env_file, "all")


@pytest.fixture(scope="session")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services_of(config: dict, profile: str) -> dict[str, dict]:
    """Services that `--profile PROFILE` starts: those of the profile and those of none."""
    return {
        name: svc
        for name, svc in config["services"].items()
        if not svc.get("profiles") or profile in svc["profiles"]
    }
