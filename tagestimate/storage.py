"""Where inference reads and writes: local folders, or object stores named by URI (s3://...).

A path picks its store once, by scheme: `store(path)` is the local folder store for a plain
path and a pyarrow file-system store for a URI; the module functions below ask it, so no other
module tests what kind of path it holds. A local path uses os and files.write_atomic
(temporary name, fsync, rename). On an object store "atomic" is one PUT of the whole file,
which the store shows whole or not at all. pyarrow is imported only for a URI.

A new scheme is one entry in SCHEMES (how to make its file system, whether its first path part
is a bucket); schemes not listed go through pyarrow's own URI parsing, then fsspec.

Credentials and endpoints come from the usual environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, and AWS_ENDPOINT_URL
for a store that is not AWS, e.g. MinIO or Ceph), never from flags.
"""

import collections
import logging
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
METADATA_TIMEOUT = 1.0  # seconds to wait for the EC2 instance metadata service (credentials)
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_STORES = {}  # (scheme, bucket) -> ArrowStore, one per process
_STORES_LOCK = threading.Lock()
log = logging.getLogger(__name__)


class StorageError(UserError):
    """A URI that cannot be used: missing package, unknown scheme, unreachable store."""


def store(path):
    """The store that holds `path`: LOCAL for a plain path (str or bytes), else the URI's ArrowStore."""
    match = _URI.match(path) if isinstance(path, str) else None
    if match is None or match.group("scheme").lower() == "file":
        return LOCAL
    scheme = match.group("scheme").lower()
    bucket = path[match.end():].split("/", 1)[0]
    with _STORES_LOCK:
        found = _STORES.get((scheme, bucket))
        if found is None:
            found = _STORES[(scheme, bucket)] = ArrowStore(scheme, bucket, path)
    return found


# The questions callers ask; each goes to the path's store.
def join(folder, name): return store(folder).join(folder, name)
def basename(path): return store(path).basename(path)
def root(path): return store(path).root(path)
def url(path): return store(path).url(path)
def on_disk(path): return store(path).on_disk
def exists(path): return store(path).exists(path)
def isdir(path): return store(path).isdir(path)
def isfile(path): return store(path).isfile(path)
def version(path): return store(path).version(path)
def makedirs(path): return store(path).makedirs(path)
def files_in(folder): return store(folder).files_in(folder)
def walk_files(folder): return store(folder).walk_files(folder)
def read_bytes(path, limit=MAX_REMOTE_BYTES): return store(path).read_bytes(path, limit)
def write_atomic(path, data): return store(path).write_atomic(path, data)
def remove(path): return store(path).remove(path)
def remove_empty_folder(folder): return store(folder).remove_empty_folder(folder)
def output_problem(folder): return store(folder).output_problem(folder)


def relpath(path, start):
    """`path` relative to the folder `start` ('/'-separated on stores), None when they are on two stores."""
    holder = store(path)
    return holder.relpath(path, start) if store(start) is holder else None


def overlap_problem(input_dir, output_dir):
    """Why input and output folders cannot be used together (one inside the other), else None."""
    holder = store(input_dir)
    if store(output_dir) is not holder:
        return None
    inner, outer = holder.canonical(input_dir), holder.canonical(output_dir)
    if inner == outer or inner.startswith(outer.rstrip("/") + "/") or outer.startswith(inner.rstrip("/") + "/"):
        return (f"input folder {printable_path(input_dir)} and output folder {printable_path(output_dir)} overlap "
                "(one is inside the other), so a run would tag its own outputs; choose separate folders")
    return None


