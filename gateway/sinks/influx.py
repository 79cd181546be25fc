"""The InfluxDB sink: meter telemetry from the outbox, written to an InfluxDB v2 endpoint.

One thread reads the outbox with the sink's own cursor, turns rows into points
(`influx_mapping`), and writes them in batches of up to `batch_size`, at the latest
`flush_interval_s` after the first row of a batch was read.  A row is acknowledged to
the outbox only once the write that holds it succeeded.

A failed write keeps its batch and is retried, the same batch, with exponential
backoff and jitter for as long as it takes (the delay stays at its maximum however long
the outage): the outbox keeps every unacknowledged row, so an outage loses nothing (up
to the outbox's bound) and the MQTT uplink, a consumer of its own, is not held up.

The server's answers are taken at their word:

- 400 or 422: the server has refused those points themselves (InfluxDB stores the valid
  points of such a batch and names the others); sending them again cannot succeed, so
  they are counted as refused and not retried.
- 413 (request too large): the request is split in halves until the server takes it,
  and later requests stay at the size that worked; a single point that is still too
  large is refused like a 400.
- 429 or 503 with `Retry-After`: the next attempt waits that long (at most an hour),
  instead of the backoff's delay.

Each kind of failure is logged once until a write succeeds again, whatever figures
(ports, timeouts) its text carries.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from gateway.sdk.backoff import Backoff
from gateway.sdk.model import Priority
from gateway.sinks.influx_mapping import PRECISION, InvalidPayload, to_points
from gateway.sinks.settings import InfluxConfig
from gateway.storage.outbox import Consumer, Outbox, OutboxItem, OutboxReader, Row

__all__ = ["CONSUMER", "InfluxSink"]


log = logging.getLogger(__name__)

CONSUMER = "influx"


def meter_telemetry(item: OutboxItem) -> bool:
    """Accepts meter readings only: events and other kinds' telemetry go to MQTT alone."""
    return item.channel == "telemetry" and item.device_kind == "meter"


_REFUSED = frozenset({400, 422})  # the points themselves are bad: never accepted on retry
_TOO_LARGE = 413
_ADDRESS = re.compile(r" object at 0x[0-9a-f]+")
_FIGURES = re.compile(r"\d+(\.\d+)?")
MAX_RETRY_AFTER_S = 3600.0  # a server asking for more is probably wrong; retry in an hour


@dataclass
class _Batch:
    """Rows read and not yet acknowledged, with their points."""

    ids: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    written: int = 0  # lines[:written] are stored: a retry sends the rest only
    started: float = 0.0  # monotonic time the first row was read
    oldest_created: float | None = None  # wall time the oldest row was stored

    def add(self, row: Row, lines: list[str]) -> None:
        if not self.ids:
            self.started = time.monotonic()
            self.oldest_created = row.created
        self.ids.append(row.id)
        self.lines.extend(lines)

    def __len__(self) -> int:
        return len(self.ids)


class _TokenUnreadable(Exception):
    """The token's file or environment variable cannot be read (yet)."""


@dataclass(frozen=True, slots=True)
class _Retry:
    """A write that failed for now; `after` is the server's Retry-After, if it gave one."""

    after: float | None = None


