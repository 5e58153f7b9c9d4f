"""review/backlog.py: side work done later, in one thread at the lowest priority, bounded in bytes;
drain() does what is left in the caller's thread."""

import logging
import os
import pickle
import sys
import threading

import pytest

from tagestimate.review.backlog import NICE, Backlog


def recording(log, gate=None, done=None):
    """A job that waits for `gate` (if given), then notes its argument, its thread and that thread's
    nice value, then sets `done` (if given)."""
    def job(value):
        if gate is not None:
            assert gate.wait(5)
        log.append((value, threading.get_ident(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        if done is not None:
            done.set()
    return job


def test_jobs_run_later_in_order_in_one_other_thread():
    log, gate, done = [], threading.Event(), threading.Event()
    backlog = Backlog(limit=100)
    for value in ("a", "b"):
        backlog.add(10, recording(log, gate), value)
    backlog.add(10, recording(log, gate, done), "c")
    assert log == []  # not done in the caller's thread
    gate.set()
    assert done.wait(5)
    backlog.drain()
    assert [value for value, _, _ in log] == ["a", "b", "c"]
    assert len({thread for _, thread, _ in log}) == 1 and log[0][1] != threading.get_ident()


def test_drain_waits_for_the_running_job_then_does_those_not_yet_started_in_the_caller_s_thread():
    log, gate, running = [], threading.Event(), threading.Event()
    backlog = Backlog()
    backlog.add(1, lambda value: running.set() or recording(log, gate)(value), "a")
    backlog.add(1, recording(log), "b")
    backlog.add(1, recording(log), "c")
    assert running.wait(5)  # the thread is in "a", held at the gate
    opener = threading.Timer(0.2, gate.set)
    opener.start()
    backlog.drain()
    me = threading.get_ident()
    assert [(value, thread == me) for value, thread, _ in log] == [("a", False), ("b", True), ("c", True)]
    backlog.add(5, recording(log), "d")  # the limit's bytes were given back: queued again
    backlog.drain()
    assert backlog._waiting == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the thread's own nice value is Linux's")
def test_the_backlog_thread_alone_runs_at_the_lowest_priority():
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    log, done = [], threading.Event()
    backlog = Backlog()
    backlog.add(1, recording(log, done=done), "x")
    assert done.wait(5)
    backlog.drain()
    assert log[0][1] != threading.get_ident() and log[0][2] == NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's is untouched
    later = threading.Thread(target=recording(log), args=("later",))  # a thread made later starts as usual
    later.start()
    later.join()
    assert log[1][2] == mine


def test_once_the_limit_is_reached_the_callers_do_the_work_and_take_back_what_waits_until_drain():
    """A backlog `limit` behind means a machine with no idle moment for its thread: from then on each
    add runs its own job and one that waits, in the caller's thread, until drain."""
    log, gate, running, done = [], threading.Event(), threading.Event(), threading.Event()
    backlog = Backlog(limit=25)
    me = threading.get_ident()
    backlog.add(10, lambda value: running.set() or recording(log, gate)(value), "queued 1")
    assert running.wait(5)
    backlog.add(15, recording(log), "queued 2")  # 25: exactly the limit, still queued
    backlog.add(1, recording(log), "over")  # the thread is held at the gate in "queued 1"
    assert [(value, thread) for value, thread, _ in log] == [("over", me), ("queued 2", me)]
    backlog.add(1, recording(log), "room, but behind")  # 10 bytes wait: room for 1, yet done now
    assert log[-1][:2] == ("room, but behind", me)
    gate.set()
    backlog.drain()
    assert log[-1][0] == "queued 1" and log[-1][1] != me
    backlog.add(25, recording(log, done=done), "after drain")  # queued again, the full limit free
    assert done.wait(5)
    backlog.drain()
    assert log[-1][0] == "after drain" and log[-1][1] != me
    assert backlog._waiting == 0


def test_a_job_heavier_than_the_limit_is_done_at_once():
    log = []
    backlog = Backlog(limit=5)
    backlog.add(6, recording(log), "big")
    assert log and log[0][1] == threading.get_ident()
    backlog.drain()  # nothing started: nothing to wait for


def test_a_failing_job_is_logged_and_the_others_still_run(caplog):
    log, done = [], threading.Event()

    def broken(value):
        raise ValueError(f"bad {value}")

    backlog = Backlog()
    with caplog.at_level(logging.ERROR, logger="tagestimate.review.backlog"):
        backlog.add(1, broken, "one")
        backlog.add(1, recording(log, done=done), "two")
        assert done.wait(5)  # in the backlog's thread, after the failure
        backlog.add(1, broken, "three")
        backlog.drain()
    assert [value for value, _, _ in log] == ["two"]
    assert [record.getMessage() for record in caplog.records] == ["side work broken failed"] * 2
    assert "bad one" in caplog.text and "bad three" in caplog.text


def test_drain_ends_the_thread_and_a_later_add_starts_another():
    log = []
    backlog = Backlog()
    for value in (1, 2):
        done = threading.Event()
        backlog.add(1, recording(log, done=done), value)
        assert done.wait(5)
        backlog.drain()
        assert not [thread for thread in threading.enumerate() if thread.name == "backlog" and thread.is_alive()]
    assert [value for value, _, _ in log] == [1, 2] and log[0][1] != threading.get_ident() != log[1][1]


def test_a_pickled_backlog_keeps_its_limit_and_nothing_else():
    """A Ray worker unpickles the recorder: its backlog starts empty, with its own thread."""
    log, gate, done = [], threading.Event(), threading.Event()
    backlog = Backlog(limit=30)
    backlog.add(10, recording(log, gate), "left behind")
    copy = pickle.loads(pickle.dumps(backlog))
    assert copy.limit == 30
    copy.add(30, recording(log, done=done), "copy")  # the original's 10 bytes waiting do not count here
    assert done.wait(5)
    copy.drain()
    assert [value for value, _, _ in log] == ["copy"] and log[0][1] != threading.get_ident()
    gate.set()
    backlog.drain()
    assert [value for value, _, _ in log] == ["copy", "left behind"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the thread's own nice value is Linux's")
def test_a_thread_not_allowed_to_lower_its_priority_still_does_the_work(monkeypatch, caplog):
    from tagestimate.review import backlog as module

    asked = []

    def refused(which, who, value):
        asked.append((which, who, value))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(module.os, "setpriority", refused)
    log, done = [], threading.Event()
    backlog = Backlog()
    with caplog.at_level(logging.DEBUG, logger="tagestimate.review.backlog"):
        backlog.add(1, recording(log, done=done), "x")
        assert done.wait(5)
        backlog.drain()
    assert log[0][1] != threading.get_ident() and asked == [(os.PRIO_PROCESS, asked[0][1], 19)]
    assert asked[0][1] not in (0, threading.get_native_id())  # the backlog thread's own id
    assert caplog.messages == ["backlog thread keeps its priority ([Errno 1] Operation not permitted)"]


def test_a_job_of_exactly_the_limit_that_does_not_fit_puts_the_backlog_behind_too():
    log, gate, running = [], threading.Event(), threading.Event()
    backlog = Backlog(limit=10)
    me = threading.get_ident()
    backlog.add(1, lambda value: running.set() or recording(log, gate)(value), "held")
    assert running.wait(5)
    backlog.add(4, recording(log), "waiting")
    backlog.add(10, recording(log), "limit")  # 5 + 10 > 10: done now, and "waiting" taken back
    backlog.add(1, recording(log), "small")  # 1 + 1 would fit, but the backlog is behind
    assert [(value, thread == me) for value, thread, _ in log] == [("limit", True), ("waiting", True), ("small", True)]
    gate.set()
    backlog.drain()


def test_a_failing_job_without_a_name_is_logged_by_what_it_is(caplog):
    class Job:
        def __call__(self):
            raise ValueError("no name")

        def __repr__(self):
            return "<the nameless job>"

    backlog = Backlog()
    with caplog.at_level(logging.ERROR, logger="tagestimate.review.backlog"):
        backlog.add(1, Job())
        backlog.drain()
    assert caplog.messages == ["side work <the nameless job> failed"]


def test_a_process_that_never_drains_still_exits(tmp_path):
    """A run that stops on an error it does not catch never drains: the backlog's thread, waiting for
    work or stuck in a job, must not keep the process alive."""
    import subprocess

    here = Backlog()  # in this process too: mutmut runs a test for a mutant only if the test reached its function
    here.add(1, len, "x")
    here.drain()
    script = ("import threading, time\nfrom tagestimate.review.backlog import Backlog\nbacklog = Backlog()\n"
              "started = threading.Event()\nbacklog.add(1, lambda: started.set() or time.sleep(600))\n"
              "started.wait(10)\nprint('leaving')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and done.stdout == "leaving\n", done.stderr
