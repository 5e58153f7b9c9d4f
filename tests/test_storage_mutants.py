"""storage.py's behaviours pinned one by one (the mutation campaign's survivors): which store a path
picks, local and s3:// reads, writes, listings, deletes and their one-sentence errors, output and
overlap problems, how the S3 file system and its delete client are configured from the environment,
and when missing credentials are refused. Everything calls storage inside the tests (mutmut collects
once, before a mutant is switched on)."""

import logging
import os
import socket
import sys

import pytest

from test_storage import keys, make_bucket, s3_server  # noqa: F401 - s3_server is a fixture
from tagestimate import storage


# --- which store a path picks, and the module functions that ask it -------------------------------

def test_plain_paths_file_uris_and_bytes_are_local(tmp_path):
    for path in (str(tmp_path), "relative/x", "file:///tmp/x", "FILE:///tmp/x", "File://x", b"/tmp/x", b"s3://b/x"):
        assert storage.store(path) is storage.LOCAL, path


def test_the_module_functions_ask_the_local_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path / "a" / "b")
    storage.makedirs(folder)
    storage.makedirs(folder)  # already there: no error
    assert os.path.isdir(folder)
    path = os.path.join(folder, "x.bin")
    assert storage.exists(path) is False and storage.isfile(path) is False and storage.version(path) is None
    assert storage.write_atomic(path, b"abcde") is not None
    stat = os.stat(path)
    assert storage.exists(path) is True and storage.isfile(path) is True and storage.isfile(folder) is False
    assert storage.isdir(folder) is True
    assert storage.version(path) == (stat.st_mtime_ns, 5)
    assert storage.read_bytes(path) == b"abcde"
    assert storage.read_bytes(path, limit=5) == b"abcde"
    with pytest.raises(OSError, match=r"^file over 4 bytes$"):
        storage.read_bytes(path, limit=4)
    big = os.path.join(folder, "big.bin")
    storage.write_atomic(big, b"x" * 1235)
    with pytest.raises(OSError, match=r"^file over 1,234 bytes$"):
        storage.read_bytes(big, limit=1234)
    storage.remove(path)
    assert not os.path.exists(path)
    storage.remove(path)  # missing: nothing to do
    storage.remove(big)
    storage.remove_empty_folder(folder)
    assert not os.path.exists(folder)
    storage.remove_empty_folder(folder)  # missing: nothing to do
    assert os.listdir(tmp_path) == ["a"]  # no folder named after a URI either


def test_the_local_walk_skips_hidden_folders_at_any_depth(tmp_path):
    for relative in ("item/p1.jpg", "item/.cache/x.jpg", "item/sub/.git/y", "item/sub/p2.jpg", ".hidden/z"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"1")
    assert sorted(name for name, _ in storage.walk_files(str(tmp_path))) == ["item/p1.jpg", "item/sub/p2.jpg"]


def test_local_output_problems(tmp_path):
    folder = tmp_path / "out" / "new"
    assert storage.output_problem(str(folder)) is None
    assert folder.is_dir() and list(folder.iterdir()) == []  # made, and the probe is gone
    assert storage.output_problem(str(folder)) is None  # an existing folder is fine too
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert storage.output_problem(str(afile)) == f"output folder {afile} is an existing file, not a folder"
    assert storage.output_problem("/proc/self") == \
        "cannot write in output folder /proc/self (No such file or directory)"


@pytest.mark.parametrize("input_dir, output_dir, overlap", [
    ("/data/in", "/", True),
    ("/", "/data/out", True),
    ("/data/in", "/data/inX", False),
    ("/data/inX", "/data/in/tags", False),
    ("/data/inX/tags", "/data/in", False),
    ("/data/in/tags", "/data/inX", False),
    ("s3://b/x/../../b/in", "s3://b/in", True),
    ("s3://b/in", "s3://b/x/../../b/in/tags", True),
])
def test_overlap_at_the_root_and_beside_similar_names(input_dir, output_dir, overlap):
    problem = storage.overlap_problem(input_dir, output_dir)
    assert (problem is not None) is overlap, problem