class LocalStore:
    """Folders on this machine's disks, through os."""

    on_disk = True  # the review report, Grad-CAM and the image decoder open these paths themselves

    join = staticmethod(os.path.join)
    basename = staticmethod(os.path.basename)
    relpath = staticmethod(os.path.relpath)
    root = staticmethod(os.path.abspath)
    exists = staticmethod(os.path.exists)
    isdir = staticmethod(os.path.isdir)
    isfile = staticmethod(os.path.isfile)

    @staticmethod
    def canonical(path):
        return os.path.realpath(path)

    @staticmethod
    def url(path):
        import pathlib

        return pathlib.Path(os.path.abspath(path)).as_uri()

    @staticmethod
    def version(path):
        """(mtime in ns, size) of a file, None when it is missing: a cache key for its contents."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    @staticmethod
    def makedirs(path):
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def files_in(folder):
        """The files directly in `folder`, sorted; [] when it does not exist."""
        try:
            return sorted(entry.path for entry in os.scandir(folder) if entry.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []

    @staticmethod
    def walk_files(folder):
        """[(relative path with '/', path)] of every file under `folder`.

        A linked folder directly in `folder` is followed (an item folder may be a link); deeper
        links to folders are not, as os.walk does. Hidden folders are not entered: find_items
        skips them anyway, and they may be large (caches, .git).
        """
        found = []
        for entry in os.scandir(folder):
            if entry.is_file():
                found.append((entry.name, entry.path))
            elif entry.is_dir() and not entry.name.startswith("."):
                for current, folders, names in os.walk(entry.path):
                    folders[:] = [name for name in folders if not name.startswith(".")]
                    found += [(os.path.relpath(os.path.join(current, name), folder).replace(os.sep, "/"),
                               os.path.join(current, name)) for name in names]
        return found

    @staticmethod
    def read_bytes(path, limit=MAX_REMOTE_BYTES):
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > limit:
                raise OSError(f"file over {limit:,} bytes")
            return handle.read()

    @staticmethod
    def write_atomic(path, data):
        return write_local(path, data)

    @staticmethod
    def remove(path):
        if os.path.exists(path):
            os.unlink(path)

    @staticmethod
    def remove_empty_folder(folder):
        try:
            os.rmdir(folder)  # only when empty: files in it stay
        except OSError:
            pass

    @staticmethod
    def output_problem(folder):
        """Why `folder` cannot take the output (None if it can), found before any model work.

        The folder is created and a probe file written in it: permission bits alone do not tell
        (root ignores them; a read-only mount or /proc refuses even root).
        """
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


LOCAL = LocalStore()

# scheme -> (its first path part is a bucket, how its pyarrow file system is made). One entry per
# scheme: its factory gets (pyarrow.fs, scheme, uri) and returns (file system, raw remover or None).
Scheme = collections.namedtuple("Scheme", "bucketed make")


def _s3_filesystem(pafs, scheme, uri):
    """pyarrow's S3 file system, and a delete through botocore.

    pyarrow does not read AWS_ENDPOINT_URL itself, and without a region it asks AWS for the
    bucket's, which never answers on a private network: both from the environment. Its own
    delete always re-creates the parent "folder" as a zero-byte marker object; botocore's
    DeleteObject leaves none.
    """
    anonymous = os.environ.get("AWS_NO_SIGN_REQUEST", "").lower() == "true"  # a public bucket, as the AWS CLI's
    if not anonymous:
        _check_credentials()
    try:
        import boto3
        import botocore
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise StorageError(f"paths like {uri} need boto3: pip install -r {SCALE_REQUIREMENTS}") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    options = {"connect_timeout": CONNECT_TIMEOUT, "request_timeout": REQUEST_TIMEOUT,
               "allow_delayed_open": True, "anonymous": anonymous}  # a small file is one PutObject at close
    if endpoint:
        options["endpoint_override"] = endpoint
        options["region"] = region = region or "us-east-1"
    elif region:
        options["region"] = region
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region,
        config=botocore.config.Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=REQUEST_TIMEOUT,
                                      signature_version=botocore.UNSIGNED if anonymous else None))

    def delete(bucket, key):
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise OSError(str(error)) from None

    return pafs.S3FileSystem(**options), delete


# Where the AWS SDK finds credentials before it asks the EC2 instance metadata service.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI")
METADATA_ENDPOINT = "http://169.254.169.254"


def _check_credentials():
    """Refuse at once when no credentials are configured and no instance metadata service answers.

    Otherwise the AWS SDK waits about 99 s, silently, for the metadata service of an EC2
    machine that this one is not.
    """
    files = (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
             os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    if any(os.environ.get(name) for name in CREDENTIAL_VARIABLES) or \
            any(os.path.isfile(os.path.expanduser(name)) for name in files):
        return
    advice = ("no AWS credentials are configured; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
              "with ~/.aws/credentials, or AWS_NO_SIGN_REQUEST=true for a public bucket")
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        raise StorageError(advice)
    import socket
    import urllib.parse

    endpoint = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or METADATA_ENDPOINT
    parts = urllib.parse.urlsplit(endpoint)
    log.info("no AWS credentials configured: asking the EC2 instance metadata service at %s", endpoint)
    try:
        socket.create_connection((parts.hostname, parts.port or 80), timeout=METADATA_TIMEOUT).close()
    except OSError:
        raise StorageError(f"{advice} (the EC2 instance metadata service at {endpoint} did not answer either)") \
            from None


def _any_filesystem(pafs, scheme, uri):
    """pyarrow's own parser (gs://, hdfs://, ...), else fsspec's file system for the scheme."""
    try:
        return pafs.FileSystem.from_uri(uri)[0], None
    except Exception as arrow_error:  # noqa: BLE001 - pyarrow raises ValueError or ArrowInvalid
        try:
            import fsspec
        except ImportError:
            raise StorageError(f"cannot open {uri} ({arrow_error}); pyarrow does not know '{scheme}://' "
                               f"and fsspec is not installed") from None
        try:
            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme))), None
        except (ImportError, ValueError) as error:
            raise StorageError(f"cannot open {uri}: no file system for '{scheme}://' ({error})") from None


SCHEMES = {
    "s3": Scheme(True, _s3_filesystem),
    "s3a": Scheme(True, _s3_filesystem),
    "gs": Scheme(True, _any_filesystem),
    "gcs": Scheme(True, _any_filesystem),
}
OTHER_SCHEME = Scheme(False, _any_filesystem)


class ArrowStore:
    """One bucket (or host) of an object store, through a pyarrow file system."""

    on_disk = False

    def __init__(self, scheme, bucket, uri):
        kind = SCHEMES.get(scheme, OTHER_SCHEME)
        if kind.bucketed and not bucket:
            raise StorageError(f"{uri} names no bucket; write {scheme}://BUCKET/FOLDER")
        try:
            import pyarrow.fs as pafs
        except ImportError:
            raise StorageError(f"paths like {uri} need pyarrow: pip install -r {SCALE_REQUIREMENTS}") from None
        self.scheme, self.bucket, self.bucketed = scheme, bucket, kind.bucketed
        self.pafs = pafs
        self.system, self.raw_delete = kind.make(pafs, scheme, uri)

    # Paths: 'scheme://bucket/key' outside, 'bucket/key' inside the file system.
    def inner(self, path):
        return path[path.index("://") + 3:].rstrip("/")

    def outer(self, inner):
        return f"{self.scheme}://{inner}"

    def join(self, folder, name):
        return posixpath.join(folder, name)

    def basename(self, path):
        return posixpath.basename(path.rstrip("/"))

    def relpath(self, path, start):
        return posixpath.relpath(self.inner(path), self.inner(start))

    def root(self, path):
        return self.outer(self.inner(path))

    def canonical(self, path):
        return posixpath.normpath("/" + self.inner(path))

    def url(self, path):
        return path

    def _call(self, what, path, function, *args):
        try:
            return function(*args)
        except FileNotFoundError:
            raise
        except OSError as error:  # pyarrow's ArrowInvalid is a ValueError: a path it cannot take
            raise StorageError(f"cannot {what} {path} ({str(error).splitlines()[0]})") from None
        except ValueError as error:
            raise StorageError(f"cannot {what} {path} ({str(error).splitlines()[0]}); check the URI") from None

    def info(self, path):
        return self._call("reach", path, self.system.get_file_info, self.inner(path))

    def exists(self, path):
        return self.info(path).type != self.pafs.FileType.NotFound

    def isdir(self, path):
        return self.info(path).type == self.pafs.FileType.Directory

    def isfile(self, path):
        return self.info(path).type == self.pafs.FileType.File

    def version(self, path):
        found = self.info(path)
        return None if found.type == self.pafs.FileType.NotFound else (found.mtime_ns, found.size)

    def makedirs(self, path):
        """Object stores have no folders (keys are enough), and a marker object would be left behind."""

    def _listing(self, folder, recursive):
        base = self.inner(folder)
        selector = self.pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
        entries = self._call("list", folder, self.system.get_file_info, selector)
        return base, [entry.path for entry in entries if entry.type == self.pafs.FileType.File]

    def files_in(self, folder):
        return sorted(self.outer(path) for path in self._listing(folder, recursive=False)[1])

    def walk_files(self, folder):
        """[(relative path with '/', uri)] of every object under `folder`, from one listing."""
        base, paths = self._listing(folder, recursive=True)
        return [(posixpath.relpath(path, base), self.outer(path)) for path in paths]

    def read_bytes(self, path, limit=MAX_REMOTE_BYTES):
        """The whole object; OSError when it is missing, unreadable or over `limit` bytes."""
        with self._call("read", path, self.system.open_input_file, self.inner(path)) as handle:
            if handle.size() > limit:
                raise OSError(f"file over {limit:,} bytes")
            return handle.read()

    def write_atomic(self, path, data):
        """One PUT of the whole object (delayed open: buffered, sent at close); an interrupted write leaves none."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        stream = self._call("write", path, self.system.open_output_stream, self.inner(path))
        stream.write(data)
        self._call("write", path, stream.close)
        return path

    def remove(self, path):
        """Delete an object if it exists, leaving no empty-folder marker object behind."""
        try:
            if self.raw_delete is not None:
                self._call("delete", path, self.raw_delete, *self.inner(path).split("/", 1))
            else:
                self._call("delete", path, self.system.delete_file, self.inner(path))
        except FileNotFoundError:
            pass

    def remove_empty_folder(self, folder):
        """Nothing to do: a folder of an object store is only the keys under it."""

    def output_problem(self, folder):
        """Why `folder` cannot take the output (None if it can): a missing bucket, a file, no write access.

        A probe object is written and deleted.
        """
        import uuid

        try:
            if self.bucketed and self.system.get_file_info(self.bucket).type == self.pafs.FileType.NotFound:
                return f"bucket {self.bucket} of output folder {folder} does not exist"
            if self.isfile(folder):
                return f"output folder {folder} is an existing file, not a folder"
            probe = self.join(folder, f".write-test-{uuid.uuid4().hex}")
            self.write_atomic(probe, b"")
            self.remove(probe)
        except StorageError as error:
            return str(error)
        except OSError as error:
            return f"cannot write in output folder {folder} ({str(error).splitlines()[0]})"
        return None
