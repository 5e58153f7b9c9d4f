"""Object storage: the local engine reading s3://bucket/input/ and writing s3://bucket/output/ on a
real S3 API on loopback (moto's server), giving the bytes of a run on local folders."""

import json
import logging
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

import multiinference
from conftest import ROOT
from labelmap import LABELS
from modelfiles import write_trained_weights
from tagestimate import storage
from tagestimate.tag.inference import find_items

LOGITS = np.full(len(LABELS), -4.0, np.float32)
LOGITS[LABELS.index("graphic")] = 3.0
LOGITS[LABELS.index("stamp")] = 1.0


def make_input(folder):
    """Two items (one with a sub-folder and a bad file), loose images, hidden files that are ignored."""
    def image(relative, color):
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (48, 40), color).save(path)

    image("book1/p10.jpg", (10, 200, 30))
    image("book1/p2.png", (200, 10, 30))
    image("book1/scans/p1.jpg", (90, 90, 90))
    image("book2/a.jpg", (1, 2, 3))
    image("loose.jpg", (5, 5, 5))
    image(".hidden/x.jpg", (5, 5, 5))
    image("book2/.x.jpg", (5, 5, 5))
    with open(os.path.join(folder, "book2", "bad.jpg"), "w") as handle:
        handle.write("<html>not an image</html>")
    with open(os.path.join(folder, "book2", "notes.txt"), "w") as handle:
        handle.write("not an image extension")
    return folder


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback, with the environment a user would set; yields its endpoint."""
    pytest.importorskip("pyarrow")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in this process: a second session here (mutmut runs pytest twice in
    # one process) would otherwise find the first one's objects.
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"),
                           timeout=10).close()
    saved = {name: os.environ.get(name) for name in
             ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_DEFAULT_REGION="us-east-1")
    storage._STORES.clear()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        storage._STORES.clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_bucket(name):
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def keys(bucket):
    """Every key in the bucket as S3 lists it, zero-byte "folder/" markers included."""
    import boto3

    return sorted(entry["Key"] for entry in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []))


def upload(folder, uri):
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                storage.write_atomic(storage.join(uri, os.path.relpath(path, folder)), handle.read())


def download(uri):
    """{relative path: bytes} of every object under uri."""
    return {relative: storage.read_bytes(path) for relative, path in storage.walk_files(uri)}


def local_files(folder):
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.relpath(os.path.join(root, name), folder)] = handle.read()
    return found


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path, _ = write_trained_weights(str(tmp_path_factory.mktemp("weights")), logits=LOGITS)
    return path


def test_a_uri_input_lists_as_the_same_folder_on_disk(tmp_path, s3_server):
    source = make_input(str(tmp_path / "input"))
    bucket = make_bucket("listing")
    upload(source, bucket + "/input")
    local, local_problems = find_items(source)
    remote, remote_problems = find_items(bucket + "/input/")
    assert [(item.name, [key for key, _ in item.images]) for item in remote] == \
           [(item.name, [key for key, _ in item.images]) for item in local]
    assert [item.name for item in remote] == ["book1", "book2", "input"]
    assert remote[0].images[0] == ("p10", "s3://listing/input/book1/p10.jpg")
    assert remote_problems == local_problems == []


@pytest.mark.slow
def test_local_engine_on_s3_writes_the_bytes_of_a_local_run(tmp_path, s3_server, weights, capsys):
    source = make_input(str(tmp_path / "input"))
    bucket = make_bucket("engine")
    upload(source, bucket + "/input")
    common = ["--weights", weights, "--quiet", "--backend", "tensorflow"]
    assert multiinference.main(["--inputpath", source, "--outputpath", str(tmp_path / "out"), "--no-report",
                                *common]) == 0
    # The review report is for a local folder: an object-store output gets none, and says so.
    assert multiinference.main(["--inputpath", bucket + "/input/", "--outputpath", bucket + "/output/",
                                *common]) == 0
    remote, local = download(bucket + "/output"), local_files(str(tmp_path / "out"))
    assert sorted(remote) == sorted(local) == ["book1.emb.npz", "book1.json", "book2.emb.npz", "book2.json",
                                               "errors.json", "input.emb.npz", "input.json"]
    for name in ("book1.json", "book2.json", "input.json", "book1.emb.npz", "book2.emb.npz", "input.emb.npz"):
        assert remote[name] == local[name]
    # errors.json names the object where the local run names the file
    assert json.loads(remote["errors.json"]) == [
        dict(entry, path=entry["path"].replace(source, bucket + "/input"))
        for entry in json.loads(local["errors.json"])]
    assert json.loads(remote["errors.json"])[0]["path"] == bucket + "/input/book2/bad.jpg"
    # resume: a second run finds every output in the bucket and tags nothing
    assert multiinference.main(["--inputpath", bucket + "/input", "--outputpath", bucket + "/output",
                                *common]) == 0
    assert "3 items already done" in capsys.readouterr().out
    # --format iiif into the bucket: pages and their JSON-LD context, targets under --target-base.
    from iiif_prezi3 import AnnotationPage

    assert multiinference.main(["--inputpath", bucket + "/input", "--outputpath", bucket + "/iiif", "--format", "iiif",
                                "--id-base", "https://example.org/t", "--target-base", "https://example.org/img",
                                *common]) == 0
    pages = download(bucket + "/iiif")
    assert sorted(pages) == ["book1.emb.npz", "book1.iiif.json", "book2.emb.npz", "book2.iiif.json", "context.jsonld",
                             "errors.json", "input.emb.npz", "input.iiif.json"]
    page = json.loads(pages["book1.iiif.json"])
    AnnotationPage(**page)
    assert page["items"] and all(a["target"].startswith("https://example.org/img/book1/") for a in page["items"])


def test_s3_output_problems_are_one_sentence_before_any_model_work(tmp_path, s3_server, capsys):
    bucket = make_bucket("checks")
    storage.write_atomic(bucket + "/afile", b"x")
    source = make_input(str(tmp_path / "input"))
    for output, expected in ((bucket + "/afile", "is an existing file, not a folder"),
                             ("s3://no-such-bucket/out", "error: bucket no-such-bucket of output folder "
                                                         "s3://no-such-bucket/out does not exist; pass --outputpath")):
        with pytest.raises(SystemExit) as stop:
            multiinference.main(["--inputpath", source, "--outputpath", output, "--weights", "missing.h5"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert storage.walk_files(bucket) == [("afile", bucket + "/afile")]  # the probe object is gone
    assert storage.output_problem(bucket + "/fresh/out") is None
    assert keys("checks") == ["afile"]  # nor any zero-byte "fresh/out/" marker of its deletion


def test_atomic_write_to_s3_is_whole_and_leaves_no_temporary_object(s3_server):
    bucket = make_bucket("atomic")
    data = os.urandom(3 << 20)
    storage.write_atomic(bucket + "/out/item.json", data)
    assert storage.read_bytes(bucket + "/out/item.json") == data
    assert [name for name, _ in storage.walk_files(bucket)] == ["out/item.json"]
    with pytest.raises(OSError):
        storage.read_bytes(bucket + "/out/item.json", limit=1 << 20)  # hostile sizes are capped


def test_a_uri_without_pyarrow_names_the_requirements_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # as if not installed
    monkeypatch.setattr(storage, "_STORES", {})
    with pytest.raises(storage.StorageError, match="pip install -r requirements-scale.txt"):
        storage.exists("s3://bucket/input")


def test_local_paths_never_import_pyarrow_or_ray():
    code = ("import sys; from tagestimate import storage; from tagestimate.tag import inference; "
            "storage.write_atomic('x.txt', 'a'); assert storage.exists('x.txt'); storage.remove('x.txt'); "
            "inference.find_items('.'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'ray', 'fsspec')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_module_but_storage_asks_what_kind_of_path_it_holds():
    for folder, _, names in os.walk(os.path.join(ROOT, "tagestimate")):
        for name in names:
            if name.endswith(".py") and name != "storage.py":
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    assert "is_uri" not in handle.read(), name


def test_the_local_store_lists_what_find_items_needs(tmp_path):
    source = make_input(str(tmp_path / "input"))
    os.symlink(os.path.join(source, "book2"), os.path.join(source, "linked"))  # an item folder may be a link
    walked = dict(storage.walk_files(source))
    assert walked["book1/scans/p1.jpg"] == os.path.join(source, "book1", "scans", "p1.jpg")
    assert walked["linked/a.jpg"] == os.path.join(source, "linked", "a.jpg")
    assert ".hidden/x.jpg" not in walked and "book2/.x.jpg" in walked  # hidden folders are not entered
    assert storage.files_in(source) == [os.path.join(source, "loose.jpg")]
    assert storage.files_in(os.path.join(source, "missing")) == []
    assert storage.relpath(os.path.join(source, "book1", "p2.png"), source) == "book1/p2.png"
    assert storage.relpath("s3://bucket/in/x.jpg", source) is None  # two stores: no relative path
    assert storage.url(source) == "file://" + source and storage.root(source + "/") == source
    items, _ = find_items(source)
    assert [item.name for item in items] == ["book1", "book2", "linked", "input"]


@pytest.mark.parametrize("engine", ["local", "ray"])
@pytest.mark.parametrize("uri", ["s3:///tags", "s3://"])
def test_a_uri_without_bucket_is_one_sentence_as_input_and_as_output(tmp_path, s3_server, capsys, engine, uri):
    source = make_input(str(tmp_path / "input"))
    for flags in (["--inputpath", uri, "--outputpath", str(tmp_path / "out")],
                  ["--inputpath", source, "--outputpath", uri]):
        with pytest.raises(SystemExit) as stop:
            multiinference.main([*flags, "--engine", engine, "--weights", "missing.h5"])
        assert stop.value.code == 2
        assert capsys.readouterr().err == f"error: {uri} names no bucket; write s3://BUCKET/FOLDER\n"


def test_deletes_leave_no_folder_marker_objects(s3_server):
    bucket = make_bucket("markers")
    for name in ("out/book1.json", "out/.pending-errors/book2.json", "out/errors.json"):
        storage.write_atomic(f"{bucket}/{name}", b"{}")
    storage.remove(bucket + "/out/.pending-errors/book2.json")
    storage.remove_empty_folder(bucket + "/out/.pending-errors")
    storage.remove(bucket + "/out/errors.json")
    storage.remove(bucket + "/out/never-written.json")
    assert keys("markers") == ["out/book1.json"]


def whole_or_nothing_problems(uri, data, write):
    """What an observer of the bucket saw go wrong while `write(uri, data)` ran: the store's file system
    is wrapped so that every object is read after each of its calls and stream writes, and a thread
    reads the final key all along."""
    import threading

    import boto3

    client = boto3.client("s3")
    bucket, key = uri[len("s3://"):].split("/", 1)
    seen = {}  # key -> set of contents seen under it

    def snapshot():
        for name in keys(bucket):
            seen.setdefault(name, set()).add(client.get_object(Bucket=bucket, Key=name)["Body"].read())

    class Recording:
        def __init__(self, wrapped):
            self.wrapped = wrapped

        def __enter__(self):
            return self

        def __exit__(self, *error):
            self.close()

        def __getattr__(self, name):
            attribute = getattr(self.wrapped, name)
            if not callable(attribute):
                return attribute

            def call(*args, **kwargs):
                result = attribute(*args, **kwargs)
                snapshot()
                return Recording(result) if name.startswith("open_output") else result
            return call

    holder = storage.store(uri)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.setdefault(key, set()).add(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            except client.exceptions.NoSuchKey:
                pass
            stop.wait(0.01)  # moto answers in this process: leave it time to serve the write

    poller = threading.Thread(target=poll)
    system, holder.system = holder.system, Recording(holder.system)
    poller.start()
    try:
        write(uri, data)
    finally:
        stop.set()
        poller.join()
        holder.system = system
    problems = [f"{key} was seen with {len(content):,} of {len(data):,} bytes"
                for content in sorted(seen.pop(key, ()), key=len) if content != data]
    problems += [f"temporary object {name} was seen" + (" and is left" if name in keys(bucket) else "")
                 for name in sorted(seen)]
    if keys(bucket) != [key]:
        problems.append(f"the bucket holds {keys(bucket)}")
    return problems


@pytest.mark.parametrize("size", [3 << 20, 11 << 20])  # one PutObject; a multipart upload
def test_writes_to_s3_are_whole_or_nothing_while_they_happen(s3_server, size):
    bucket = make_bucket(f"whole{size}")
    data = os.urandom(size)
    assert whole_or_nothing_problems(bucket + "/out/item.json", data, storage.write_atomic) == []
    assert storage.read_bytes(bucket + "/out/item.json") == data


def test_the_whole_or_nothing_observer_sees_a_half_write_and_a_left_temporary(s3_server):
    bucket = make_bucket("halfwrites")
    holder = storage.store(bucket)

    def half_then_whole(uri, data):
        for part in (data[:len(data) // 2], data):
            with holder.system.open_output_stream(holder.inner(uri)) as stream:
                stream.write(part)

    def temporary_then_copy(uri, data):
        with holder.system.open_output_stream(holder.inner(uri) + ".part") as stream:
            stream.write(data)
        holder.system.copy_file(holder.inner(uri) + ".part", holder.inner(uri))

    data = os.urandom(1 << 20)
    assert whole_or_nothing_problems(bucket + "/out/a.json", data, half_then_whole)[0] == \
           "out/a.json was seen with 524,288 of 1,048,576 bytes"
    assert "temporary object out/b.json.part was seen and is left" in \
           whole_or_nothing_problems(bucket + "/out/b.json", data, temporary_then_copy)


def test_without_credentials_s3_is_one_sentence_at_once(tmp_path, monkeypatch, capsys):
    """No credentials configured: refused before pyarrow is asked, without waiting ~99 s for an EC2
    metadata service; the only address contacted is a loopback port that refuses."""
    import socket
    import time

    pytest.importorskip("pyarrow.fs")
    for name in (*storage.CREDENTIAL_VARIABLES, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setattr(storage, "_STORES", {})
    monkeypatch.setattr("pyarrow.fs.S3FileSystem", lambda **options: pytest.fail("pyarrow looks for credentials"))
    contacted = []
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *args, **kwargs: contacted.append(address) or connect(address, *args, **kwargs))
    source = make_input(str(tmp_path / "input"))
    advice = ("error: no AWS credentials are configured; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
              "AWS_PROFILE with ~/.aws/credentials, or AWS_NO_SIGN_REQUEST=true for a public bucket")
    with socket.socket() as bound:  # bound, not listening: refused at once
        bound.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{bound.getsockname()[1]}"
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
        started = time.monotonic()
        with pytest.raises(SystemExit) as stop:
            multiinference.main(["--inputpath", source, "--outputpath", "s3://bucket/out", "--weights", "x.h5"])
    assert stop.value.code == 2 and time.monotonic() - started < 10
    assert capsys.readouterr().err == \
           f"{advice} (the EC2 instance metadata service at {endpoint} did not answer either)\n"
    assert [host for host, _ in contacted] == ["127.0.0.1"]
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the metadata service is not even asked
    with pytest.raises(SystemExit):
        multiinference.main(["--inputpath", "s3://bucket/in", "--outputpath", str(tmp_path / "out")])
    assert capsys.readouterr().err == advice + "\n" and len(contacted) == 1


def test_overlapping_input_and_output_are_refused(tmp_path, s3_server, capsys):
    source = make_input(str(tmp_path / "input"))
    bucket = make_bucket("overlap")
    upload(source, bucket + "/in")
    for input_dir, output_dir in ((source, source), (source, os.path.join(source, "tags")),
                                  (os.path.join(source, "book1"), source), (source, source + "/book2/../"),
                                  (bucket + "/in/", bucket + "/in"), (bucket + "/in", bucket + "/in/tags/")):
        with pytest.raises(SystemExit) as stop:
            multiinference.main(["--inputpath", input_dir, "--outputpath", output_dir, "--weights", "x.h5"])
        assert stop.value.code == 2
        assert capsys.readouterr().err == (f"error: input folder {input_dir} and output folder {output_dir} overlap "
                                           "(one is inside the other), so a run would tag its own outputs; choose "
                                           "separate folders\n")
    assert not os.path.exists(os.path.join(source, "tags"))  # refused before the output folder is made
    for input_dir, output_dir in ((source, source + "2"), (bucket + "/in", bucket + "/input"),
                                  (bucket + "/in", "s3://other/in")):
        assert storage.overlap_problem(input_dir, output_dir) is None


def test_a_public_bucket_is_read_without_credentials(s3_server, monkeypatch):
    import boto3

    bucket = make_bucket("public")
    boto3.client("s3").put_object(Bucket="public", Key="in/a.jpg", Body=b"x", ACL="public-read")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setattr(storage, "_STORES", {})
    with pytest.raises(storage.StorageError, match="no AWS credentials"):
        storage.isdir(bucket + "/in")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "true")
    assert storage.read_bytes(bucket + "/in/a.jpg") == b"x"  # moto refuses unsigned reads of private objects
