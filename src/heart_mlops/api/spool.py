"""Each worker's write-ahead spool of answered predictions, and the thread that moves it to the
prediction log's database.

Files, in the spool folder, per worker (`<stem>` = `spool-<pid>-<random>`):
- `<stem>.jsonl`: one JSON line per answered request (an *entry*: ids, time received, the rows
  (`xb`: their float64 bytes in base64, two to three times cheaper to encode than JSON
  numbers), probabilities, decisions, threshold, model, role, worker, latency), appended with
  one `write` before the answer is sent: in the kernel's hands, it survives the worker's
  death; fsync'd in batches by the writer thread (so also a crash of the machine, up to the
  last batch).
- `<stem>.pos`: the byte offset up to which the entries are in the database.
- `<stem>.lock`: held (flock) by the worker while it lives; created and locked before the
  `.jsonl` exists, so a spool whose lock can be taken belongs to a dead worker.

The writer thread fsyncs its own spool, has the entries past `.pos` inserted (predictionlog:
idempotent on (request_id, role)) by the worker's writer process (predictionlog_writer:
decoding and inserts off this interpreter's GIL; the thread writes by itself while that
process starts or after it died), then advances `.pos`; when it has caught up it empties the
spool. A database outage only grows the spool. At start and every minute it replays the spools
of dead workers. `close` (the app's shutdown, on SIGTERM) drains it; what the database did not
take stays in the spool for the next worker.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from heart_mlops import predictionlog, predictionlog_writer
from heart_mlops.api import metrics
from heart_mlops.api.model_holder import _REGISTRY_LOCK, redact

log = logging.getLogger(__name__)

CYCLE_SECONDS = 0.5  # how often the writer looks at its spool: a row is written within ~1 s
REPLAY_SECONDS = 60.0  # how often it looks for spools of dead workers
MAX_READ_BYTES = 4 << 20  # spool bytes written to the database per transaction
_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def correlation_id(value: str | None) -> str | None:
    """The client's X-Request-ID kept as a correlation id when it is a sane token (1 to 128
    characters of letters, digits and ._:@/+=-), else None (never refused)."""
    return value if value is not None and _CORRELATION_ID.fullmatch(value) else None


class RequestIds:
    """Server-made request ids, one per answered row: a random prefix drawn in this process
    (unique across workers and restarts) and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = 0

    def take(self, count: int) -> list[str]:
        """`count` new ids (strings of 26 hex digits)."""
        start, self._next = self._next, self._next + count
        prefix = self._prefix
        return [f"{prefix}{n:010x}" for n in range(start, start + count)]


class NoLog:
    """The log switched off (HEART_MLOPS_PREDICTION_LOG_ENABLED=false): ids, no records."""

    enabled = False

    def __init__(self) -> None:
        self.ids = RequestIds()

    def append(self, *args, **kwargs) -> None:
        """Nothing is logged."""

    def start(self) -> None:
        """Nothing to start."""

    def close(self, timeout: float = 0.0) -> bool:
        """Nothing to drain. -> True"""
        return True

    def spooled(self, request_id: str) -> bool:
        """Nothing is spooled. -> False"""
        return False


