"""Side work that a run can leave for its idle moments: the report's thumbnails.

Tagging keeps the CPUs almost busy (OpenVINO alone takes 1.9 of 2 cores), so work done beside
it in the decoding threads shows almost whole in the run's wall time. A Backlog hands that work
to one thread at the lowest CPU priority (Linux: nice 19 for that thread alone), which runs when
the model's threads leave a core idle: between model calls, while a batch is gathered. What
waits is bounded in bytes; beyond that the caller does the work itself, as before, so a machine
with no idle moment is no slower than without the backlog and memory stays flat. What is still
waiting when the run asks for it (drain) is done by the run's own thread, at its priority.
"""

import collections
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

LIMIT = 64 << 20  # bytes of work waiting (decoded pixels): 340 crops of 256 px, or 200 scans decoded at 1/8
NICE = 19  # the lowest priority: the thread runs when nothing else of the machine's would


class Backlog:
    """add(weight, function, *args) calls function(*args) later, in this backlog's thread, or now in
    the caller's thread once `limit` bytes of work wait (and from then on until drain, taking back
    one waiting job each time). drain() returns once all is done.
    The functions must not raise (what one raises is logged, and the rest still run). Thread-safe;
    picklable (a Ray worker gets an empty backlog of its own)."""

    def __init__(self, limit=None):
        self.limit = LIMIT if limit is None else limit  # read here: bench_report.py --inline sets LIMIT to 0
        self._setup()

    def _setup(self):
        self._lock = threading.Lock()
        self._jobs = collections.deque()
        self._ready = threading.Condition(self._lock)
        self._waiting = 0  # weight of the jobs in _jobs and of the one running
        self._behind = False  # fell `limit` behind since the last drain: the callers do the work
        self._thread = None

    def __getstate__(self):
        return {"limit": self.limit}

    def __setstate__(self, state):
        self.limit = state["limit"]
        self._setup()

    def add(self, weight, function, *args):
        taken = None
        with self._lock:
            queued = not self._behind and self._waiting + weight <= self.limit
            if queued:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="backlog", daemon=True)
                    self._thread.start()
                self._waiting += weight
                self._jobs.append((weight, function, args))
                self._ready.notify()
            else:
                # `limit` behind (or one job heavier than it): this machine has no idle moments for
                # the thread (other jobs keep its cores busy). Stop queueing until drain, and take back
                # what waits, one job per call: a thread at nice 19 can be set aside for long while
                # it holds Python's GIL, and then every thread of the run waits for it.
                if weight <= self.limit:
                    self._behind = True
                if self._jobs and self._jobs[0] is not None:
                    taken = self._jobs.popleft()
        if not queued:
            _run(function, args)
        if taken is not None:
            self._done(taken)

    def drain(self):
        """Return once every job added is done: the thread ends after the job it is on (a later add
        starts another), then the caller's thread does those not yet started. On a machine busy with
        other work the backlog's thread may get almost no CPU, and the run waits for this. One after
        the other, so that jobs added from one thread never run at the same time (unless behind)."""
        with self._lock:
            self._behind = False
            thread = self._thread
            if thread is None:
                return
            left = list(self._jobs)
            self._jobs.clear()
            self._jobs.append(None)
            self._ready.notify()
            self._thread = None
        thread.join()
        for job in left:
            self._done(job)

    def _work(self):
        lower_priority()
        while True:
            with self._lock:
                while not self._jobs:
                    self._ready.wait()
                job = self._jobs.popleft()
            if job is None:
                return
            self._done(job)

    def _done(self, job):
        weight, function, args = job
        _run(function, args)
        with self._lock:
            self._waiting -= weight


def _run(function, args):
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - one job's failure must not stop the others
        log.exception("side work %s failed", getattr(function, "__name__", function))


def lower_priority():
    """Give the calling thread the lowest CPU priority. Linux only: there a thread's nice value is its
    own; elsewhere setpriority would lower the whole process, the model's threads included."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError as error:  # e.g. a sandbox that forbids it: the work runs all the same
            log.debug("backlog thread keeps its priority (%s)", error)
