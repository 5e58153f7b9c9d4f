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
