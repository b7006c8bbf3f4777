"""The stacks around the ML package, for development, tests and benchmarks.

- `services`: the environment's executables, the Airflow environment, the DAG run once without
  a scheduler (`heart-mlops pipeline`), the `mlflow server` command;
- `processes`: child processes in groups of their own and their strays, port checks, polling;
- `airflow_client`: the few calls of Airflow's REST API, following a DAG run;
- `up`: the embedded stack (`heart-mlops up`, `make run`);
- `stack_env`: the distributed stack's settings (deploy/stack.env.template).

The ML modules never import this package.
"""

from heart_mlops.errors import HeartMlopsError


class StackError(HeartMlopsError):
    """A service of the stack cannot start or answer."""
