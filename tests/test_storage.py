"""Object storage: the local engine reading s3://bucket/input/ and writing s3://bucket/output/ on a
real S3 API on loopback (moto's server), giving the bytes of a run on local folders."""

import json
import logging
import os
import subprocess
import sys

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
    saved = {name: os.environ.get(name) for name in
             ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_DEFAULT_REGION="us-east-1")
    storage._SYSTEMS.clear()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        storage._SYSTEMS.clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_bucket(name):
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


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
    assert sorted(remote) == sorted(local) == ["book1.json", "book2.json", "errors.json", "input.json"]
    for name in ("book1.json", "book2.json", "input.json"):
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
    assert sorted(pages) == ["book1.iiif.json", "book2.iiif.json", "context.jsonld", "errors.json", "input.iiif.json"]
    page = json.loads(pages["book1.iiif.json"])
    AnnotationPage(**page)
    assert page["items"] and all(a["target"].startswith("https://example.org/img/book1/") for a in page["items"])


def test_s3_output_problems_are_one_sentence_before_any_model_work(tmp_path, s3_server, capsys):
    bucket = make_bucket("checks")
    storage.write_atomic(bucket + "/afile", b"x")
    source = make_input(str(tmp_path / "input"))
    for output, expected in ((bucket + "/afile", "is an existing file, not a folder"),
                             ("s3://no-such-bucket/out", "cannot write")):
        with pytest.raises(SystemExit) as stop:
            multiinference.main(["--inputpath", source, "--outputpath", output, "--weights", "missing.h5"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and len(err.strip().splitlines()) == 1
    assert storage.walk_files(bucket) == [("afile", bucket + "/afile")]  # the probe object is gone


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
    monkeypatch.setattr(storage, "_SYSTEMS", {})
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
