"""The prediction log: its tables, its migrations, idempotent writes, outcomes and export.

The log holds patient data. No HTTP route reads it; whoever can reach its database can
(`heart-mlops log export`). One record per answered row and model role, keyed by
(`request_id`, `role`): the API's workers write them from their spools (api/spool.py) with
`insert_rows`, which ignores a key already written, so replaying a spool writes nothing
twice. Outcomes (POST /feedback) live in a table of their own, joined on `request_id`.

The schema is created and upgraded by Alembic (`migrate`, under a lock: one process migrates,
the others wait and find it done). Times are stored in UTC.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from heart_mlops.errors import HeartMlopsError
from heart_mlops.feature_table import FEATURES, missing_as_nan

ROLES = ("champion", "challenger")
USED_SUFFIX = "_used"  # a feature's value as the model used it (missing codes as null)
MIGRATIONS = Path(__file__).with_name("predictionlog_migrations")
VERSION_TABLE = "prediction_log_alembic_version"
_MIGRATION_LOCK_KEY = zlib.crc32(b"heart-mlops prediction log migrations")

metadata = sa.MetaData()
PREDICTIONS = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("correlation_id", sa.String(128)),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    *(sa.Column(name, sa.Float) for name in FEATURES),
    *(sa.Column(name + USED_SUFFIX, sa.Float) for name in FEATURES),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("prediction", sa.SmallInteger, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("worker", sa.String(128), nullable=False),
    sa.Column("latency_ms", sa.Float),
)
OUTCOMES = sa.Table(
    "prediction_outcome",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

# --- what monitoring writes (heart-mlops monitor): per window and served version, per feature;
# the only tables Grafana reads (monitoring/grafana/dashboards/model-health.json)
LIVE_COLUMNS = ("roc_auc", "brier", "calibration_intercept", "calibration_slope")


def _with_interval(prefix: str, name: str) -> list[sa.Column]:
    return [sa.Column(f"{prefix}{name}{part}", sa.Float) for part in ("", "_low", "_high")]


MONITORING_WINDOWS = sa.Table(
    "monitoring_window",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("monitored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),  # "" for an empty window
    sa.Column("summarised", sa.Boolean, nullable=False),  # the version the summary is about
    sa.Column("predictions", sa.Integer, nullable=False),  # champion rows of this version
    sa.Column("outcomes", sa.Integer, nullable=False),  # of them with an outcome fed back
    sa.Column("positive_rate", sa.Float),  # share predicted disease, all rows
    sa.Column("drift_share", sa.Float),
    sa.Column("dataset_drift", sa.Boolean, nullable=False),
    sa.Column("drift_reason", sa.Text, nullable=False),
    sa.Column("drifted_features", sa.Text, nullable=False),  # comma-separated, most drifted first
    *(column for name in LIVE_COLUMNS for column in _with_interval("live_", name)),
    *(sa.Column(f"holdout_{name}", sa.Float) for name in LIVE_COLUMNS),
    sa.Column("challenger_version", sa.String(32)),
    sa.Column("shadow_rows", sa.Integer),  # rows both models scored
    sa.Column("agreement", sa.Float),  # share of them with the same decision
    *_with_interval("challenger_", "roc_auc"),
    *_with_interval("challenger_", "brier"),
    sa.Column("triggered", sa.Boolean, nullable=False),
    sa.Column("trigger_reason", sa.Text, nullable=False),
    sa.Column("report_uri", sa.Text),
    sa.Column("summary_uri", sa.Text),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.UniqueConstraint("window_start", "window_end", "model_version", name="uq_monitoring_window"),
)
MONITORING_FEATURES = sa.Table(
    "monitoring_feature",
    metadata,
    sa.Column(
        "window_id",
        sa.Integer,
        sa.ForeignKey("monitoring_window.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("feature", sa.String(32), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("method", sa.String(64)),  # Evidently's test
    sa.Column("drift_score", sa.Float),  # its score (a p-value for K-S, chi-square, Z)
    sa.Column("value_drifted", sa.Boolean, nullable=False),
    sa.Column("missing_share", sa.Float, nullable=False),
    sa.Column("reference_missing_share", sa.Float, nullable=False),
    sa.Column("missing_p_value", sa.Float, nullable=False),  # Fisher's exact test
    sa.Column("missing_drifted", sa.Boolean, nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
)


class OutcomeConflict(HeartMlopsError):
    """An outcome is already recorded for this request id (send `replace` to overwrite)."""


def create_log_engine(url: str) -> sa.Engine:
    """An Engine on the log's database (`url`: a SQLAlchemy URL of SQLite or PostgreSQL).
    Connections are checked before use (a restarted server is found again) and a PostgreSQL
    connect gives up after 3 s, so an outage costs a writer seconds, not minutes; SQLite runs
    in WAL mode."""
    options: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 3}
    elif url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 30}
        engine = sa.create_engine(url, **options)
        sa.event.listen(engine, "connect", _sqlite_wal)
        return engine
    return sa.create_engine(url, **options)


def _sqlite_wal(connection, _record) -> None:
    """SQLite in WAL mode with one fsync per checkpoint, not per commit: readers (export,
    feedback) do not block the writers, and the spools already make the records durable."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextlib.contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection holding the migration lock: PostgreSQL's advisory lock, or for SQLite an
    exclusive lock on a file next to the database (its processes share a host)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                )
                connection.commit()
            return
        database = engine.url.database
        if not database or database == ":memory:":
            yield connection
            return
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield connection


