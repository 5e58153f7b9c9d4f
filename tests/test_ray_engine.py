"""--engine ray on a local Ray (2 CPUs): the local engine's bytes, resume, errors.json, clear errors,
no Ray process left behind, and object storage on a loopback S3. One Ray start for the in-process tests."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import multiinference
from conftest import ROOT
from labelmap import LABELS
from modelfiles import write_trained_weights
from tagestimate.tag import ray_engine
from test_storage import download, keys, make_bucket, s3_server, upload  # noqa: F401 - s3_server is a fixture

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # each test starts Ray or model-holding actors: seconds

LOGITS = np.full(len(LABELS), -4.0, np.float32)
LOGITS[LABELS.index("graphic")] = 3.0
LOGITS[LABELS.index("graphic_map")] = -0.45  # just below 0.4: a threshold off by a little shows


def make_items(folder):
    """Three items: varied colours, a sub-folder, a bad file in book2."""
    for item, count in (("book1", 3), ("book2", 2), ("book10", 1)):
        for page in range(count):
            path = os.path.join(folder, item, f"{item}_{page}_0.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.new("RGB", (50 + page, 40), (40 * page, 90, 200 - page)).save(path)
    os.makedirs(os.path.join(folder, "book1", "scans"))
    Image.new("RGB", (60, 60), (7, 8, 9)).save(os.path.join(folder, "book1", "scans", "p1.png"))
    with open(os.path.join(folder, "book2", "broken.jpg"), "wb") as handle:
        handle.write(b"\xff\xd8\xff\xe0 truncated")
    return folder


def files_in(folder, report=False):
    """{name: bytes} of the files in `folder`; the review report's index.html (it names the engine
    and the date) only with report=True."""
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and (report or name != "index.html"):
            with open(path, "rb") as handle:
                found[name] = handle.read()
    return found


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path, _ = write_trained_weights(str(tmp_path_factory.mktemp("weights")), logits=LOGITS)
    return path


@pytest.fixture(scope="module")
def local_ray(s3_server):  # noqa: F811 - after the S3 server, so workers inherit its environment
    """One local Ray for this module's in-process tests (the engine joins it, and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env=ray_engine.runtime_env())  # as the engine starts its own
    try:
        yield
    finally:
        ray.shutdown()


def run(source, output, weights, *extra, engine="ray"):
    return multiinference.main(["--inputpath", str(source), "--outputpath", str(output), "--weights", weights,
                                "--quiet", "--backend", "tensorflow", "--engine", engine, *map(str, extra)])


