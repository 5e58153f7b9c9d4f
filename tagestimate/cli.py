"""What every command line shares: the exit-status wrapper, the logging set-up and the argparse
value types (bounded numbers, http(s) URLs). The commands (tagestimate/commands/) use these, so
`error: ...` and exit 1, Ctrl-C and exit 130, and a bad flag's exit 2 read the same everywhere."""

import argparse
import logging
import re
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from tagestimate import files
from tagestimate.errors import EXIT_ERROR, EXIT_INTERRUPTED, UserError


# ---------------------------------------------------------------- running a command

def run(work, interrupted):
    """work() -> exit status. A UserError prints "error: ..." and gives 1; Ctrl-C prints
    `interrupted` (a line, or a function returning it) and gives 130. No traceback either way."""
    try:
        with logging_redirect_tqdm():  # a log line during a progress bar does not tear the bar
            return work()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(interrupted() if callable(interrupted) else interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED


class _Formatter(logging.Formatter):
    """Information as the bare message; anything else prefixed with its level ("warning: ...")."""

    def format(self, record):
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def setup_logging(quiet=False, verbose=False):
    """Log to stderr: warnings only with `quiet`, debugging detail with `verbose`, else information.
    Does nothing when the process has set up logging already (a caller, a test runner)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, handlers=[handler])


def given_flags(build_parser, argv):
    """Names (dests) of the options given in `argv`, as opposed to left at their defaults."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS  # an option not given then leaves no attribute
    return set(vars(probe.parse_args(argv)))


count = files.count  # '1 file', '2 files': one helper for every floor (files.py is on the ground)


# ---------------------------------------------------------------- argparse value types

def bounded(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: `kind` (int or float) within [low, high]; either end may be open or absent."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if value != value:  # NaN passes every comparison below
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'over' if low_open else 'at least'} {low}, not {text}"
                                             + _range_note(low, high, low_open, high_open))
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be {'under' if high_open else 'at most'} {high}, not {text}"
                                             + _range_note(low, high, low_open, high_open))
        return value
    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def _range_note(low, high, low_open, high_open):
    if low is None or high is None:
        return ""
    return f" (the range is {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'})"


def url_problem(text):
    """What keeps `text` from being an absolute http(s) URL, as words that follow it; None when it is one."""
    if re.search(r"\s", text):
        return "contains a space; write a space in a URL as %20"
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://[^/?#\s]+", text)
    if not match:
        return "is not an absolute URL (such as https://example.org/path)"
    if match[1].lower() not in ("http", "https"):
        return f"is a {match[1]}: URL; use http or https"
    return None


def http_url(text):
    """An argparse type: an absolute http(s) URL, returned without a trailing slash."""
    problem = url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text.rstrip("/")