class _SpoolFiles:
    """The three files of one spool (see the module's docstring)."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.jsonl = directory / f"{stem}.jsonl"
        self.pos = directory / f"{stem}.pos"
        self.lock = directory / f"{stem}.lock"

    def read_pos(self) -> int:
        try:
            return int(self.pos.read_bytes().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def remove(self) -> None:
        """Remove the spool, its data last: a crash in between leaves a spool to replay."""
        for path in (self.pos, self.lock, self.jsonl):
            path.unlink(missing_ok=True)


class WriterFailed(Exception):
    """The writer process could not write (its reply's error), or it exited."""


class _WriterProcess:
    """The worker's writer process (predictionlog_writer): started with the worker, again
    after it exited (at most every RESTART_SECONDS); `write` blocks the calling thread only
    (no GIL held while it waits)."""

    RESTART_SECONDS = 10.0

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._process: subprocess.Popen | None = None
        self._ready = False
        self._started = -self.RESTART_SECONDS

    def start(self) -> None:
        """Launch the process unless it runs (or was launched under RESTART_SECONDS ago)."""
        running = self._process is not None and self._process.poll() is None
        if running or time.monotonic() - self._started < self.RESTART_SECONDS:
            return
        self.close()
        command = [sys.executable, "-m", "heart_mlops.predictionlog_writer"]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._started = time.monotonic()
        self._send({"url": self.database_url})  # on the pipe, not the command line: no secret in ps

    def ready(self) -> bool:
        """Whether the process runs and has said it is ready (its imports take seconds);
        (re)launches it when it is not running."""
        if self._process is None or self._process.poll() is not None:
            self._ready = False
            self.start()
            return False
        if not self._ready and select.select([self._process.stdout], [], [], 0)[0]:
            self._ready = self._process.stdout.readline() == b'{"ready":true}\n'
        return self._ready

    def _send(self, message: dict) -> None:
        self._process.stdin.write(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))
        self._process.stdin.flush()

    def write(self, path: Path, start: int, end: int) -> tuple[int, int]:
        """Insert the complete lines of `path`'s bytes [start, end). -> (records sent, bytes
        consumed). Raises WriterFailed."""
        self.start()
        try:
            self._send({"path": str(path), "start": start, "end": end})
            reply = self._process.stdout.readline()
        except OSError as exc:  # the process is gone: a new one at the next call
            self._ready = False
            raise WriterFailed(f"the writer process failed: {exc}") from exc
        if not reply:
            self._ready = False
            raise WriterFailed(f"the writer process exited ({self._process.wait()})")
        answer = orjson.loads(reply)
        if "error" in answer:
            raise WriterFailed(answer["error"])
        return answer["rows"], answer["consumed"]

    def close(self, timeout: float = 5.0) -> None:
        """End its input and wait for it to exit (killed after `timeout` seconds)."""
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._process, self._ready = None, False


