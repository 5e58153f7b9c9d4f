"""A watchdog for the local Ray a run starts, so that it never outlives the run.

When the driver dies without stopping Ray (kill -9, the OOM killer), Ray's gcs_server and raylet die
with it (Ray ties them to the driver), but the agents the raylet started (DashboardAgent and
RuntimeEnvAgent, about 180 MB) first try to tell the dead GCS and linger for a minute or more.
The watchdog is a small process that reads a pipe from the driver and notes, every second, the
processes of the driver's Ray session (the driver's children whose command line names the session
folder, and everything below them). When the pipe closes (the driver ended, however), it stops
those still alive: SIGTERM, then SIGKILL. It never signals a process it did not note, and checks
each one's start time first, so a reused pid is left alone. Linux only (/proc); elsewhere no
watchdog is started. Only the standard library: it runs as a script, by path.
"""

import os
import select
import signal
import subprocess
import sys
import time

POLL_SECONDS = 1.0  # how often the session's processes are noted
GRACE_SECONDS = 2.0  # between SIGTERM and SIGKILL
STOP_WAIT_SECONDS = 10  # how long the driver waits for the watchdog at the end of a normal run


class Watchdog:
    """The running watchdog; stop() (after ray.shutdown()) ends it and what is left of the session."""

    def __init__(self, process):
        self.process = process

    def stop(self):
        try:
            self.process.stdin.close()  # the same end as the driver's death: leftovers are stopped
            self.process.wait(timeout=STOP_WAIT_SECONDS)
        except (OSError, subprocess.TimeoutExpired):
            pass  # it ends by itself once it has stopped them


def start(session_dir):
    """Watch the Ray session in `session_dir`, started by this process; None where there is no /proc."""
    if not session_dir or not os.path.isdir(f"/proc/{os.getpid()}"):
        return None
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid()), session_dir],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Watchdog(process)


def _stat(pid):
    """(parent pid, start time in clock ticks) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()  # after "pid (name)": the name may hold spaces
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _command_line(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def note(driver, session, known):
    """Add to `known` ({pid: start time}) the session's processes alive now; drop those that ended."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found:
                table[int(name)] = found
    for pid in list(known):
        if table.get(pid, (0, None))[1] != known[pid]:
            del known[pid]
    # The driver's children that name the session: gcs_server, raylet, ... (this watchdog names it too)
    roots = {pid for pid, (parent, _) in table.items()
             if parent == driver and pid != os.getpid() and session in _command_line(pid)}
    frontier, seen = roots | set(known), set()
    while frontier:  # down the tree: the raylet's agents and workers, and theirs
        seen |= frontier
        known.update({pid: table[pid][1] for pid in frontier if pid in table and pid not in known})
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - seen
    return known


def end(known):
    """SIGTERM the noted processes still alive (same start time), then SIGKILL those that stay."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, started in known.items() if (_stat(pid) or (0, None))[1] == started]
        for pid in alive:
            try:
                os.kill(pid, sent)
            except OSError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while sent == signal.SIGTERM and alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if (_stat(pid) or (0, None))[1] == known[pid]]
        if not alive:
            return


def main(driver, session):
    # Ctrl-C, a closed terminal or a signal to the driver's process group stop the driver, not this:
    # it ends when its pipe closes, after stopping what is left.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    known = {}
    while True:
        note(driver, session, known)
        readable, _, _ = select.select([sys.stdin.buffer], [], [], POLL_SECONDS)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            break
    end(note(driver, session, known))


if __name__ == "__main__":
    main(int(sys.argv[1]), os.fsencode(sys.argv[2]))
