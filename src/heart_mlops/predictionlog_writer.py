"""The process that writes one API worker's spool entries to the prediction log's database.

api/spool.py starts one per worker (`python -m heart_mlops.predictionlog_writer`): decoding the
entries, building the records and the database inserts run here, in a process of their own,
so they never hold the serving interpreter's GIL (a 1000-row batch costs the database writer
several times what answering it costs; in the worker's own thread it took the GIL from the
event loop half the time). It runs at a lower CPU priority (nice +10): where the serving
process needs every core, the spool holds what the writer has not yet written, and the writer
catches up when there is CPU to spare.

Protocol: one JSON line each way on stdin/stdout. First line in: {"url": SQLAlchemy URL};
out, once its imports are done (seconds: the worker's thread writes by itself until then):
{"ready": true}. Then, per request, {"path": spool file, "start": byte offset, "end": byte
offset}: the complete lines of the file's bytes [start, end) are inserted in one transaction
(`write_range`) -> {"rows": records sent, "consumed": bytes of the complete lines}, or
{"error": "Type: message"} when the database failed (nothing consumed). The process exits at
the end of its input (its worker closed the pipe or died); it ignores SIGINT and SIGTERM,
which its worker answers by draining its spool through it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import orjson

from heart_mlops import predictionlog

log = logging.getLogger(__name__)
_MALFORMED = (KeyError, TypeError, ValueError, IndexError)
NICENESS = 10  # added to the worker's: the CPU goes to serving first


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of `data` and the length they span (a partial last line waits)."""
    end = data.rfind(b"\n") + 1
    return (data[:end].splitlines() if end else []), end


def records_of_lines(lines: list[bytes], dialect: str) -> list[tuple]:
    """The records of spool lines (predictionlog.rows_of_entries), all at once; an unreadable
    line is logged and skipped (it cannot become readable by waiting)."""
    entries = []
    for line in lines:
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            log.error("prediction log: a spool line is not JSON, skipped: %s", exc)
    try:
        return predictionlog.rows_of_entries(entries, dialect)
    except _MALFORMED:
        rows = []
        for entry in entries:  # find the bad one
            try:
                rows += predictionlog.rows_of_entries([entry], dialect)
            except _MALFORMED as exc:
                log.error("prediction log: a spool entry is malformed, skipped: %r", exc)
        return rows


def write_range(engine, path: str, start: int, end: int) -> tuple[int, int]:
    """Insert the complete lines of spool file `path`'s bytes [start, end) in one transaction.
    -> (records sent, bytes of the complete lines); (0, 0) when the file is gone. Raises what
    the database driver raises."""
    try:
        with open(path, "rb") as spool:
            spool.seek(start)
            data = spool.read(end - start)
    except FileNotFoundError:  # another worker replayed it meanwhile
        return 0, 0
    lines, consumed = complete_lines(data)
    rows = records_of_lines(lines, engine.dialect.name)
    predictionlog.insert_rows(engine, rows)
    return len(rows), consumed


def main() -> None:
    """Serve write requests from stdin until it ends (see the module's docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    engine = predictionlog.create_log_engine(orjson.loads(requests.readline())["url"])
    replies.write(b'{"ready":true}\n')
    replies.flush()
    for line in requests:
        request = orjson.loads(line)
        try:
            rows, consumed = write_range(engine, request["path"], request["start"], request["end"])
            reply = {"rows": rows, "consumed": consumed}
        except Exception as exc:  # the database is down or refuses: the worker retries
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(orjson.dumps(reply, option=orjson.OPT_APPEND_NEWLINE))
        replies.flush()
    engine.dispose()


if __name__ == "__main__":
    main()
