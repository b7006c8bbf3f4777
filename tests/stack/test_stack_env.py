"""The Compose stack runs on the settings the Celery integration test proves: both render
deploy/stack.env.template with `stack_env.render`; here the environment Compose really gives each
container (`docker-compose config`, .env interpolated) is compared with the template key by key."""

from __future__ import annotations

from heart_mlops.devstack import stack_env

# where each service of the template lives in the Compose network
SERVICE_ADDRESSES = {
    "AIRFLOW_API_HOST": "airflow-apiserver",
    "AIRFLOW_API_PORT": "8080",
    "POSTGRES_HOST": "postgres",
    "POSTGRES_PORT": "5432",
    "BROKER_HOST": "valkey",
    "BROKER_PORT": "6379",
    "MLFLOW_HOST": "mlflow",
    "MLFLOW_PORT": "5000",
    "S3_HOST": "s3",
    "S3_PORT": "9000",
}
SECRETS_FROM_ENV = (
    "AIRFLOW_DB_NAME",
    "AIRFLOW_DB_USER",
    "AIRFLOW_DB_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_SECRET_KEY",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
)
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def expected(env_values: dict[str, str]) -> dict[str, str]:
    return stack_env.render(
        {**SERVICE_ADDRESSES, **{name: env_values[name] for name in SECRETS_FROM_ENV}}
    )


def test_template_placeholders_are_all_accounted_for():
    assert stack_env.placeholders() == set(SERVICE_ADDRESSES) | set(SECRETS_FROM_ENV)


def test_addresses_are_compose_services_and_their_ports(resolved):
    services = resolved["services"]
    for key, value in SERVICE_ADDRESSES.items():
        if key.endswith("_HOST"):
            assert value in services, f"{key}={value} is not a service of docker-compose.yaml"
    assert "--port" in services["airflow-apiserver"]["command"]
    assert services["airflow-apiserver"]["command"][-1] == SERVICE_ADDRESSES["AIRFLOW_API_PORT"]
    assert services["s3"]["command"][-1] == ":" + SERVICE_ADDRESSES["S3_PORT"]


def test_every_airflow_container_gets_the_template_key_by_key(resolved, env_values):
    wanted = expected(env_values)
    for name in AIRFLOW_SERVICES:
        environment = resolved["services"][name]["environment"]
        for key, value in wanted.items():
            assert key in environment, f"{name}: {key} of the template is missing"
            assert environment[key] == value, f"{name}: {key} differs from the template"


def test_other_services_agree_on_every_template_key_they_set(resolved, env_values):
    wanted = expected(env_values)
    checked = 0
    for name, service in resolved["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key in wanted:
                assert value == wanted[key], f"{name}: {key} differs from the template"
                checked += 1
    # mlflow and create-buckets reach S3; api and mlflow-users reach MLflow
    for name, keys in {
        "mlflow": (
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "MLFLOW_S3_ENDPOINT_URL",
            "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE",
        ),
        "create-buckets": ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        "api": ("MLFLOW_TRACKING_URI",),
        "mlflow-users": ("MLFLOW_TRACKING_URI",),
    }.items():
        assert set(keys) <= set(resolved["services"][name]["environment"]), name
    assert checked > len(wanted)


def test_secrets_reach_the_services_that_own_them(resolved, env_values):
    services = resolved["services"]
    postgres = services["postgres"]["environment"]
    for prefix in ("AIRFLOW", "MLFLOW", "PREDICTION_LOG"):
        for part in ("NAME", "USER", "PASSWORD"):
            key = f"{prefix}_DB_{part}"
            assert postgres[key] == env_values[key], key
            assert services["postgres-databases"]["environment"][key] == env_values[key], key
    mlflow_db = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert mlflow_db == (
        f"postgresql+psycopg2://{env_values['MLFLOW_DB_USER']}:"
        f"{env_values['MLFLOW_DB_PASSWORD']}@postgres:5432/"
        f"{env_values['MLFLOW_DB_NAME']}"
    )
    assert services["s3"]["environment"]["RCLONE_AUTH_KEY"] == (
        f'"{env_values["S3_ACCESS_KEY"]},{env_values["S3_SECRET_KEY"]}"'
    )
    api = services["api"]["environment"]
    assert api["HEART_MLOPS_PREDICTION_LOG_URI"] == (
        f"postgresql+psycopg2://{env_values['PREDICTION_LOG_DB_USER']}:"
        f"{env_values['PREDICTION_LOG_DB_PASSWORD']}@postgres:5432/"
        f"{env_values['PREDICTION_LOG_DB_NAME']}"
    )
    assert api["HEART_MLOPS_API_TOKEN"] == env_values["HEART_MLOPS_API_TOKEN"]
    assert api["MLFLOW_TRACKING_USERNAME"] == env_values["MLFLOW_READER_USERNAME"]
    assert (
        services["mlflow-users"]["environment"]["MLFLOW_READER_PASSWORD"]
        == (api["MLFLOW_TRACKING_PASSWORD"])
    )
    worker = services["airflow-worker"]["environment"]
    assert (
        worker["MLFLOW_TRACKING_PASSWORD"]
        == (services["mlflow"]["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"])
    )