def migrate(engine: sa.Engine) -> None:
    """Bring the log's schema to the newest revision (Alembic, predictionlog_migrations/), under
    a lock: concurrent callers wait, then find nothing to do. Raises what SQLAlchemy raises when
    the database cannot be reached."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def _insert(engine: sa.Engine, table: sa.Table):
    """INSERT into `table` that skips a row whose key exists (both dialects)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


_VALUE_COLUMNS = (*FEATURES, *(name + USED_SUFFIX for name in FEATURES))
RECORD_COLUMNS = (
    "request_id",
    "role",
    "correlation_id",
    "received_at",
    *_VALUE_COLUMNS,
    "probability",
    "prediction",
    "threshold",
    "model_name",
    "model_version",
    "worker",
    "latency_ms",
)
_COLUMN_LIST = ", ".join(RECORD_COLUMNS)
_SQLITE_INSERT = (
    f"INSERT OR IGNORE INTO prediction_log ({_COLUMN_LIST}) "
    f"VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
)
_POSTGRES_INSERT = (
    f"INSERT INTO prediction_log ({_COLUMN_LIST}) VALUES %s "
    "ON CONFLICT (request_id, role) DO NOTHING"
)
_POSTGRES_INSERT_EACH = _POSTGRES_INSERT.replace(
    "%s", f"({', '.join(['%s'] * len(RECORD_COLUMNS))})"
)


def insert_rows(engine: sa.Engine, rows: list[tuple]) -> int:
    """Write prediction records (tuples in RECORD_COLUMNS order, as `rows_of_entries` makes
        them for this engine) in one transaction; a record whose (request_id, role) is already
        there is skipped. Through the driver's own batch insert (sqlite3 executemany, psycopg 3
    executemany, psycopg2 execute_values): the writer's cost per row is
        what the serving process pays. -> the number of rows sent. Raises HeartMlopsError for a
        database other than SQLite or PostgreSQL, what the driver raises when it fails."""
    if not rows:
        return 0
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise HeartMlopsError(f"the prediction log needs SQLite or PostgreSQL, not {dialect}")
    with engine.begin() as connection:
        raw = connection.connection.driver_connection
        if dialect == "sqlite":
            raw.executemany(_SQLITE_INSERT, rows)
        elif type(raw).__module__.startswith("psycopg2"):
            from psycopg2.extras import execute_values

            with raw.cursor() as cursor:
                execute_values(cursor, _POSTGRES_INSERT, rows, page_size=1000)
        else:  # psycopg 3 (SQLAlchemy's default driver): executemany runs as a pipeline
            with raw.cursor() as cursor:
                cursor.executemany(_POSTGRES_INSERT_EACH, rows)
    return len(rows)


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite (UTC here)


