import os
import signal
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


@pytest.fixture
def python_sigint_handler():
    """Ctrl-C raises KeyboardInterrupt during the test, however pytest was started.

    A background job of a script (`cmd &`) starts with SIGINT ignored, and then neither a
    real Ctrl-C nor `_thread.interrupt_main()` does anything.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def restore_default_sigint():
    """preexec_fn for a child that must react to SIGINT: a background job's children inherit it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A test that takes this long belongs behind @pytest.mark.slow, so that
# `python -m pytest -m "not slow"` stays a check of about a minute (pytest.ini).
SLOW_SECONDS = 2.0
_unmarked_slow = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter):
    if _unmarked_slow:
        terminalreporter.section(f"over {SLOW_SECONDS:g} s without @pytest.mark.slow")
        for duration, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")


def docs_flag_table(page):
    """{flag: default cell} of the "## Flags" table in docs/{page}: what the docs promise users."""
    import re

    with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as handle:
        text = handle.read()
    table = text[text.index("\n## Flags\n"):]
    table = table[:table.index("\n## ", 1)]
    return {re.match(r"`(--[a-z-]+)", cells[0])[1]: cells[1]
            for cells in ([c.strip() for c in line.strip().strip("|").split("|")]
                          for line in table.splitlines() if line.startswith("| `--"))}