class InfluxSink:
    """Writes meter telemetry from the outbox to InfluxDB; see the module docstring."""

    name = CONSUMER

    @property
    def batch_s(self) -> float:
        return self.cfg.flush_interval_s

    def __init__(self, cfg: InfluxConfig) -> None:
        self.cfg = cfg
        self._outbox: Outbox | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stop_deadline = math.inf
        self._client: InfluxDBClient | None = None
        self._api: WriteApi | None = None
        self._batch = _Batch()
        self._last_error = ""
        self._last_cause = ""  # what a failure is logged once for; see _failed
        self._max_lines = cfg.batch_size  # lowered by a 413, kept for later requests
        # Figures for health, written by the sink thread only.
        self._written = 0
        self._acked = 0
        self._refused = 0
        self._invalid = 0
        self._errors = 0

    # ---- the Sink protocol -----------------------------------------------------------

    def consumer(self) -> Consumer:
        return Consumer(self.name, meter_telemetry)

    def start(self, outbox: Outbox) -> None:
        self._outbox = outbox
        outbox.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._main, name="sink-influx", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "influx sink still writing after %.1f s; unwritten rows stay queued", timeout
                )

    def health(self) -> dict[str, int | float | str]:
        oldest = self._batch.oldest_created
        return {
            "written_total": self._written,
            "acked_total": self._acked,
            "refused_total": self._refused,
            "invalid_total": self._invalid,
            "errors_total": self._errors,
            "last_error": self._last_error,
            "batch": len(self._batch),
            "lag_s": 0.0 if oldest is None else round(max(0.0, time.time() - oldest), 1),
        }

    # ---- the sink thread -----------------------------------------------------------

    def _main(self) -> None:
        # Every failure of a write is retried inside _loop; an exception out of here is a
        # bug or a broken outbox, and gateway.process.supervision then restarts the process.
        assert self._outbox is not None
        reader = self._outbox.reader()
        try:
            self._loop(reader)
        finally:
            reader.close()
            self._close_client()

    def _loop(self, reader: OutboxReader) -> None:
        cfg = self.cfg
        backoff = Backoff(cfg.retry.min_delay_s, cfg.retry.max_delay_s)
        after = {p: 0 for p in Priority}
        failing = False
        while True:
            stopping = self._stop.is_set()
            if stopping and (failing or time.monotonic() > self._stop_deadline):
                return  # what is left stays in the outbox for the next start
            self._wake.clear()  # before reading: a commit after the read wakes us again
            room = cfg.batch_size - len(self._batch)
            if room > 0:
                for row in reader.next_batch(self.name, after, room):
                    after[row.priority] = row.id
                    self._batch.add(row, self._points(row))
            batch = self._batch
            if not batch:
                if stopping:
                    return
                self._wake.wait()
                continue
            age = time.monotonic() - batch.started
            if len(batch) < cfg.batch_size and age < cfg.flush_interval_s and not stopping:
                self._wake.wait(cfg.flush_interval_s - age)  # gather more rows
                continue
            retry = self._write(batch)
            if retry is None:
                failing = False
                backoff.reset()
                if not self._ack(batch):
                    return
            else:
                failing = True
                self._stop.wait(backoff.next() if retry.after is None else retry.after)

    def _points(self, row: Row) -> list[str]:
        try:
            return to_points(row.payload, self.cfg.measurement)
        except InvalidPayload as exc:
            # Should not happen: the runtime encodes every payload.  Acknowledged with its
            # batch so that it cannot block the sink.
            self._invalid += 1
            log.error("outbox row %d (seq %d) skipped by the influx sink: %s", row.id, row.seq, exc)
            return []

    def _write(self, batch: _Batch) -> _Retry | None:
        """Write the batch's points, in requests the server takes; None once all are done."""
        while batch.written < len(batch.lines):
            chunk = batch.lines[batch.written : batch.written + self._max_lines]
            try:
                self._write_api().write(
                    bucket=self.cfg.bucket,
                    org=self.cfg.org,
                    record=chunk,
                    write_precision=PRECISION,
                )
            except ApiException as exc:
                if exc.status == _TOO_LARGE and len(chunk) > 1:
                    self._max_lines = max(1, len(chunk) // 2)
                    log.info(
                        "influx %s: a request of %d points is too large (HTTP 413);"
                        " sending at most %d per request",
                        self.cfg.url,
                        len(chunk),
                        self._max_lines,
                    )
                    continue
                if exc.status not in _REFUSED and exc.status != _TOO_LARGE:
                    return self._failed(exc)
                self._refused += len(chunk)
                log.error(
                    "influx %s refused %d points, not retried: %s",
                    self.cfg.url,
                    len(chunk),
                    _reason(exc),
                )
            except Exception as exc:  # connection, timeout, unreadable token: all retried
                return self._failed(exc)
            else:
                self._written += len(chunk)
            batch.written += len(chunk)
        if self._last_error:
            log.info("influx %s: writing again", self.cfg.url)
            self._last_error = self._last_cause = ""
        return None

    def _failed(self, exc: Exception) -> _Retry:
        self._errors += 1
        self._close_client()  # the next attempt starts afresh and re-reads the token
        self._last_error = _reason(exc)
        # The same failure at every retry for an hour is one log line, not hundreds.  An
        # HTTP error counts as the same by its status (bodies may name the client's
        # port); any other by its text without figures (a timeout's seconds change).
        cause = (
            f"HTTP {exc.status}"
            if isinstance(exc, ApiException)
            else _FIGURES.sub("N", self._last_error)
        )
        if cause != self._last_cause:
            log.warning("influx %s: %s; retrying with backoff", self.cfg.url, self._last_error)
            self._last_cause = cause
        return _Retry(_retry_after(exc))

    def _write_api(self) -> WriteApi:
        if self._api is None:
            try:
                token = self.cfg.token.read() if self.cfg.token is not None else None
            except (OSError, LookupError) as exc:
                raise _TokenUnreadable(f"cannot read the token: {exc}") from exc
            self._client = InfluxDBClient(
                url=self.cfg.url,
                token=token or "",  # empty: no Authorization header
                org=self.cfg.org,
                timeout=int(self.cfg.timeout_s * 1000),
            )
            self._api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._api

    def _close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the influx client failed", exc_info=True)
        self._client = None
        self._api = None

    def _ack(self, batch: _Batch) -> bool:
        """Acknowledge the batch and start a new one; False once the outbox is closed."""
        assert self._outbox is not None
        try:
            self._outbox.ack(self.name, batch.ids)
        except RuntimeError:
            # Closed while the last write ran: the rows are written again after a restart.
            return False
        self._acked += len(batch)
        self._batch = _Batch()
        return True


def _retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 or 503 asks to wait (Retry-After: seconds or an HTTP date)."""
    if not isinstance(exc, ApiException) or exc.status not in (429, 503) or not exc.headers:
        return None
    value = exc.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def _reason(exc: BaseException) -> str:
    """A failed write in words: the server's message, or the client's error."""
    if isinstance(exc, ApiException):
        message = ""
        try:
            message = str(json.loads(exc.body or "")["message"])
        except (ValueError, KeyError, TypeError):
            message = (exc.body or exc.reason or "").strip()[:200]
        return f"HTTP {exc.status}: {message}" if message else f"HTTP {exc.status}"
    return _ADDRESS.sub("", str(exc)) or type(exc).__name__
