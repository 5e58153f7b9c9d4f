"""The one way TensorFlow is imported: environment set first, native start-up chatter filtered
(the same filter drops Ray's one start-up line, tag/ray_engine.py).

`import tensorflow` prints its C++ start-up lines twice: two of its native libraries
(`_pywrap_tensorflow_internal` and the profiler plugin `_pywrap_profiler_plugin`, loaded by
`tf.profiler`) each carry their own copy of TensorFlow's logging code, and each logs
"oneDNN custom operations are on" and "Could not find cuda drivers" when it loads. absl
writes these before TensorFlow reads TF_CPP_MIN_LOG_LEVEL, so the variable cannot hide them;
while TensorFlow loads (and looks for GPUs, when CUDA builds log "failed call to cuInit"),
this module sends file descriptor 2 to a temporary file and copies back every line that is
not such start-up noise. Set TF_CPP_MIN_LOG_LEVEL=0 to see them all.
"""

import contextlib
import os
import re
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "2"  # hide INFO and WARNING lines of TensorFlow's C++ code, keep errors

# absl's INFO lines ("I0000 00:00:1795609452.504456    4235 port.cc:153] ..."), its banner
# about logging before InitializeLog, the second line of cpu_feature_guard's INFO message, and
# the CUDA build's "failed call to cuInit" on a machine without a usable NVIDIA driver (the
# trainer and inference say which device they use).
_NOISE = re.compile(
    r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    r"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)


def set_environment():
    """TensorFlow's logging variable, unless the user set it; must run before TensorFlow loads."""
    os.environ.setdefault(LOG_LEVEL_VARIABLE, DEFAULT_LOG_LEVEL)


def _filtering():
    return os.environ.get(LOG_LEVEL_VARIABLE, DEFAULT_LOG_LEVEL) not in ("", "0")


def drop_noise(text, noise=_NOISE):
    """`text` without the lines `noise` matches whole (TensorFlow's native INFO start-up lines)."""
    kept = [line for line in text.splitlines(keepends=True) if not noise.fullmatch(line.rstrip("\r\n"))]
    return "".join(kept)


@contextlib.contextmanager
def native_stderr_filtered(noise=None):
    """While inside, what native code writes to file descriptor 2 is held back, then written
    out without the lines `noise` matches (TensorFlow's start-up noise unless given; Python's
    sys.stderr is flushed first, so order is kept)."""
    if noise is None:
        if not _filtering():
            yield
            return
        noise = _NOISE
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (closed, or replaced by an object without a fd)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            rest = drop_noise(held.read().decode("utf-8", "replace"), noise)
            if rest:
                os.write(2, rest.encode("utf-8", "replace"))


def import_tensorflow():
    """`tensorflow`, imported once with the environment set and the start-up noise filtered."""
    set_environment()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_filtered():
        import tensorflow

        # Looking for GPUs is when CUDA builds log cuInit's failure on machines without one.
        tensorflow.config.list_physical_devices("GPU")
    return tensorflow