def process_table():
    """{pid: (parent pid, process group, first word of the command line)} of the processes running now."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):  # not /proc/self and the like
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()  # after "pid (name)": the name may hold spaces
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")[0]
        except (OSError, ValueError):
            continue
        table[int(pid)] = (int(fields[1]), int(fields[2]), command)
    return table


def ray_processes(group):
    """pids of the raylet and gcs_server processes in process group `group`: one Ray session's, not
    those of another program's Ray on the same machine (Ray starts them in its driver's group)."""
    return {pid for pid, (_, pgid, command) in process_table().items()
            if pgid == group and os.path.basename(command) in (b"raylet", b"gcs_server")}


def descendants(root):
    """pids of the processes below `root` (children, theirs, ...): a Ray started here has its
    raylet as a child, and the raylet forks the workers."""
    table = process_table()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (parent, _, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def test_script_gives_the_local_engine_s_bytes_and_leaves_no_ray_running(tmp_path, weights):
    source = make_items(str(tmp_path / "input"))
    assert run(source, tmp_path / "local", weights, engine="local") == 0
    arguments = ["--inputpath", source, "--outputpath", str(tmp_path / "ray"), "--weights", weights,
                 "--backend", "tensorflow", "--engine", "ray", "--quiet"]
    # In a process group of its own, so that its Ray's processes are told from other programs' Rays.
    script = subprocess.Popen([sys.executable, os.path.join(ROOT, "multiinference.py"), *arguments],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = script.communicate(timeout=300)
    finally:
        script.kill()
    assert script.returncode == 0, stderr
    assert "7 images tagged in 3 items, 1 file skipped" in stdout
    # Only our own lines: the skipped file, no Ray line (logging.cc's notice of RAY_BACKEND_LOG_LEVEL).
    assert [line.split(": ")[0] for line in stderr.splitlines()] == [
        f"skipped {os.path.join(source, 'book2', 'broken.jpg')}"], stderr
    assert files_in(tmp_path / "ray") == files_in(tmp_path / "local")  # errors.json included
    assert sorted(files_in(tmp_path / "ray", report=True)) == [  # the .emb.npz: the same bytes (above)
        "book1.emb.npz", "book1.json", "book10.emb.npz", "book10.json", "book2.emb.npz", "book2.json", "errors.json",
        "index.html"]
    # The report's full probabilities come from the Ray workers too, with the same bytes.
    assert files_in(tmp_path / "ray" / "html" / "data") == files_in(tmp_path / "local" / "html" / "data")
    assert len(files_in(tmp_path / "ray" / "html" / "data")) == 3
    [entry] = json.loads(files_in(tmp_path / "ray")["errors.json"])
    assert entry["item"] == "book2" and entry["path"].endswith("broken.jpg")
    deadline = time.monotonic() + 20  # ray.shutdown() has sent the signals; give them a moment
    while ray_processes(script.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(script.pid)


def test_resume_takes_over_the_errors_of_an_interrupted_run(tmp_path, weights, local_ray):
    source = make_items(str(tmp_path / "input"))
    out = tmp_path / "out"
    out.mkdir()
    # As a driver killed mid-run leaves it: book2 done by a worker (output and its pending
    # errors), book1 and book10 not started.
    (out / "book2.json").write_text('{"marker": []}')
    pending = out / ray_engine.PENDING_FOLDER
    pending.mkdir()
    (pending / "book2.json").write_text(json.dumps([["book2", "x/broken.jpg", "corrupt"]]))
    assert run(source, out, weights) == 0
    assert ray_processes(os.getpgrp())  # the module's Ray is seen: the check of the script test can fail
    assert (out / "book2.json").read_text() == '{"marker": []}'  # done: not scheduled again
    assert json.loads((out / "book1.json").read_text()).keys() == {"book1_0_0", "book1_1_0", "book1_2_0", "scans/p1"}
    assert (out / "book10.json").exists()
    assert json.loads((out / "errors.json").read_text()) == [
        {"item": "book2", "path": "x/broken.jpg", "reason": "corrupt"}]
    assert not pending.exists()  # merged into errors.json, then removed


def test_a_worker_that_cannot_load_the_model_is_one_error(tmp_path, weights, local_ray, capsys):
    source = make_items(str(tmp_path / "input"))
    # model.json says 64 px, the file holds a model of another label count: the driver's
    # description passes, the worker's load fails.
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads(open(os.path.join(os.path.dirname(weights), "model.json")).read())
    config["labels"] = config["labels"][:3]
    (broken / "model.json").write_text(json.dumps(config))
    (broken / "best.weights.h5").write_bytes(open(weights, "rb").read())  # the module's file: no model built
    assert run(source, tmp_path / "out", str(broken / "best.weights.h5")) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "could not load the model" in lines[0] and "does not fit" in lines[0], err
    assert not (tmp_path / "out" / "book1.json").exists()


def test_a_missing_model_file_is_one_error_before_ray_starts(tmp_path):
    source = make_items(str(tmp_path / "input"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "multiinference.py"), "--inputpath", source,
                           "--outputpath", str(tmp_path / "out"), "--weights", str(tmp_path / "nope.h5"),
                           "--engine", "ray", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: weight file {tmp_path / 'nope.h5'} does not exist; "
                                                "check --weights"]


def test_ray_engine_reads_and_writes_s3_with_the_local_bytes(tmp_path, weights, local_ray, s3_server):  # noqa: F811
    source = make_items(str(tmp_path / "input"))
    bucket = make_bucket("rayengine")
    upload(source, bucket + "/input")
    assert run(source, tmp_path / "local", weights, engine="local") == 0
    assert run(bucket + "/input/", bucket + "/output/", weights) == 0
    remote, local = download(bucket + "/output"), files_in(tmp_path / "local")
    assert sorted(remote) == sorted(local)
    for name in ("book1.json", "book2.json", "book10.json", "book1.emb.npz", "book2.emb.npz", "book10.emb.npz"):
        assert remote[name] == local[name]
    assert json.loads(remote["errors.json"])[0]["path"] == bucket + "/input/book2/broken.jpg"
    # the pending errors of book2 were deleted without leaving a zero-byte ".pending-errors/" marker
    assert [key for key in keys("rayengine") if key.startswith("output/")] == [f"output/{name}" for name in sorted(local)]


def test_the_local_engine_never_imports_ray(tmp_path, weights):
    source = make_items(str(tmp_path / "input"))
    code = ("import sys, multiinference; "
            f"rc = multiinference.main(['--inputpath', {source!r}, '--outputpath', {str(tmp_path / 'out')!r}, "
            f"'--weights', {weights!r}, '--quiet', '--backend', 'tensorflow']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr


def test_an_unreachable_cluster_or_no_ray_is_one_error(tmp_path, weights, monkeypatch, capsys):
    import socket

    source = make_items(str(tmp_path / "input"))
    with socket.socket() as bound:  # bound, not listening: refused, and no one else can take the port
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        started = time.monotonic()
        assert run(source, tmp_path / "out", weights, "--ray-address", f"ray://127.0.0.1:{port}") == 1
    assert time.monotonic() - started < 30  # Ray alone waits minutes on an address that does not answer
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach the Ray cluster at ray://127.0.0.1:{port}")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert run(source, tmp_path / "out", weights) == 1
    assert capsys.readouterr().err.strip() == ("error: --engine ray needs Ray: pip install -r "
                                               "requirements-scale.txt")


def test_a_killed_worker_s_item_is_retried_and_no_partial_file_is_left(tmp_path, weights, local_ray):
    import signal
    import threading

    source = str(tmp_path / "input")
    for item in range(12):
        for page in range(12):
            path = os.path.join(source, f"book{item}", f"p{page}.jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.new("RGB", (64, 64), (item * 20, page * 20, 90)).save(path)
    assert run(source, tmp_path / "local", weights, engine="local") == 0
    out = tmp_path / "ray"
    killed = []

    def kill_one_actor_after_the_first_output():
        """SIGKILL to one of this module's Ray actors (below this process), never another program's."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if out.exists() and any(name.endswith(".json") for name in os.listdir(out)):
                table = process_table()
                for pid in sorted(descendants(os.getpid())):
                    if table.get(pid, (0, 0, b""))[2].startswith(b"ray::MapWorker"):
                        killed.append(len(os.listdir(out)))
                        os.kill(pid, signal.SIGKILL)
                        break
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_after_the_first_output)
    killer.start()
    assert run(source, out, weights, "--batch-size", "2") == 0
    killer.join()
    assert killed and killed[0] < 12  # an actor died while items were still to do
    assert files_in(out) == files_in(tmp_path / "local")  # every item, whole, no temporary file