class PredictionLog:
    """This worker's spool and writer thread. `append` is the hot path's only cost; the
    thread starts with `start` and is drained by `close`."""

    enabled = True

    def __init__(self, directory: Path, database_url: str) -> None:
        self.directory = directory
        self.database_url = database_url
        self.ids = RequestIds()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._files = _SpoolFiles(directory, f"spool-{os.getpid()}-{secrets.token_hex(4)}")
        self._append_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = self._lock_fd = self._pos_fd = -1
        self._pos = self._synced = 0
        self._appended = self._written = 0  # rows, this worker's own spool
        self._engine = None
        self._writer = _WriterProcess(database_url)

    def start(self) -> None:
        """Create this worker's spool (lock first) and start the writer thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._files.lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._fd = os.open(self._files.jsonl, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._pos_fd = os.open(self._files.pos, os.O_RDWR | os.O_CREAT, 0o600)
        self._engine = predictionlog.create_log_engine(self.database_url)
        self._writer.start()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(
        self,
        ids: list[str],
        rows: np.ndarray,
        probabilities: list[float],
        predictions: list[int],
        model,
        *,
        role: str,
        received: float,
        latency_ms: float,
        correlation: str | None = None,
    ) -> None:
        """Spool one answered request: `ids` and `rows` (n, 13, as received, NaN = missing),
        P(disease) and decisions of `model` (a LoadedModel) in `role`, `received` (epoch
        seconds), the latency. One write to the spool file; no fsync here."""
        matrix = np.ascontiguousarray(rows, dtype="<f8")
        entry = {
            "ids": ids,
            "t": received,
            "xb": base64.b64encode(matrix).decode("ascii"),
            "p": probabilities,
            "y": predictions,
            "thr": model.threshold,
            "name": model.info["model_name"],
            "v": model.version,
            "role": role,
            "w": self.worker,
            "ms": latency_ms,
            "cid": correlation,
        }
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        with self._append_lock:
            os.write(self._fd, line)
            self._appended += len(ids)

    @property
    def engine(self):
        """The SQLAlchemy Engine of the log's database (None before `start`)."""
        return self._engine

    def spooled(self, request_id: str) -> bool:
        """Whether `request_id` is in a spool of this host (answered, not yet in the
        database)."""
        needle = f'"{request_id}"'.encode()
        for path in self.directory.glob("spool-*.jsonl"):
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as spool:
                if needle in spool.read():
                    return True
        return False

    def close(self, timeout: float = 10.0) -> bool:
        """Stop the writer after it drained the spool (at most `timeout` seconds). -> True when
        everything reached the database (the spool is removed); else the spool stays for the
        next worker to replay."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout)
        drained = not self._thread.is_alive() and self._pos == os.fstat(self._fd).st_size
        if drained:
            self._files.remove()
        for fd in (self._fd, self._pos_fd, self._lock_fd):
            os.close(fd)  # the lock goes with its descriptor
        self._thread = None
        self._writer.close()
        if self._engine is not None:
            self._engine.dispose()
        return drained

    # the writer thread

    def _run(self) -> None:
        next_replay, failures = 0.0, 0
        while True:
            stopping = self._stop.is_set()
            self._writer.ready()  # notes that it is ready; launches it again if it died
            try:
                if time.monotonic() >= next_replay:
                    self._ensure_schema()
                    self._replay_dead()
                    next_replay = time.monotonic() + REPLAY_SECONDS
                self._move_own()
                failures = 0
            except Exception as exc:  # the database is down or refuses: the spool grows
                failures += 1
                metrics.PREDICTION_LOG_WRITE_ERRORS.inc()
                if failures == 1 or failures % 50 == 0:
                    log.warning(
                        "prediction log: database write failed (%d in a row), the spool keeps "
                        "the records: %s",
                        failures,
                        redact(f"{type(exc).__name__}: {exc}"),
                    )
            metrics.PREDICTION_LOG_SPOOLED.set(self._appended - self._written)
            if stopping:
                return
            self._stop.wait(CYCLE_SECONDS if failures == 0 else min(1.0, 0.2 * failures))

    _schema_ready = False

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._engine.connect():  # an unreachable database fails here, outside the lock
            pass
        # Alembic's migration context is process-wide, and MLflow runs Alembic too when it
        # creates its store: one migration at a time in this process
        with _REGISTRY_LOCK:
            predictionlog.migrate(self._engine)
        self._schema_ready = True

    def _move_own(self) -> None:
        """fsync the spool, write what is past `.pos`, advance it; empty the spool once all of
        it is written."""
        size = os.fstat(self._fd).st_size
        if size > self._synced:
            os.fsync(self._fd)
            self._synced = size
        while self._pos < size:
            rows, length = self._write(self._files.jsonl, self._pos, size)
            if not length:
                break
            self._written += rows
            self._pos += length
            os.pwrite(self._pos_fd, b"%20d" % self._pos, 0)
        if self._pos and self._pos == size:
            with self._append_lock:
                if os.fstat(self._fd).st_size == self._pos:
                    # .pos first: a crash in between replays entries the database ignores
                    os.pwrite(self._pos_fd, b"%20d" % 0, 0)
                    os.ftruncate(self._fd, 0)
                    self._pos = self._synced = 0

    def _write(self, path: Path, start: int, end: int) -> tuple[int, int]:
        """Insert the complete lines of `path` from `start`, at most MAX_READ_BYTES of them,
        before `end`: by the writer process, or by this thread while that is not ready.
        -> (rows, bytes consumed)."""
        end = min(end, start + MAX_READ_BYTES)
        if self._writer.ready():
            rows, length = self._writer.write(path, start, end)
        else:
            rows, length = predictionlog_writer.write_range(self._engine, str(path), start, end)
        metrics.PREDICTION_LOG_WRITTEN.inc(rows)
        return rows, length

    def _replay_dead(self) -> None:
        """Write the spools of dead workers (their lock free) and remove them."""
        for jsonl in sorted(self.directory.glob("spool-*.jsonl")):
            if jsonl == self._files.jsonl:
                continue
            files = _SpoolFiles(self.directory, jsonl.stem)
            fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its worker lives
                os.close(fd)
                continue
            try:
                self._replay(files)
            finally:
                os.close(fd)

    def _replay(self, files: _SpoolFiles) -> None:
        try:
            size = files.jsonl.stat().st_size
        except FileNotFoundError:  # another worker replayed it meanwhile
            return
        start = position = min(files.read_pos(), size)
        replayed = 0
        while position < size:
            rows, length = self._write(files.jsonl, position, size)
            if not length:  # a partial last line: its worker died writing it
                break
            metrics.PREDICTION_LOG_REPLAYED.inc(rows)
            replayed, position = replayed + rows, position + length
        if position > start:
            log.info("prediction log: replayed %d rows of %s", replayed, files.jsonl.name)
        files.remove()