def _entry_rows(entry: dict) -> np.ndarray:
    """The received rows of a spool entry, (n, 13) float64: `xb` (their float64 bytes, little
    endian, in base64) or `x` (lists of numbers or null, as spools before `xb` hold them)."""
    if "xb" in entry:
        values = np.frombuffer(base64.b64decode(entry["xb"], validate=True), dtype="<f8")
    else:
        values = np.array(entry["x"], dtype=float)
    return values.reshape(-1, len(FEATURES))


def rows_of_entries(entries: list[dict], dialect: str) -> list[tuple]:
    """Spool entries (answered requests: see api/spool.py) -> one tuple per row in
    RECORD_COLUMNS order, for `insert_rows` on `dialect` ("sqlite" or "postgresql"). The values
    as used are the received ones with the missing codes as null (data.missing_as_nan).
    Raises KeyError, TypeError or ValueError for an entry that lacks a field or is malformed."""
    if not entries:
        return []
    received = [_entry_rows(entry) for entry in entries]
    request_ids, p, y, constants = [], [], [], []
    for entry, rows in zip(entries, received, strict=True):
        n = len(rows)
        if not len(entry["ids"]) == len(entry["p"]) == len(entry["y"]) == n:
            counts = f"{len(entry['ids'])} ids, {len(entry['p'])} probabilities, {len(entry['y'])}"
            raise ValueError(f"an entry of {n} rows has {counts} decisions")
        at = dt.datetime.fromtimestamp(entry["t"], dt.UTC)
        at = at.strftime(_SQLITE_TIME) if dialect == "sqlite" else at
        head = (entry["role"], entry.get("cid"), at)
        tail = (entry["thr"], entry["name"], entry["v"], entry["w"], entry.get("ms"))
        request_ids += entry["ids"]
        p += entry["p"]
        y += entry["y"]
        constants += [(*head, *tail)] * n
    matrix = np.vstack(received)
    matrix = np.hstack([matrix, missing_as_nan(matrix.copy())])
    values = matrix.astype(object)
    values[np.isnan(matrix)] = None
    role, cid, at, *tail = zip(*constants, strict=True)
    # column by column, then one zip: no Python code per row
    return list(zip(request_ids, role, cid, at, *values.T.tolist(), p, y, *tail, strict=True))


def delete_expired(engine: sa.Engine, retention_days: int, now: dt.datetime | None = None) -> int:
    """Delete the records received more than `retention_days` days before `now` (default: the
    current time), and the outcomes left without a record, in one transaction (for the
    monitoring DAG: HEART_MLOPS_PREDICTION_LOG_RETENTION_DAYS). -> records deleted."""
    cutoff = _bound(engine, (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days))
    kept = sa.select(PREDICTIONS.c.request_id)
    with engine.begin() as connection:
        deleted = connection.execute(
            PREDICTIONS.delete().where(PREDICTIONS.c.received_at < cutoff)
        ).rowcount
        connection.execute(OUTCOMES.delete().where(OUTCOMES.c.request_id.not_in(kept)))
    return deleted


def prediction_exists(engine: sa.Engine, request_id: str) -> bool:
    """Whether the log holds a record of `request_id` (any role)."""
    query = sa.select(PREDICTIONS.c.request_id).where(PREDICTIONS.c.request_id == request_id)
    with engine.connect() as connection:
        return connection.execute(query.limit(1)).first() is not None


def record_outcome(
    engine: sa.Engine,
    request_id: str,
    outcome: int,
    observed_at: dt.datetime,
    *,
    replace: bool = False,
) -> bool:
    """Record the confirmed diagnosis `outcome` (0/1) of `request_id`, observed at
    `observed_at` (aware, or naive UTC). -> True when it replaced an earlier outcome.

    Raises OutcomeConflict when one is recorded and not `replace`."""
    now = dt.datetime.now(dt.UTC)
    row = {"request_id": request_id, "outcome": outcome, "observed_at": observed_at}
    with engine.begin() as connection:
        # RETURNING says whether the row went in: rowcount is -1 here with psycopg 3
        inserted = connection.execute(
            _insert(engine, OUTCOMES)
            .values(row | {"recorded_at": now})
            .returning(OUTCOMES.c.request_id)
        ).first()
        if inserted is not None:
            return False
        if not replace:
            raise OutcomeConflict(
                f'request_id {request_id!r} already has an outcome; send "replace": true '
                "to overwrite it"
            )
        connection.execute(
            OUTCOMES.update()
            .where(OUTCOMES.c.request_id == request_id)
            .values(outcome=outcome, observed_at=observed_at, recorded_at=now)
        )
        return True


