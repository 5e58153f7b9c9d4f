"""Where inference reads and writes: local folders, or object stores named by URI (s3://...).

One set of calls for both engines. A local path keeps using os and files.write_atomic as
before (temporary name, fsync, rename). A URI goes through pyarrow's file systems (S3,
GCS, HDFS, ...; other schemes through fsspec when it is installed); there, "atomic" is one
PUT of the whole file, which object stores show whole or not at all. pyarrow is imported
only when a URI is given: the main command does not need it.

Credentials and endpoints come from the usual environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, and AWS_ENDPOINT_URL
for a store that is not AWS, e.g. MinIO or Ceph), never from flags.
"""

import os
import posixpath
import re
import threading

from tagestimate.errors import UserError
from tagestimate.files import printable_path, write_atomic as write_local

SCALE_REQUIREMENTS = "requirements-scale.txt"
MAX_REMOTE_BYTES = 512 * 1024 * 1024  # an image file larger than this is refused unread
CONNECT_TIMEOUT = 10  # seconds to reach the store
REQUEST_TIMEOUT = 60  # seconds for one request's answer
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SYSTEMS = {}  # (scheme, bucket) -> pyarrow file system, one per process
_SYSTEMS_LOCK = threading.Lock()


class StorageError(UserError):
    """A URI that cannot be used: missing package, unknown scheme, unreachable store."""


def is_uri(path):
    """True for 's3://bucket/key' and the like; False for local paths (str or bytes)."""
    return isinstance(path, str) and _URI.match(path) is not None and not path.startswith("file://")


def join(folder, name):
    return posixpath.join(folder, name) if is_uri(folder) else os.path.join(folder, name)


def basename(path):
    return posixpath.basename(path.rstrip("/")) if is_uri(path) else os.path.basename(path)


def strip(uri):
    """A URI without its trailing slashes ('s3://b/input/' -> 's3://b/input')."""
    scheme_end = uri.index("://") + 3
    return uri[:scheme_end] + uri[scheme_end:].rstrip("/")


def _filesystem(uri):
    """(pyarrow file system, path inside it) for a URI; one file system per bucket and process."""
    scheme = _URI.match(uri).group("scheme").lower()
    rest = uri[len(scheme) + 3:]
    bucket = rest.split("/", 1)[0]
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise StorageError(f"paths like {uri} need pyarrow: pip install -r {SCALE_REQUIREMENTS}") from None
    with _SYSTEMS_LOCK:
        system = _SYSTEMS.get((scheme, bucket))
        if system is None:
            system = _SYSTEMS[(scheme, bucket)] = _make_filesystem(pafs, scheme, uri)
    return system, rest.rstrip("/")


def _make_filesystem(pafs, scheme, uri):
    if scheme in ("s3", "s3a"):
        # pyarrow does not read AWS_ENDPOINT_URL itself, and without a region it asks AWS
        # for the bucket's, which never answers on a private network: both from the environment.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        options = {"connect_timeout": CONNECT_TIMEOUT, "request_timeout": REQUEST_TIMEOUT,
                   "allow_delayed_open": True}  # a small file is one PutObject at close
        if endpoint:
            options["endpoint_override"] = endpoint
            options["region"] = region or "us-east-1"
        elif region:
            options["region"] = region
        return pafs.S3FileSystem(**options)
    try:
        return pafs.FileSystem.from_uri(uri)[0]
    except Exception as arrow_error:  # noqa: BLE001 - pyarrow raises ValueError or ArrowInvalid
        try:
            import fsspec
        except ImportError:
            raise StorageError(f"cannot open {uri} ({arrow_error}); pyarrow does not know '{scheme}://' "
                               f"and fsspec is not installed") from None
        try:
            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except (ImportError, ValueError) as error:
            raise StorageError(f"cannot open {uri}: no file system for '{scheme}://' ({error})") from None


def _uri(template, path):
    """The URI of `path` inside the file system of URI `template`."""
    return template[:template.index("://") + 3] + path


def _call(what, uri, function, *args):
    try:
        return function(*args)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise StorageError(f"cannot {what} {uri} ({str(error).splitlines()[0]})") from None


def info(uri):
    system, path = _filesystem(uri)
    return _call("reach", uri, system.get_file_info, path)


def _type(uri):
    """pyarrow's FileType name of a URI: 'NotFound', 'File' or 'Directory'."""
    return info(uri).type.name


def exists(path):
    return os.path.exists(path) if not is_uri(path) else _type(path) != "NotFound"


def isdir(path):
    return os.path.isdir(path) if not is_uri(path) else _type(path) == "Directory"


def isfile(path):
    return os.path.isfile(path) if not is_uri(path) else _type(path) == "File"


def makedirs(path):
    """A local folder is created; object stores have no folders (keys are enough)."""
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)


def walk_files(folder):
    """Every file under a URI folder, recursively: [(relative path with '/', uri)], one listing."""
    import pyarrow.fs as pafs

    system, base = _filesystem(folder)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    entries = _call("list", folder, system.get_file_info, selector)
    return [(posixpath.relpath(entry.path, base), _uri(folder, entry.path))
            for entry in entries if entry.type == pafs.FileType.File]


def read_bytes(path, limit=MAX_REMOTE_BYTES):
    """The whole file; OSError when it is missing, unreadable or over `limit` bytes."""
    if not is_uri(path):
        with open(path, "rb") as handle:
            return handle.read()
    system, inner = _filesystem(path)
    with system.open_input_file(inner) as handle:  # OSError (FileNotFoundError) passes through
        if handle.size() > limit:
            raise OSError(f"file over {limit:,} bytes")
        return handle.read()


def write_atomic(path, data):
    """Make `path` hold `data` (str or bytes) whole or not at all; returns path."""
    if not is_uri(path):
        return write_local(path, data)
    if isinstance(data, str):
        data = data.encode("utf-8")
    system, inner = _filesystem(path)
    # Delayed open: the bytes are buffered and sent in one PutObject at close, so an
    # interrupted write leaves no object.
    stream = _call("write", path, system.open_output_stream, inner)
    stream.write(data)
    _call("write", path, stream.close)
    return path


def remove(path):
    """Delete a file if it exists."""
    if not is_uri(path):
        if os.path.exists(path):
            os.unlink(path)
        return
    system, inner = _filesystem(path)
    try:
        system.delete_file(inner)
    except FileNotFoundError:
        pass


def output_problem(folder):
    """Why `folder` cannot take the output (None if it can), found before any model work.

    A local folder is created and a probe file written in it: permission bits alone do not
    tell (root ignores them; a read-only mount or /proc refuses even root). On a store, a
    probe object is written and deleted.
    """
    if not is_uri(folder):
        return _local_output_problem(folder)
    import uuid

    try:
        if isfile(folder):
            return f"output folder {folder} is an existing file, not a folder"
        probe = join(folder, f".write-test-{uuid.uuid4().hex}")
        write_atomic(probe, b"")
        remove(probe)
    except (StorageError, OSError) as error:
        return str(error) if isinstance(error, StorageError) else f"cannot write in output folder {folder} ({error})"
    return None


def _local_output_problem(folder):
    import tempfile

    shown = printable_path(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"output folder {shown} is an existing file, not a folder"
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        return f"cannot write in output folder {shown} ({error.strerror or error})"
    return None
