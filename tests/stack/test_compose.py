"""docker-compose.yaml: valid for both Compose implementations, in every profile, and held to
the stack's rules (pinned images, healthchecks, restart policies, named volumes, scalable
workers, no secret outside .env)."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support import tool

from .conftest import (
    COMPOSE_FILE,
    PROFILES,
    ROOT,
    compose_config,
    load_script,
    parse_env_file,
    run,
    services_of,
)

STATEFUL = {
    "postgres": "/var/lib/postgresql/data",
    "api": "/home/app/.heart-mlops/prediction-spool",
    "valkey": "/data",
    "s3": "/data",
    "minio": "/data",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
    "airflow-worker": "/opt/airflow/logs",
}
ONE_SHOT = {"create-buckets", "mlflow-users", "airflow-init", "postgres-databases"}
BUILT = {
    "airflow": "docker/airflow/Dockerfile",
    "api": "docker/api/Dockerfile",
    "mlflow": "docker/mlflow/Dockerfile",
}


@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_config_resolves_every_profile(env_file, profile):
    config = compose_config(env_file, profile)
    assert services_of(config, profile), f"profile {profile} starts no service"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_brings_its_dependencies(resolved, profile):
    started = services_of(resolved, profile)
    for name, service in started.items():
        missing = set(service.get("depends_on", {})) - set(started)
        assert not missing, f"profile {profile}: {name} depends on {missing}, not in the profile"


def test_profiles_start_what_they_promise(resolved):
    expected = {
        "airflow": {
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "airflow-worker",
            "postgres",
            "valkey",
            "mlflow",
        },
        "mlflow": {"mlflow", "postgres", "s3", "create-buckets"},
        "api": {"api", "mlflow"},
        "monitoring": {"prometheus", "grafana", "api"},
        "minio": {"minio"},
    }
    for profile, names in expected.items():
        assert names <= set(services_of(resolved, profile)), profile
    assert "minio" not in services_of(resolved, "all"), "MinIO is opt-in only"
    everything = set(resolved["services"]) - {"minio"}
    assert set(services_of(resolved, "all")) == everything


def test_compose_spec_schema_for_every_profile(env_file, tmp_path):
    """The raw file and each profile's resolved file against the Compose specification."""
    check = tool("check-jsonschema")
    files = [str(COMPOSE_FILE)]
    for profile in PROFILES:
        config = compose_config(env_file, profile)
        config["services"] = services_of(config, profile)
        path = tmp_path / f"compose-{profile}.yaml"
        path.write_text(yaml.safe_dump(config))
        files.append(str(path))
    result = run([check, "--builtin-schema", "vendor.compose-spec", *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_top_level_name_and_no_version(raw_compose):
    assert "name" not in raw_compose, "docker-compose 1.29 rejects a top-level name:"
    assert "version" not in raw_compose, "version: is obsolete in the Compose specification"


def test_images_are_pinned(resolved):
    for name, service in resolved["services"].items():
        image = service.get("image", "")
        if "build" in service:
            assert image.startswith("heart-mlops-"), f"{name}: built image needs a project name"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "/" not in tag, (
            f"{name}: image '{image}' is not pinned to a version tag"
        )


def test_built_images_use_the_project_dockerfiles(resolved):
    for name, service in resolved["services"].items():
        if "build" in service:
            dockerfile = service["build"]["dockerfile"]
            assert dockerfile in BUILT.values(), f"{name}: {dockerfile}"
            assert (ROOT / dockerfile).is_file()


def test_long_running_services_have_healthchecks_and_restart(resolved):
    for name, service in resolved["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", f"one-shot {name} must not restart"
            continue
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), name
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_dependencies_wait_for_health_or_completion(resolved):
    for name, service in resolved["services"].items():
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition.get("condition") == wanted, f"{name} -> {dependency}"


def test_stateful_services_use_named_volumes(resolved):
    declared = set(resolved.get("volumes", {}))
    for name, target in STATEFUL.items():
        mounts = resolved["services"][name].get("volumes", [])
        named = [
            m
            for m in mounts
            if isinstance(m, str) and m.split(":")[1] == target and m.split(":")[0] in declared
        ]
        assert named, f"{name}: no named volume on {target}"


def test_airflow_workers_scale(resolved):
    worker = resolved["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    for name, service in resolved["services"].items():
        assert "container_name" not in service, name
    assert worker["command"][-2:] == ["celery", "worker"]


def test_airflow_mounts_dags_and_model_params(resolved):
    for name, service in resolved["services"].items():
        if not name.startswith("airflow-"):
            continue
        targets = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/heart-mlops/config"} <= targets, name
        assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
    assert (ROOT / "airflow" / "config" / "model_params.yaml").is_file()


def container_port(port) -> int:
    """Target port of a long ("target: 8080") or short ("127.0.0.1:8080:8080") entry."""
    if isinstance(port, dict):
        return int(port["target"])
    return int(str(port).split("/")[0].rsplit(":", 1)[-1])


def test_ports_of_the_issue(resolved):
    published = {
        name: {container_port(p) for p in svc.get("ports", [])}
        for name, svc in resolved["services"].items()
    }
    assert published["airflow-apiserver"] == {8080}
    assert published["mlflow"] == {5000}
    assert published["api"] == {8800}
    assert published["prometheus"] == {9090}
    assert published["grafana"] == {3000}
    assert published["s3"] == {9000}


def test_non_root_where_the_image_allows(resolved):
    built_users = {"docker/airflow/Dockerfile", "docker/api/Dockerfile", "docker/mlflow/Dockerfile"}
    for dockerfile in built_users:
        users = re.findall(r"^USER\s+(\S+)", (ROOT / dockerfile).read_text(), re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), dockerfile
    for name, service in resolved["services"].items():
        if name.startswith("airflow-"):
            assert not service["user"].startswith("0:"), name


def test_generated_stack_env_block_is_up_to_date():
    generator = load_script("compose_stack_env")
    assert generator.main(["--check"]) == 0, (
        "docker-compose.yaml is out of date: run python scripts/compose_stack_env.py"
    )


def test_every_compose_variable_is_in_env_example(env_file):
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    example = parse_env_file(ROOT / "env.example")
    assert used - set(example) == set(), "add these to env.example"
    unused = set(example) - used
    assert unused == set(), f"env.example keys that docker-compose.yaml does not use: {unused}"


def test_env_example_holds_only_placeholders():
    example = parse_env_file(ROOT / "env.example")
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|FERNET")
    for key, value in example.items():
        if secret.search(key):
            assert value == "change-me", f"env.example: {key} must be the placeholder change-me"


def test_make_env_writes_fresh_secrets_and_uid(env_file, tmp_path):
    make_env = load_script("make_env")
    values = parse_env_file(env_file)
    assert "change-me" not in values.values()
    assert int(values["AIRFLOW_UID"]) > 0
    assert (env_file.stat().st_mode & 0o777) == 0o600
    other = tmp_path / ".env"
    make_env.main(["--output", str(other)])
    again = parse_env_file(other)
    assert values["POSTGRES_PASSWORD"] != again["POSTGRES_PASSWORD"]
    other.write_text("KEEP=1\n")
    make_env.main(["--output", str(other)])
    assert other.read_text() == "KEEP=1\n", "an existing .env is kept without --force"
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"])  # a valid Fernet key


def compose_defaults() -> dict[str, str]:
    """VARIABLE -> default of each `${VARIABLE:-default}` in docker-compose.yaml."""
    found = re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):-([^}]*)\}", COMPOSE_FILE.read_text())
    defaults = dict(found)
    assert len(defaults) == len(set(found)), "one variable, two defaults"
    return defaults


