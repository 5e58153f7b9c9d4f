"""Small shared helpers: counted nouns, atomic writes, printable paths, file hashes, NDL file names."""

import argparse
import csv
import functools
import hashlib
import json
import os
import re
import uuid

TEMP_SUFFIX = ".part"
# NDL's crop names: {pid}_{frame}_{n}, the n-th illustration of page (frame) of item pid.
NDL_NAME = re.compile(r"(?P<pid>[0-9A-Za-z-]+(?:_[0-9A-Za-z-]+)*)_(?P<page>\d{1,7})_(?P<n>\d+)")


def plural(number, noun, many=None):
    """`noun` as `number` of it is written: 'file' for 1, 'files' (or `many`) otherwise."""
    return noun if number == 1 else many or noun + "s"


def count(number, noun, many=None):
    """'1 file', '2 files', '1,000 files'."""
    return f"{number:,} {plural(number, noun, many)}"


def is_web_url(text):
    """Whether `text` is an http(s) URL, whatever the scheme's case (HTTPS://...): the only links
    our pages and documents follow (never javascript:, file: or data:)."""
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def printable_path(path):
    """`path` (str or bytes) as text that can always be printed and written into JSON.

    Bytes that are not UTF-8 (kept by Python as lone surrogates in str paths) are shown as
    backslash escapes (b"\\x83" -> "\\x83") instead of raising UnicodeEncodeError later.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def temporary_path(path):
    """A hidden, unique name beside `path` for writing it before the final rename.

    Unique per call, so two processes writing the same file never share a temporary file.
    """
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def write_atomic(path, data, sync=True):
    """Make `path` hold `data` (str or bytes), visible only once complete and fsynced.

    The temporary file is hidden, in the same folder (so the rename never crosses file
    systems), created with the usual 0666-minus-umask mode, and removed on any failure.
    sync=False skips the fsync, for previews made again at will (thumbnails): still whole or
    absent while the system runs, but a power cut may leave one empty (thumbs.is_current says
    an empty file is not current).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    temporary = temporary_path(path)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
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


class CsvWriter:
    """csv.writer with "\n" line ends, for every CSV we write. It also quotes a field holding a lone
    carriage return: csv quotes only the line terminator's characters, so a key like "p\r1" would be
    written bare and read back as two rows."""

    def __init__(self, handle):
        self._plain = csv.writer(handle, lineterminator="\n")
        self._quoted = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row):
        row = list(row)
        writer = self._quoted if any(isinstance(value, str) and "\r" in value for value in row) else self._plain
        return writer.writerow(row)

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def csv_dict_writer(handle, fieldnames):
    """csv.DictWriter over a CsvWriter (same line ends, lone carriage returns quoted)."""
    writer = csv.DictWriter(handle, fieldnames=fieldnames)
    writer.writer = CsvWriter(handle)  # its own writer replaced: the line ends are CsvWriter's
    return writer


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@functools.lru_cache(maxsize=1 << 16)  # a report names each item and image several times (cards, tags, map)
def safe_name(text, limit=40):
    """A file-name stem made only of [A-Za-z0-9._-] for any text, distinct for distinct texts: a
    readable prefix and a hash of the full text (no collision, even on case-insensitive disks).
    The review report names its pages and thumbnails with it, and discover/ finds them by it."""
    digest = hashlib.sha1(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = _UNSAFE.sub("_", str(text))[:limit].strip("._-") or "x"
    return f"{stem}-{digest}"
