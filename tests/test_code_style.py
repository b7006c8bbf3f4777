"""The code passes ruff's checks (complexity at most 12) and is formatted as `ruff format` does."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import ROOT, tool

LINTED = ["src", "tests", "benchmarks", "airflow", "scripts"]  # as the Makefile's `lint`


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff(command):
    result = subprocess.run(
        [tool("ruff"), *command, *LINTED], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
