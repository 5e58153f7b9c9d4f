"""Small shared helpers: atomic file writes and the command-line help formatter."""

import argparse
import json
import os
import uuid

TEMP_SUFFIX = ".part"


def write_atomic(path, data):
    """Make `path` hold `data` (str or bytes), visible only once complete and fsynced.

    The temporary file is hidden, in the same folder (so the rename never crosses file
    systems), created with the usual 0666-minus-umask mode, and removed on any failure.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        temporary = None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
    return path


def write_json(path, data, indent=2):
    """JSON with sorted keys, written atomically."""
    return write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=True) + "\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the real defaults, except None, which each help text words itself."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)