EXPORT_COLUMNS = (*RECORD_COLUMNS, "outcome", "observed_at")


@dataclass(frozen=True)
class Window:
    """Which records to read: received in [since, until) (aware or naive UTC; None = open),
    of one role (None = both)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    role: str | None = None


def read_log(engine: sa.Engine, window: Window = Window()):
    """The log joined with outcomes: a DataFrame with EXPORT_COLUMNS, one row per record,
    ordered by received_at then request_id and role; times as aware UTC timestamps, outcome
    null where none was fed back. Raises HeartMlopsError when the database has no log."""
    import pandas as pd

    columns = [PREDICTIONS.c[name] for name in EXPORT_COLUMNS[:-2]]
    query = sa.select(*columns, OUTCOMES.c.outcome, OUTCOMES.c.observed_at).select_from(
        PREDICTIONS.outerjoin(OUTCOMES, OUTCOMES.c.request_id == PREDICTIONS.c.request_id)
    )
    if window.since is not None:
        query = query.where(PREDICTIONS.c.received_at >= _bound(engine, window.since))
    if window.until is not None:
        query = query.where(PREDICTIONS.c.received_at < _bound(engine, window.until))
    if window.role is not None:
        query = query.where(PREDICTIONS.c.role == window.role)
    query = query.order_by(PREDICTIONS.c.received_at, PREDICTIONS.c.request_id, PREDICTIONS.c.role)
    if not sa.inspect(engine).has_table(PREDICTIONS.name):
        where = engine.url.render_as_string(hide_password=True)
        raise HeartMlopsError(f"no prediction log at {where}: no API has written to it yet")
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).fetchall(), columns=list(EXPORT_COLUMNS))
    for name in ("received_at", "observed_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    frame["outcome"] = frame["outcome"].astype("Int64")
    return frame


def as_utc(moment: dt.datetime) -> dt.datetime:
    """`moment` as aware UTC (naive = UTC)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _bound(engine: sa.Engine, moment: dt.datetime) -> dt.datetime:
    """`moment` as the log's database compares it: aware UTC; naive UTC on SQLite, which
    stores times as text without a zone."""
    moment = as_utc(moment)
    return moment.replace(tzinfo=None) if engine.dialect.name == "sqlite" else moment


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time (date, or date and time, `Z` or an offset; no zone = UTC) -> aware
    UTC datetime. Raises ValueError naming the value."""
    try:
        return as_utc(dt.datetime.fromisoformat(value.strip()))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31T14:05:00Z)") from None


def export(engine: sa.Engine, output: Path, window: Window = Window()) -> int:
    """Write `read_log(window)` to `output`: Parquet for .parquet, else CSV (times in ISO 8601
    with their UTC offset). -> rows written. Raises HeartMlopsError for another suffix."""
    frame = read_log(engine, window)
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        frame.to_parquet(output, index=False)
    elif suffix == ".csv":
        for name in ("received_at", "observed_at"):
            frame[name] = frame[name].map(lambda t: None if t is None or t != t else t.isoformat())
        frame.to_csv(output, index=False)
    else:
        raise HeartMlopsError(f"{output}: write .parquet or .csv, not '{suffix or 'no suffix'}'")
    return len(frame)


COMPARED = ("roc_auc", "brier", "accuracy")


def _figures_with_accuracy(threshold: float):
    """evaluation.figures_at(threshold) with the accuracy at `threshold` added."""
    from heart_mlops.evaluation import figures_at

    base = figures_at(threshold)

    def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return base(y, p) | {"accuracy": float(np.mean((p >= threshold) == (y == 1)))}

    return figures


def compare(
    engine: sa.Engine, window: Window = Window(), *, samples: int = 1000, seed: int = 42
) -> list[dict]:
    """Champion and challenger on the rows both scored that have an outcome, one entry per
    (champion version, challenger version) pair: {"champion_version", "challenger_version",
    "rows", "agreement" (share of rows with the same decision), "champion": {figure: {"value",
    "low", "high"}}, "challenger": {...}} for ROC-AUC, Brier score and accuracy, each model
    at its own threshold, with bootstrap 95 % intervals over the rows (evaluation.bootstrap,
    `samples` resamples, `seed`). Empty when no such rows. Raises HeartMlopsError when the
    database has no log."""
    from heart_mlops.evaluation import bootstrap

    frame = read_log(engine, Window(window.since, window.until, None))
    frame = frame[frame["outcome"].notna()]
    keys = ["request_id", "outcome"]
    both = frame[frame["role"] == "champion"].merge(
        frame[frame["role"] == "challenger"], on=keys, suffixes=("_champion", "_challenger")
    )
    results = []
    pairs = both.groupby(["model_version_champion", "model_version_challenger"], sort=True)
    for (champion, challenger), rows in pairs:
        y = rows["outcome"].to_numpy(dtype=int)
        entry = {
            "champion_version": champion,
            "challenger_version": challenger,
            "rows": len(rows),
            "agreement": float(
                np.mean(rows["prediction_champion"] == rows["prediction_challenger"])
            ),
        }
        for role in ROLES:
            figures = _figures_with_accuracy(float(rows[f"threshold_{role}"].iloc[0]))
            p = rows[f"probability_{role}"].to_numpy(dtype=float)
            found = bootstrap(figures, y, p, samples=samples, seed=seed)
            entry[role] = {name: found[name] for name in COMPARED}
        results.append(entry)
    return results


def write_monitoring(engine: sa.Engine, windows: list[dict], features: list[list[dict]]) -> None:
    """Write one monitoring run: `windows` (MONITORING_WINDOWS rows without id, one per served
    version) and for each its `features` (MONITORING_FEATURES rows without window_id), in one
    transaction. A window already written (same start, end and version: a rerun) is replaced."""
    table = MONITORING_WINDOWS
    with engine.begin() as connection:
        for window, rows in zip(windows, features, strict=True):
            times = {
                k: _bound(engine, window[k]) for k in ("window_start", "window_end", "monitored_at")
            }
            same = (
                (table.c.window_start == times["window_start"])
                & (table.c.window_end == times["window_end"])
                & (table.c.model_version == window["model_version"])
            )
            old = sa.select(table.c.id).where(same).scalar_subquery()
            connection.execute(
                MONITORING_FEATURES.delete().where(MONITORING_FEATURES.c.window_id == old)
            )
            connection.execute(table.delete().where(same))
            inserted = connection.execute(table.insert().values(window | times))
            new_id = inserted.inserted_primary_key[0]
            if rows:
                end = times["window_end"]
                connection.execute(
                    MONITORING_FEATURES.insert(),
                    [row | {"window_id": new_id, "window_end": end} for row in rows],
                )


def last_trigger(
    engine: sa.Engine, model_name: str, other_than: tuple[dt.datetime, dt.datetime]
) -> dt.datetime | None:
    """When monitoring last asked to retrain `model_name` (monitored_at of the latest triggered
    window, aware UTC), leaving out the window `other_than` (start, end): a rerun of a window
    decides as its first run did. None when never."""
    table = MONITORING_WINDOWS
    start, end = (_bound(engine, moment) for moment in other_than)
    query = sa.select(sa.func.max(table.c.monitored_at)).where(
        table.c.triggered.is_(True),
        table.c.model_name == model_name,
        sa.not_((table.c.window_start == start) & (table.c.window_end == end)),
    )
    with engine.connect() as connection:
        found = connection.execute(query).scalar()
    if found is None:
        return None
    if isinstance(found, str):  # SQLite returns an aggregate's time as text
        found = dt.datetime.fromisoformat(found)
    return as_utc(found)