# --- s3:// through moto ------------------------------------------------------------------------------

def test_s3_questions_go_to_the_bucket_s_store(s3_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bucket = make_bucket("mutquestions")
    holder = storage.store(bucket + "/in")
    assert storage.store(bucket + "/other/") is holder and storage.store("S3://mutquestions/x") is holder
    storage.write_atomic(bucket + "/in/z.txt", b"abc")
    storage.write_atomic(bucket + "/in/a.txt", "é")
    storage.write_atomic(bucket + "/in/sub/deep.txt", b"d")
    storage.write_atomic(bucket + "/inX", b"x")
    assert storage.read_bytes(bucket + "/in/a.txt") == "é".encode("utf-8")
    assert storage.files_in(bucket + "/in") == [bucket + "/in/a.txt", bucket + "/in/z.txt"]
    assert storage.files_in(bucket + "/in/") == [bucket + "/in/a.txt", bucket + "/in/z.txt"]
    assert storage.files_in(bucket + "/missing") == [] and storage.walk_files(bucket + "/missing/") == []
    assert sorted(storage.walk_files(bucket + "/in/")) == [("a.txt", bucket + "/in/a.txt"),
                                                          ("sub/deep.txt", bucket + "/in/sub/deep.txt"),
                                                          ("z.txt", bucket + "/in/z.txt")]
    assert storage.exists(bucket + "/in/z.txt") is True and storage.exists(bucket + "/in/nope") is False
    assert storage.exists(bucket + "/in") is True
    assert storage.isfile(bucket + "/in/z.txt") is True and storage.isfile(bucket + "/in") is False
    assert storage.isdir(bucket + "/in") is True and storage.isdir(bucket + "/in/z.txt") is False
    info = holder.system.get_file_info("mutquestions/in/z.txt")
    assert storage.version(bucket + "/in/z.txt") == (info.mtime_ns, 3)
    assert storage.version(bucket + "/in/nope") is None
    assert storage.read_bytes(bucket + "/in/z.txt", limit=3) == b"abc"
    with pytest.raises(OSError, match=r"^file over 2 bytes$"):
        storage.read_bytes(bucket + "/in/z.txt", limit=2)
    assert storage.basename(bucket + "/in/sub/") == "sub" and storage.basename(bucket + "/inX") == "inX"
    assert storage.root(bucket + "/in/") == bucket + "/in" and storage.root(bucket + "/inX/") == bucket + "/inX"
    assert storage.root(bucket + "/a://b") == bucket + "/a://b"
    assert storage.relpath(bucket + "/in/sub/deep.txt", bucket + "/in/") == "sub/deep.txt"
    assert storage.url(bucket + "/in/z.txt") == bucket + "/in/z.txt"
    assert storage.on_disk(bucket + "/in") is False and storage.on_disk(str(tmp_path)) is True
    assert storage.join(bucket + "/in", "z.txt") == bucket + "/in/z.txt"
    storage.makedirs(bucket + "/made/here")  # no folders on a store: nothing is written
    storage.remove_empty_folder(bucket + "/in/sub")
    os.makedirs(tmp_path / "s3:" / "mutquestions" / "empty")
    storage.remove_empty_folder(bucket + "/empty")  # never a local folder of that name
    assert (tmp_path / "s3:" / "mutquestions" / "empty").is_dir()
    os.rmdir(tmp_path / "s3:" / "mutquestions" / "empty")
    os.rmdir(tmp_path / "s3:" / "mutquestions")
    os.rmdir(tmp_path / "s3:")
    storage.remove(bucket + "/in/z.txt")
    storage.remove(bucket + "/in/z.txt")  # already gone: nothing to do
    assert keys("mutquestions") == ["in/a.txt", "in/sub/deep.txt", "inX"]
    assert os.listdir(tmp_path) == []  # nothing local was made or touched


def test_s3_errors_are_one_sentence_naming_the_action_and_the_uri(s3_server):
    make_bucket("muterrors")
    bad = "s3://muterrors/a//b"
    reason = "(Empty path component in path muterrors/a//b); check the URI"
    for call, what in ((lambda: storage.isfile(bad), "reach"), (lambda: storage.exists(bad), "reach"),
                       (lambda: storage.files_in(bad), "list"), (lambda: storage.walk_files(bad), "list"),
                       (lambda: storage.read_bytes(bad), "read"), (lambda: storage.write_atomic(bad, b"x"), "write")):
        with pytest.raises(storage.StorageError) as raised:
            call()
        assert str(raised.value) == f"cannot {what} {bad} {reason}"
    assert storage.output_problem(bad) == f"cannot reach {bad} {reason}"
    with pytest.raises(storage.StorageError) as raised:
        storage.write_atomic("s3://mutnobucket/x", b"x")
    assert str(raised.value).startswith("cannot write s3://mutnobucket/x (When uploading object with key 'x' in "
                                        "bucket 'mutnobucket': AWS Error NO_SUCH_BUCKET during PutObject")
    with pytest.raises(storage.StorageError) as raised:
        storage.remove("s3://mutnobucket/x")
    assert str(raised.value) == ("cannot delete s3://mutnobucket/x (An error occurred (NoSuchBucket) when calling "
                                 "the DeleteObject operation: The specified bucket does not exist)")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("s3://muterrors/missing")


class Refusing:
    """A file system that refuses every call with `error`."""

    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        def refuse(*args):
            raise self.error
        return refuse


def test_refusals_of_the_store_become_sentences(s3_server, monkeypatch):
    make_bucket("mutrefusals")
    holder = storage.store("s3://mutrefusals/out")
    monkeypatch.setattr(holder, "system", Refusing(PermissionError("Access Denied\nrequest id 12")))
    assert storage.output_problem("s3://mutrefusals/out") == \
        "cannot write in output folder s3://mutrefusals/out (Access Denied)"
    with pytest.raises(storage.StorageError) as raised:
        storage.isdir("s3://mutrefusals/out")
    assert str(raised.value) == "cannot reach s3://mutrefusals/out (Access Denied)"
    monkeypatch.setattr(holder, "raw_delete", None)  # the file system's own delete, as for gs://
    with pytest.raises(storage.StorageError) as raised:
        storage.remove("s3://mutrefusals/out/x.json")
    assert str(raised.value) == "cannot delete s3://mutrefusals/out/x.json (Access Denied)"
    monkeypatch.setattr(holder, "system", Refusing(FileNotFoundError("gone")))
    storage.remove("s3://mutrefusals/out/x.json")  # already gone: nothing to do


def test_a_store_without_its_own_delete_uses_the_file_system_s(s3_server, monkeypatch):
    bucket = make_bucket("mutfsdelete")
    holder = storage.store(bucket)
    monkeypatch.setattr(holder, "raw_delete", None)
    storage.write_atomic(bucket + "/out/a.json", b"{}")
    storage.write_atomic(bucket + "/out/b.json", b"{}")
    storage.remove(bucket + "/out/a.json")
    storage.remove(bucket + "/out/never.json")
    assert [name for name, _ in storage.walk_files(bucket)] == ["out/b.json"]


# --- other schemes ---------------------------------------------------------------------------------

def test_a_scheme_pyarrow_does_not_know_goes_through_fsspec():
    pytest.importorskip("fsspec")
    folder = "memory://mutfsspec/items"
    storage.write_atomic(folder + "/b.txt", b"2")
    storage.write_atomic(folder + "/a.txt", b"1")
    assert storage.read_bytes(folder + "/a.txt") == b"1"
    assert storage.files_in(folder) == ["memory:///mutfsspec/items/a.txt", "memory:///mutfsspec/items/b.txt"]
    assert storage.store(folder).raw_delete is None
    storage.remove(folder + "/a.txt")
    storage.remove(folder + "/a.txt")
    assert storage.exists(folder + "/a.txt") is False and storage.exists(folder + "/b.txt") is True


def test_a_scheme_pyarrow_knows_uses_pyarrow_s_file_system(monkeypatch):
    pafs = pytest.importorskip("pyarrow.fs")
    monkeypatch.setattr(storage, "_STORES", {})
    holder = storage.store("mock://mutmock/x")
    assert type(holder.system) is type(pafs.FileSystem.from_uri("mock:///")[0])
    assert storage.exists("mock://mutmock/x") is False and holder.bucketed is False


def test_unknown_schemes_are_one_sentence(monkeypatch):
    pytest.importorskip("pyarrow.fs")
    monkeypatch.setattr(storage, "_STORES", {})
    with pytest.raises(storage.StorageError) as raised:
        storage.exists("nosuch://host/x")
    assert str(raised.value) == "cannot open nosuch://host/x: no file system for 'nosuch://' (Protocol not known: nosuch)"
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(storage.StorageError) as raised:
        storage.exists("nosuch://host/x")
    assert str(raised.value) == ("cannot open nosuch://host/x (Unrecognized filesystem type in URI: nosuch://host/x); "
                                 "pyarrow does not know 'nosuch://' and fsspec is not installed")


# --- how the S3 file system is configured ----------------------------------------------------------

class FakeArrow:
    class S3FileSystem:
        def __init__(self, **options):
            self.options = options


ENVIRONMENT = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_NO_SIGN_REQUEST",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED",
               "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               *storage.CREDENTIAL_VARIABLES)


@pytest.fixture
def bare_environment(monkeypatch, tmp_path):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def s3_configuration(monkeypatch, **environment):
    """(pyarrow's options, boto3's client arguments) for this environment."""
    import boto3

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    made = {}
    client = boto3.session.Session.client

    def recording(self, *args, **kwargs):
        made.update(kwargs, client=client(self, *args, **kwargs))
        return made["client"]

    monkeypatch.setattr(boto3.session.Session, "client", recording)
    system, delete = storage._s3_filesystem(FakeArrow, "s3", "s3://b/x")
    assert callable(delete)
    config = made.pop("client").meta.config  # what the client uses, botocore's defaults included
    made["config"] = {name: getattr(config, name) for name in ("connect_timeout", "read_timeout", "signature_version")}
    return system.options, made


def test_s3_endpoint_and_region_come_from_the_environment(bare_environment):
    import botocore

    common = {"connect_timeout": 10, "request_timeout": 60, "allow_delayed_open": True, "anonymous": False}
    config = {"connect_timeout": 10, "read_timeout": 60, "signature_version": "s3v4"}
    with bare_environment.context() as env:
        assert s3_configuration(env, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_ENDPOINT_URL_S3="http://s3.example:9000",
                                AWS_ENDPOINT_URL="http://other.example") == (
            {**common, "endpoint_override": "http://s3.example:9000", "region": "us-east-1"},
            {"endpoint_url": "http://s3.example:9000", "region_name": "us-east-1", "config": config})
    with bare_environment.context() as env:
        assert s3_configuration(env, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_ENDPOINT_URL="http://other.example",
                                AWS_DEFAULT_REGION="eu-north-1") == (
            {**common, "endpoint_override": "http://other.example", "region": "eu-north-1"},
            {"endpoint_url": "http://other.example", "region_name": "eu-north-1", "config": config})
    with bare_environment.context() as env:
        assert s3_configuration(env, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="eu-west-3",
                                AWS_DEFAULT_REGION="ap-south-1") == (
            {**common, "region": "eu-west-3"}, {"endpoint_url": None, "region_name": "eu-west-3", "config": config})
    with bare_environment.context() as env:
        assert s3_configuration(env, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="ap-south-1") == (
            {**common, "region": "ap-south-1"}, {"endpoint_url": None, "region_name": "ap-south-1", "config": config})
    with bare_environment.context() as env:  # a public bucket: no credentials asked for, unsigned requests
        assert s3_configuration(env, AWS_NO_SIGN_REQUEST="TRUE", AWS_EC2_METADATA_DISABLED="true") == (
            {**common, "anonymous": True}, {"endpoint_url": None, "region_name": None,
                                            "config": {**config, "signature_version": botocore.UNSIGNED}})


def test_s3_without_boto3_names_the_requirements_file(bare_environment):
    bare_environment.setenv("AWS_ACCESS_KEY_ID", "k")
    bare_environment.setitem(sys.modules, "boto3", None)
    with pytest.raises(storage.StorageError) as raised:
        storage._s3_filesystem(FakeArrow, "s3", "s3://b/x")
    assert str(raised.value) == "paths like s3://b/x need boto3: pip install -r requirements-scale.txt"


# --- credentials -----------------------------------------------------------------------------------

ADVICE = ("no AWS credentials are configured; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
          "with ~/.aws/credentials, or AWS_NO_SIGN_REQUEST=true for a public bucket")


def test_credentials_are_found_in_any_variable_or_file(bare_environment, tmp_path):
    env = bare_environment
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(storage.StorageError, match="^no AWS credentials are configured"):
        storage._check_credentials()
    for name in storage.CREDENTIAL_VARIABLES:
        with env.context() as inner:
            inner.setenv(name, "x")
            storage._check_credentials()  # no error
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("[default]\n")
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        with env.context() as inner:
            inner.setenv(name, str(elsewhere))
            storage._check_credentials()
    (tmp_path / ".aws").mkdir()
    for name in ("credentials", "config"):
        (tmp_path / ".aws" / name).write_text("[default]\n")
        storage._check_credentials()
        os.unlink(tmp_path / ".aws" / name)
    with pytest.raises(storage.StorageError, match="^no AWS credentials are configured"):
        storage._check_credentials()


def test_the_metadata_service_is_asked_once_briefly_at_its_port(bare_environment, caplog):
    env = bare_environment
    asked = []

    def refuse(address, *args, **kwargs):
        asked.append((address, args, kwargs))
        raise ConnectionRefusedError(111, "Connection refused")

    env.setattr(socket, "create_connection", refuse)
    caplog.set_level(logging.INFO, logger="tagestimate.storage")
    for endpoint, address in (("http://127.0.0.1:12345", ("127.0.0.1", 12345)), ("http://127.0.0.2", ("127.0.0.2", 80)),
                              (None, ("169.254.169.254", 80))):
        if endpoint:
            env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
        else:
            env.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        shown = endpoint or "http://169.254.169.254"
        caplog.clear()
        asked.clear()
        with pytest.raises(storage.StorageError) as raised:
            storage._check_credentials()
        assert str(raised.value) == f"{ADVICE} (the EC2 instance metadata service at {shown} did not answer either)"
        assert asked == [(address, (), {"timeout": 1.0})]
        assert [(record.levelname, record.getMessage()) for record in caplog.records] == \
            [("INFO", f"no AWS credentials configured: asking the EC2 instance metadata service at {shown}")]


def test_the_output_probe_is_one_empty_object_deleted_at_once(s3_server, monkeypatch):
    bucket = make_bucket("mutprobe")
    holder = storage.store(bucket)
    system, written = holder.system, []

    class Stream:
        def __init__(self, path):
            self.path, self.stream = path, system.open_output_stream(path)

        def write(self, data):
            written.append((self.path.rsplit("/", 1)[0], self.path.rsplit("/", 1)[1][:12], bytes(data)))
            return self.stream.write(data)

        def close(self):
            return self.stream.close()

    class Recording:
        def __getattr__(self, name):
            return getattr(system, name)

        def open_output_stream(self, path):
            return Stream(path)

    monkeypatch.setattr(holder, "system", Recording())
    assert storage.output_problem(bucket + "/out") is None
    assert written == [("mutprobe/out", ".write-test-", b"")]
    assert keys("mutprobe") == []
