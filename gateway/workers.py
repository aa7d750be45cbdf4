"""``tts-gateway serve --workers N``: N gateway processes on one port, and their supervisor.

Each worker is a whole ``tts-gateway serve`` (its own event loop, media clock, provider pools
and calls) started as ``python -m gateway.cli serve --worker-index I``. The workers bind the
HTTP port and the AudioSocket port with SO_REUSEPORT, and the Linux kernel spreads new
connections over them (by a hash of the connection's addresses). That is the whole of the
sharing: no socket is handed over, no byte passes through the supervisor. Other systems
either lack SO_REUSEPORT or do not balance with it (macOS, the BSDs give every connection to
one socket), so ``--workers`` above 1 is refused there rather than pretending.

With ``cluster.redis_url`` each worker is an instance of the cluster of its own: it registers
its calls under ``cluster.instance_url`` with the port replaced by its own ``--worker-ports``
port (FIRST+I), which ``serve`` then requires. The shared port cannot be advertised: a
request forwarded to it reaches whichever worker the kernel picks, and that worker does not
hold the call. Required rather than picked: a fixed range is what a firewall, a
NetworkPolicy or a scrape config can name.

The supervisor (this module, in the process the operator started) only watches:

* a worker that dies is started again after a backoff (0.5 s, doubling to 10 s for a worker
  that keeps dying young); more than ``MAX_RESTARTS_PER_MINUTE`` restarts within a minute is
  a crash loop: the supervisor drains the others and exits 1, for systemd or Kubernetes to
  see. Every death and restart is logged with its count;
* SIGTERM or SIGINT is passed to every worker, which drains as a single ``serve`` does
  (gateway/http/drain.py); a second one is passed on too (it cuts their drain short). The
  supervisor exits 0 once every worker has exited 0;
* the workers run in their own session, so a terminal's Ctrl-C reaches them once, through
  the supervisor, and each worker drains by itself if the supervisor vanishes (kill -9).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

log = logging.getLogger(__name__)

MAX_RESTARTS_PER_MINUTE = 10
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
#: a worker that lived this long was healthy: its next death starts the backoff afresh
HEALTHY_AFTER_S = 30.0
#: the most workers one machine gets, whatever ``--workers`` says
MAX_WORKERS = 256
POLL_S = 0.1


def worker_count(value: str) -> int:
    """``--workers``: a number from 1 to MAX_WORKERS, or ``auto``: one per usable core."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, min(MAX_WORKERS, cores or os.cpu_count() or 1))
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--workers: {value!r} is neither a number nor 'auto'") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"--workers: {count} is not between 1 and {MAX_WORKERS}")
    return count


