"""Shell scripts pass shellcheck; Dockerfiles pass hadolint."""

from __future__ import annotations

import pytest

from tests.support import tool

from .conftest import ROOT, run

SHELL_SCRIPTS = sorted(
    {*ROOT.glob("docker/**/*.sh"), *ROOT.glob("scripts/**/*.sh"), *ROOT.glob("tests/**/*.sh")}
)
DOCKERFILES = sorted(ROOT.glob("docker/*/Dockerfile"))


def test_the_stack_has_scripts_and_dockerfiles():
    assert SHELL_SCRIPTS and len(DOCKERFILES) == 3


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script):
    result = run([tool("shellcheck"), "--severity=style", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(dockerfile):
    hadolint = tool("hadolint")
    result = run([hadolint, "--failure-threshold", "info", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_images_install_from_the_lock(dockerfile):
    text = dockerfile.read_text()
    assert "uv sync --frozen --no-dev" in text, "install from uv.lock, no resolution at build"
    assert "pip install" not in text and "uv pip" not in text
    assert ":latest" not in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_syntax_directive(dockerfile):
    """`# syntax=` makes BuildKit fetch that frontend image: every offline build fails."""
    assert "# syntax=" not in dockerfile.read_text().lower()