def test_env_example_holds_the_compose_defaults():
    example = parse_env_file(ROOT / "env.example")
    for variable, default in compose_defaults().items():
        assert example[variable] == default, f"env.example {variable} differs from the default"


def test_public_images_are_variables_defaulting_to_official_images(raw_compose):
    for name, service in raw_compose["services"].items():
        if "build" in service:
            continue
        match = re.fullmatch(r"\$\{([A-Z]+_IMAGE):-([^}]+)\}", service["image"])
        assert match, f"{name}: image must be ${{<NAME>_IMAGE:-<official image>}}"
        assert not match.group(2).startswith("heart-mlops"), f"{name}: default is a stand-in"


def test_dockerfile_base_images_are_the_compose_build_args(raw_compose):
    defaults = compose_defaults()
    for dockerfile in BUILT.values():
        args = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", (ROOT / dockerfile).read_text(), re.M))
        assert args == {key: defaults[key] for key in ("PYTHON_IMAGE", "UV_IMAGE")}, dockerfile
    for name, service in raw_compose["services"].items():
        if "build" in service:
            assert set(service["build"]["args"]) == {"PYTHON_IMAGE", "UV_IMAGE"}, name


def test_training_defaults_are_the_settings_defaults():
    from heart_mlops.settings import Settings

    training = {k: v for k, v in compose_defaults().items() if k.startswith("HEART_MLOPS_")}
    assert training, "the Airflow workers' training settings are missing"
    for variable, default in training.items():
        field = Settings.model_fields[variable.removeprefix("HEART_MLOPS_").lower()]
        assert str(field.default) == default, variable