def sharing_problem(host: str, port: int, workers: int, worker_ports: int | None) -> str | None:
    """Why these workers cannot share ``host:port`` here, else None (the port is free to
    share: bound and released once with SO_REUSEPORT)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return (f"--workers {workers}: the workers share the port with SO_REUSEPORT, which "
                "balances connections only on Linux; run one process per port here instead")
    if port == 0:
        return "--workers needs a fixed port (each worker would pick its own with port 0)"
    if worker_ports is not None and not 0 < worker_ports <= 65535 - workers:
        return f"--worker-ports {worker_ports}: the ports {worker_ports}.. must fit under 65536"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((host, port))
    except OSError as exc:
        return f"cannot listen on {host}:{port}: {exc}"
    return None


def with_port(url: str, port: int) -> str:
    """``url`` (``http(s)://host[:port]``) with ``port`` instead of its own: the address a
    worker advertises in the cluster directory."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


@dataclasses.dataclass
class Worker:
    index: int
    started: subprocess.Popen | None = None  # its latest process; None until started
    started_at: float = 0.0
    quick_deaths: int = 0  # deaths in a row, each before HEALTHY_AFTER_S
    restart_at: float | None = None  # when a dead worker is due to start again
    exit_code: int | None = None
    restarts: int = 0  # times this worker was started again

    @property
    def proc(self) -> subprocess.Popen:
        assert self.started is not None, "the worker was never started"
        return self.started


class Supervisor:
    """Start ``count`` workers (``command(index, restarts)`` is each one's argv), keep them running,
    stop them on SIGTERM/SIGINT. :meth:`run` returns the process's exit code."""

    def __init__(self, command, count: int, stop_timeout_s: float, *,
                 max_restarts_per_minute: int = MAX_RESTARTS_PER_MINUTE,
                 first_backoff_s: float = FIRST_BACKOFF_S):
        self.command = command
        self.max_restarts_per_minute = max_restarts_per_minute
        self.first_backoff_s = first_backoff_s
        self.workers = [Worker(i) for i in range(count)]
        self.stop_timeout_s = stop_timeout_s
        self.restarts: collections.deque[float] = collections.deque()
        self.restarts_total = 0
        self.signals: list[int] = []
        self.forwarded = 0
        self.stop_deadline: float | None = None
        self.gave_up = False

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in self.workers:
                self._start(worker)
            log.info("supervisor %d: %d workers sharing the port", os.getpid(), len(self.workers))
            while not self._all_stopped():
                self._forward_signals()
                self._reap()
                self._restart_due()
                self._enforce_stop_deadline()
                time.sleep(POLL_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_all()
        codes = [w.exit_code for w in self.workers]
        log.info("supervisor: every worker has exited (codes %s; %d restart(s) in all)", codes,
                 self.restarts_total)
        return 0 if not self.gave_up and all(code == 0 for code in codes) else 1

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    @property
    def stopping(self) -> bool:
        return self.stop_deadline is not None

    def _start(self, worker: Worker) -> None:
        worker.restart_at = None
        worker.exit_code = None
        worker.started_at = time.monotonic()
        worker.started = subprocess.Popen(self.command(worker.index, worker.restarts),
                                          start_new_session=True)
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _forward_signals(self) -> None:
        while self.forwarded < len(self.signals):
            signum = self.signals[self.forwarded]
            self.forwarded += 1
            name = signal.Signals(signum).name
            if not self.stopping:
                log.warning("%s: draining every worker", name)
                self._begin_stop()
            else:
                log.warning("%s again: cutting the workers' drain short", name)
            for worker in self._alive():
                worker.proc.send_signal(signal.SIGTERM)

    def _begin_stop(self) -> None:
        self.stop_deadline = time.monotonic() + self.stop_timeout_s
        for worker in self.workers:
            if worker.restart_at is not None:  # dead and due to start again: it stays dead
                worker.restart_at = None

    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if w.started is not None and w.exit_code is None]

    def _reap(self) -> None:
        for worker in self._alive():
            code = worker.proc.poll()
            if code is None:
                continue
            worker.exit_code = code
            if self.stopping:
                log.info("worker %d (pid %d) exited with %d", worker.index, worker.proc.pid,
                         code)
                continue
            self._schedule_restart(worker, code)

    def _schedule_restart(self, worker: Worker, code: int) -> None:
        now = time.monotonic()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        lived = now - worker.started_at
        worker.quick_deaths = worker.quick_deaths + 1 if lived < HEALTHY_AFTER_S else 1
        while self.restarts and self.restarts[0] < now - 60.0:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts_per_minute:
            log.error("worker %d (pid %d) died (%s) after %.1f s; %d restarts within a minute "
                      "is a crash loop: stopping every worker", worker.index, worker.proc.pid,
                      how, lived, len(self.restarts))
            self.gave_up = True
            self._begin_stop()
            for other in self._alive():
                other.proc.send_signal(signal.SIGTERM)
            return
        backoff = min(MAX_BACKOFF_S, self.first_backoff_s * 2 ** (worker.quick_deaths - 1))
        self.restarts.append(now)
        self.restarts_total += 1
        worker.restarts += 1
        worker.restart_at = now + backoff
        log.error("worker %d (pid %d) died (%s) after %.1f s; restarting it in %.1f s "
                  "(restart %d in the last minute, %d in all)", worker.index, worker.proc.pid,
                  how, lived, backoff, len(self.restarts), self.restarts_total)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None and now >= worker.restart_at and not self.stopping:
                self._start(worker)

    def _all_stopped(self) -> bool:
        return self.stopping and not self._alive()

    def _enforce_stop_deadline(self) -> None:
        deadline = self.stop_deadline
        if deadline is not None and time.monotonic() > deadline and self._alive():
            log.error("%d worker(s) still running %.0f s after the stop: killing them",
                      len(self._alive()), self.stop_timeout_s)
            self.gave_up = True
            self._kill_all()

    def _kill_all(self) -> None:
        for worker in self._alive():
            worker.proc.kill()
            worker.exit_code = worker.proc.wait()