def test_ray_engine_writes_the_iiif_pages_of_the_local_engine(tmp_path, weights, local_ray):
    """--format iiif on Ray: the workers get the run's context, so pages equal the local engine's
    but for the creation time."""
    source = make_items(str(tmp_path / "input"))
    flags = ["--format", "iiif", "--id-base", "https://example.org/tags", "--no-report"]
    assert run(source, tmp_path / "local", weights, *flags, engine="local") == 0
    assert run(source, tmp_path / "ray", weights, *flags) == 0
    local, ray_pages = files_in(tmp_path / "local"), files_in(tmp_path / "ray")
    assert sorted(ray_pages) == sorted(local) == [
        "book1.emb.npz", "book1.iiif.json", "book10.emb.npz", "book10.iiif.json", "book2.emb.npz", "book2.iiif.json",
        "context.jsonld", "errors.json"]
    assert all(ray_pages[name] == local[name] for name in local if name.endswith(".emb.npz"))

    def without_time(text):
        page = json.loads(text)
        for annotation in page["items"]:
            annotation.pop("created")
        return page

    for name in ("book1.iiif.json", "book10.iiif.json", "book2.iiif.json"):
        assert without_time(ray_pages[name]) == without_time(local[name])
    assert json.loads(ray_pages["book1.iiif.json"])["items"][0]["id"].startswith(
        "https://example.org/tags/book1.iiif.json#")


def test_an_item_that_never_comes_back_fails_the_run_in_one_sentence(tmp_path, weights, local_ray, monkeypatch,
                                                                     capsys):
    source = make_items(str(tmp_path / "input"))
    rows, dropped = ray.data.Dataset.iter_rows, []

    def losing_the_last_row(self, *args, **kwargs):  # a driver that drops a row on the way
        found = list(rows(self, *args, **kwargs))
        dropped.append(str(found[-1]["name"]))
        return iter(found[:-1])

    monkeypatch.setattr(ray.data.Dataset, "iter_rows", losing_the_last_row)
    assert run(source, tmp_path / "out", weights) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: 1 of 3 items never came back from the engine ({dropped[0]}); "
                      "run the same command again to finish them"]
    assert "images tagged" not in captured.out


def test_an_item_of_unreadable_files_only_gets_no_output_and_is_tried_again(tmp_path, weights, local_ray, capsys):
    source = make_items(str(tmp_path / "input"))
    os.makedirs(os.path.join(source, "book3"))
    for name in ("empty.jpg", "text.jpg"):
        with open(os.path.join(source, "book3", name), "wb") as handle:
            handle.write(b"" if name == "empty.jpg" else b"just text")
    out = tmp_path / "out"
    assert run(source, out, weights, "--no-report") == 0
    # no pending left, and no vectors for the item of unreadable files either
    assert sorted(os.listdir(out)) == ["book1.emb.npz", "book1.json", "book10.emb.npz", "book10.json",
                                       "book2.emb.npz", "book2.json", "errors.json"]
    assert sorted((e["item"], os.path.basename(e["path"])) for e in json.loads((out / "errors.json").read_text())) == [
        ("book2", "broken.jpg"), ("book3", "empty.jpg"), ("book3", "text.jpg")]
    capsys.readouterr()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(os.path.join(source, "book3", "empty.jpg"), "JPEG")
    assert run(source, out, weights, "--no-report") == 0  # the rerun tags book3 only, now that a file is fixed
    assert list(json.loads((out / "book3.json").read_text())) == ["empty"]
    assert "3 items already done" in capsys.readouterr().out
    assert sorted((e["item"], os.path.basename(e["path"])) for e in json.loads((out / "errors.json").read_text())) == [
        ("book2", "broken.jpg"), ("book3", "text.jpg")]


def test_weights_that_do_not_fit_model_json_are_one_line_on_both_engines(tmp_path, weights):
    """Keras warns once per layer it skips and lists every one in its error; Ray logs stack traces: none of it
    reaches the terminal, only the one error line (issue 19.10)."""
    source = make_items(str(tmp_path / "input"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "best.weights.h5").write_bytes(open(weights, "rb").read())
    config = json.loads(open(os.path.join(os.path.dirname(weights), "model.json")).read())
    config["backbone"] = "EfficientNetV2B0"  # an EfficientNetB0 file: no layer fits
    (other / "model.json").write_text(json.dumps(config))
    for engine in ("local", "ray"):
        done = subprocess.run([sys.executable, os.path.join(ROOT, "multiinference.py"), "--inputpath", source,
                               "--outputpath", str(tmp_path / engine), "--weights", str(other / "best.weights.h5"),
                               "--backend", "tensorflow", "--engine", engine, "--quiet"],
                              capture_output=True, text=True, timeout=400)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr[:3000]
        assert "does not fit the model described by its model.json (EfficientNetV2B0" in done.stderr
        assert "layers could not be loaded" in done.stderr and done.stdout == ""


def test_ray_workers_make_the_report_s_thumbnails_from_their_own_decode(tmp_path, weights, local_ray, monkeypatch):
    """With the report's recorder as item hook, the workers write each image's thumbnail while tagging
    (before the report is built, which then decodes nothing), the local engine's bytes; a scan libjpeg
    decodes reduced for the model shows it came from that decode, not from a second one."""
    import io

    from tagestimate.review import report, thumbs
    from tagestimate.tag.inference import find_items
    from tagestimate.tag.settings import InferenceSettings, ModelBundle

    source = make_items(str(tmp_path / "input"))
    rng = np.random.default_rng(3)
    scan = np.clip(rng.normal(128, 60, (1000, 1400, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(scan).save(os.path.join(source, "book10", "scan.jpg"), quality=90)
    items, problems = find_items(source)
    settings = InferenceSettings(input_dir=source, output_dir=str(tmp_path / "ray"), backend="tensorflow",
                                 engine="ray", progress=False)
    ray_engine.run(settings, ModelBundle.load(weights), items, problems, on_item=report.ReportRecorder())

    def thumbnails(output):
        return {(item.name, key): open(report.thumb_path(str(output), item.name, key), "rb").read()
                for item in items for key, _ in item.images
                if os.path.exists(report.thumb_path(str(output), item.name, key))}

    made = thumbnails(tmp_path / "ray")
    readable = {(item.name, key): path for item in items for key, path in item.images if "broken" not in path}
    assert set(made) == set(readable)  # before any report: the workers wrote them
    assert run(source, tmp_path / "local", weights, engine="local") == 0  # with the report: made while tagging
    assert thumbnails(tmp_path / "local") == made
    for entry, path in readable.items():  # what the report-only path would write for each image
        separate = thumbs.jpeg_bytes(thumbs.make_thumbnail(path))
        assert (made[entry] == separate) == (entry != ("book10", "scan"))  # the scan: decoded at 1/8, not 1/4
    scan_pixels = [np.asarray(Image.open(io.BytesIO(data)), np.float32)
                   for data in (made[("book10", "scan")], thumbs.jpeg_bytes(thumbs.make_thumbnail(readable[("book10", "scan")])))]
    assert scan_pixels[0].shape == scan_pixels[1].shape == (114, 160, 3)
    monkeypatch.setattr(thumbs, "make_thumbnail", lambda *args: pytest.fail("the report decoded an image again"))
    report.build_report(str(tmp_path / "ray"), items, progress=False)
    assert thumbnails(tmp_path / "ray") == made
