"""multiinference.py as a user runs it: format, keying, resume, bad files, weight kinds, backends."""

import glob
import http.server
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import multiinference
from conftest import ROOT, SHARED_DATA
from labelmap import LABELS
from modelfiles import set_head_bias, write_legacy_weights, write_trained_weights
from tagestimate import weights as weights_module
from tagestimate.model import WeightsError, build_model, describe_weights, open_model
from tagestimate.tag.local import Tagger
from tagestimate.tag.settings import InferenceSettings, ModelBundle

REPLICA = os.path.join(SHARED_DATA, "legacy-weights", "replica_ndllabelimage.hdf5")
# graphic and stamp clearly on, picture_map just below 0.4, the rest clearly off
LOGITS = np.full(len(LABELS), -4.0, np.float32)
LOGITS[LABELS.index("graphic")] = 3.0
LOGITS[LABELS.index("stamp")] = 1.0
LOGITS[LABELS.index("graphic_map")] = -0.45
SIGMOID = 1 / (1 + np.exp(-LOGITS))


def image(path, color=(120, 60, 30), size=(48, 40)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


@pytest.fixture(scope="module")
def constant_weights(tmp_path_factory):
    path, _ = write_trained_weights(str(tmp_path_factory.mktemp("weights")), logits=LOGITS)
    shared_tensorflow_runner(ModelBundle.load(path))  # built here, not in the first test using it
    return path


@pytest.fixture(autouse=True)
def one_tensorflow_model_per_weight_file(monkeypatch):
    """Runs through the backend table reuse a weight file's TensorFlowRunner within this module.

    Building and tracing the model takes seconds; the runs of one file then share it. The
    model still predicts every image: the outputs are the real ones.
    """
    from tagestimate.tag import backends

    monkeypatch.setitem(backends.RUNNERS, "tensorflow",
                        backends.RUNNERS["tensorflow"]._replace(runner=shared_tensorflow_runner))


_TENSORFLOW_RUNNERS = {}


def shared_tensorflow_runner(bundle):
    from tagestimate.tag.backends import TensorFlowRunner

    key = (os.path.abspath(bundle.path), os.path.getmtime(bundle.path), bundle.config.to_json())
    if key not in _TENSORFLOW_RUNNERS:
        _TENSORFLOW_RUNNERS[key] = TensorFlowRunner(bundle)
    return _TENSORFLOW_RUNNERS[key]


def run(*args):
    # --no-report: these tests look at the tagging outputs; the review report has tests/test_report*.py
    return multiinference.main([*map(str, args), "--quiet", "--backend", "tensorflow", "--no-report"])


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_format_keys_and_items(tmp_path, constant_weights):
    source = tmp_path / "input"
    image(source / "1054192" / "1054192_10_1.jpg")
    image(source / "1054192" / "1054192_2_0.png")
    image(source / "1054192" / "scans" / "p1.jpg")  # deeper: keyed by relative path
    image(source / "loose.jpg")  # directly in input/: item named after the folder
    (source / "1054192" / "notes.txt").write_text("not an image extension, ignored")
    assert run("--inputpath", source, "--outputpath", tmp_path / "out", "--weights", constant_weights) == 0

    result = read_json(tmp_path / "out" / "1054192.json")
    assert list(result) == ["1054192_2_0", "1054192_10_1", "scans/p1"]  # natural order, deterministic
    expected = [{"tag": "graphic", "confidence": round(float(SIGMOID[0]), 3)},
                {"tag": "stamp", "confidence": round(float(SIGMOID[-1]), 3)}]
    assert all(tags == expected for tags in result.values())
    assert read_json(tmp_path / "out" / "input.json") == {"loose": expected}
    assert not (tmp_path / "out" / "errors.json").exists()


@pytest.mark.slow
def test_threshold_flag_and_per_label_thresholds(tmp_path):
    thresholds = {"graphic": 0.99, "stamp": 0.5}
    weights, _ = write_trained_weights(str(tmp_path / "w"), logits=LOGITS, thresholds=thresholds)
    image(tmp_path / "in" / "item" / "a.jpg")
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "tuned", "--weights", weights)
    assert [t["tag"] for t in read_json(tmp_path / "tuned" / "item.json")["a"]] == ["stamp"]
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "flat", "--weights", weights,
        "--threshold", "0.35")
    assert [t["tag"] for t in read_json(tmp_path / "flat" / "item.json")["a"]] == ["graphic", "graphic_map", "stamp"]
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "none", "--weights", weights,
        "--threshold", "0.999")
    assert read_json(tmp_path / "none" / "item.json") == {"a": []}


def test_resume_skips_done_items_and_overwrite_redoes_them(tmp_path, constant_weights):
    image(tmp_path / "in" / "a" / "1.jpg")
    image(tmp_path / "in" / "b" / "1.jpg")
    out = tmp_path / "out"
    run("--inputpath", tmp_path / "in", "--outputpath", out, "--weights", constant_weights)
    (out / "a.json").write_text('{"marker": []}')
    (out / "b.json").unlink()  # as if the run had stopped before item b
    run("--inputpath", tmp_path / "in", "--outputpath", out, "--weights", constant_weights)
    assert read_json(out / "a.json") == {"marker": []}
    assert list(read_json(out / "b.json")) == ["1"]
    run("--inputpath", tmp_path / "in", "--outputpath", out, "--weights", constant_weights, "--overwrite")
    assert list(read_json(out / "a.json")) == ["1"]
    # nothing else: no temporary file left (each item's vectors, {item}.emb.npz, are written before its output)
    assert sorted(os.listdir(out)) == ["a.emb.npz", "a.json", "b.emb.npz", "b.json"]


def test_csv_format(tmp_path, constant_weights):
    image(tmp_path / "in" / "item" / "a.jpg")
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights,
        "--format", "csv")
    lines = (tmp_path / "out" / "item.csv").read_text().splitlines()
    assert lines[0] == "image,tag,confidence"
    assert lines[1:] == [f"a,graphic,{round(float(SIGMOID[0]), 3)}", f"a,stamp,{round(float(SIGMOID[-1]), 3)}"]


def bad_files(folder, monkeypatch):
    os.makedirs(folder, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("just text")
    (folder / "page.png").write_text("<html><body>error</body></html>")
    image(str(folder / "full.jpg"), size=(400, 400))
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "full.jpg").unlink()
    Image.new("L", (300, 300)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)  # 90,000 px > 2 x limit: refused
    return {"empty", "text", "page", "truncated", "bomb"}


def test_bad_files_are_skipped_reported_and_the_run_goes_on(tmp_path, constant_weights, monkeypatch, capsys):
    folder = tmp_path / "in" / "item"
    bad = bad_files(folder, monkeypatch)
    image(str(folder / "good.jpg"))
    rgba = Image.new("RGBA", (50, 50), (10, 200, 10, 128))
    rgba.save(folder / "alpha.png")
    Image.fromarray(np.full((50, 50), 40000, np.uint16)).save(folder / "deep.png")
    Image.new("CMYK", (50, 50), (0, 50, 100, 0)).save(folder / "cmyk.jpg")
    Image.new("L", (50, 50), 90).save(folder / "gray.tif")
    Image.new("RGB", (50, 50), 90).save(folder / "bitmap.bmp")
    Image.new("RGB", (50, 50), 90).save(folder / "web.webp")
    out = tmp_path / "out"
    assert run("--inputpath", tmp_path / "in", "--outputpath", out, "--weights", constant_weights) == 0
    tagged = read_json(out / "item.json")
    assert set(tagged) == {"good", "alpha", "deep", "cmyk", "gray", "bitmap", "web"}
    errors = read_json(out / "errors.json")
    assert {os.path.splitext(os.path.basename(e["path"]))[0] for e in errors} == bad
    assert all(e["item"] == "item" and e["reason"] for e in errors)
    stderr = capsys.readouterr().err
    assert all(f"{name}." in stderr for name in bad)


def test_exit_code_is_1_when_nothing_could_be_read(tmp_path, constant_weights, monkeypatch):
    bad = bad_files(tmp_path / "in" / "item", monkeypatch)
    assert run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights) == 1
    assert not (tmp_path / "out" / "item.json").exists()  # not done: no output (issue 19.7)
    assert {os.path.splitext(os.path.basename(e["path"]))[0] for e in read_json(tmp_path / "out" / "errors.json")} == bad


def test_an_item_of_unreadable_files_only_gets_no_output_and_is_tried_again(tmp_path, constant_weights, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    image(source / "good" / "a.jpg")
    (source / "bad").mkdir(parents=True)
    (source / "bad" / "empty.jpg").write_bytes(b"")
    (source / "bad" / "text.jpg").write_text("just text")
    assert run("--inputpath", source, "--outputpath", out, "--weights", constant_weights) == 0
    assert sorted(os.listdir(out)) == ["errors.json", "good.emb.npz", "good.json"]
    assert sorted((e["item"], os.path.basename(e["path"])) for e in read_json(out / "errors.json")) == [
        ("bad", "empty.jpg"), ("bad", "text.jpg")]
    capsys.readouterr()
    # The rerun skips the done item and reads the other's files again (none readable yet: exit 1) ...
    assert run("--inputpath", source, "--outputpath", out, "--weights", constant_weights) == 1
    captured = capsys.readouterr()
    assert "empty.jpg" in captured.err and "text.jpg" in captured.err and "1 item already done" in captured.out
    # ... and once one is fixed, tags it; errors.json keeps only what is still wrong.
    image(source / "bad" / "empty.jpg")
    assert run("--inputpath", source, "--outputpath", out, "--weights", constant_weights) == 0
    assert list(read_json(out / "bad.json")) == ["empty"]
    assert [(e["item"], os.path.basename(e["path"])) for e in read_json(out / "errors.json")] == [("bad", "text.jpg")]


def test_an_item_that_never_comes_back_fails_the_run_in_one_sentence(tmp_path, constant_weights, monkeypatch,
                                                                     capsys):
    from tagestimate.tag import local

    for name in ("a", "b", "c"):
        image(tmp_path / "in" / name / "1.jpg")
    stages = local.tag_images

    def losing_b(entries, *args):  # an engine that drops an item's images on the way
        return stages([entry for entry in entries if entry[0] != "b"], *args)

    monkeypatch.setattr(local, "tag_images", losing_b)
    assert run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights) == 1
    captured = capsys.readouterr()
    assert captured.err == ("error: 1 of 3 items never came back from the engine (b); "
                            "run the same command again to finish them\n")
    assert captured.out == ""  # no "images tagged" line for a run that lost an item
    assert sorted(os.listdir(tmp_path / "out")) == ["a.emb.npz", "a.json", "c.emb.npz", "c.json"]


@pytest.mark.slow
def test_legacy_layout_loads_by_layer_name(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    source = build_model(len(LABELS), 224)
    set_head_bias(source, np.linspace(-3, 3, len(LABELS)))
    path = write_legacy_weights(str(tmp_path / "legacy.hdf5"), source)
    model, config, kind = open_model(path)
    assert kind == "legacy-hdf5" and config.channel_order == "BGR" and config.image_size == 224
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), source.predict(pixels, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_wrong_files_give_one_clear_error(tmp_path, capsys):
    import keras

    image(tmp_path / "in" / "item" / "a.jpg")
    text = tmp_path / "weights.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(WeightsError, match="not an HDF5 weight file"):
        describe_weights(str(text))
    keras.utils.set_random_seed(0)
    five = write_legacy_weights(str(tmp_path / "five.hdf5"), build_model(5, 64))
    with pytest.raises(WeightsError, match="5 outputs"):
        describe_weights(five)
    lonely = tmp_path / "lonely"
    path, _ = write_trained_weights(str(lonely))
    os.unlink(lonely / "model.json")
    assert run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "o", "--weights", path) == 1
    assert "model.json" in capsys.readouterr().err
    mismatched = tmp_path / "mismatch"
    path, _ = write_trained_weights(str(mismatched))
    data = json.loads((mismatched / "model.json").read_text())
    data["labels"] = data["labels"][:4]
    (mismatched / "model.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="does not fit"):
        open_model(path)


def spread_model_weights(folder, pixels):
    """A 64-px model whose outputs spread over (0, 1) on `pixels` (random init gives ~0.5)."""
    import keras

    from tagestimate.model import write_config
    from modelfiles import trained_config

    keras.utils.set_random_seed(7)
    model = build_model(len(LABELS), 64)
    features = keras.Model(model.input, model.get_layer("dense_1").output).predict(pixels, verbose=0)
    kernel = np.random.default_rng(1).normal(0, 1, (features.shape[1], len(LABELS))).astype(np.float32)
    kernel *= 2.0 / (features @ kernel).std()  # logits with a standard deviation of 2
    model.get_layer("dense_2").set_weights([kernel, -(features @ kernel).mean(axis=0)])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "best.weights.h5")
    model.save_weights(path)
    write_config(folder, trained_config())
    return path


@pytest.mark.slow
def test_openvino_and_tensorflow_agree(tmp_path, monkeypatch):
    """A random-backbone 64-px model, head set so outputs spread over (0, 1), on 12 noise images.

    OpenVINO is a requirement: this test fails, never skips, when it is missing.
    """
    from tagestimate.tag.backends import OpenVINORunner, TensorFlowRunner
    from tagestimate.images import load_image

    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    paths = []
    for index in range(12):
        rng = np.random.default_rng(index)
        noise = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8) // (index + 1) + rng.integers(0, 128, 3, dtype=np.uint8)
        paths.append(str(tmp_path / "in" / "item" / f"{index}.jpg"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        Image.fromarray(noise.astype(np.uint8)).save(paths[-1])
    pixels = np.stack([load_image(p, 64) for p in paths]).astype(np.float32)
    weights = spread_model_weights(str(tmp_path / "w"), pixels)
    bundle = ModelBundle.load(weights)
    reference = TensorFlowRunner(bundle).predict(pixels)
    assert reference.min() < 0.2 and reference.max() > 0.8  # a comparison that means something
    np.testing.assert_allclose(OpenVINORunner(bundle).predict(pixels), reference, atol=1e-4)
    assert glob.glob(str(tmp_path / "cache" / "openvino" / "*.xml"))  # converted once, then cached

    outputs = {}
    for backend in ("tensorflow", "openvino"):
        assert multiinference.main(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / backend),
                                    "--weights", weights, "--backend", backend, "--quiet"]) == 0
        outputs[backend] = read_json(tmp_path / backend / "item.json")
    assert outputs["openvino"] == outputs["tensorflow"]


def independently_loaded_replica():
    """The replica loaded with h5py, layer by layer, not with the project's loader (which
    the test then checks too): Keras 2's layout, weights in each group's weight_names order."""
    import h5py

    model = build_model(len(LABELS), 224)
    loaded = set()
    with h5py.File(REPLICA, "r") as handle:
        for name in handle.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else str(name)
            weight_names = handle[name].attrs.get("weight_names", [])
            if len(weight_names):
                model.get_layer(name).set_weights([np.asarray(handle[name][w]) for w in weight_names])
                loaded.add(name)
    weighted = {layer.name for layer in model.layers if layer.weights}
    assert weighted - loaded == {next(n for n in weighted if n.startswith("normalization"))}  # identity here
    return model


def original_predictions(paths):
    """NDL's original script (OpenCV BGR read, INTER_LINEAR to 224x224, /255), evaluated in fp64.

    fp64 is the yardstick: this random-backbone replica amplifies fp32 rounding, so any two
    fp32 implementations (TensorFlow, OpenVINO, the original) differ by up to ~0.015 each
    from fp64 and can differ from each other by more than 0.02.
    """
    import keras

    import cv2
    batch = np.stack([cv2.resize(cv2.imread(p), (224, 224), interpolation=cv2.INTER_LINEAR) for p in paths])
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        model = independently_loaded_replica()
        return model.predict(batch.astype(np.float64), verbose=0, batch_size=20)
    finally:
        keras.config.set_dtype_policy(policy)
        keras.config.set_floatx(floatx)


@pytest.mark.skipif(not os.path.exists(REPLICA), reason="shared/data replica weights absent")
@pytest.mark.slow
def test_replica_matches_the_original_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    source = os.path.join(SHARED_DATA, "ndl-input")
    assert multiinference.main(["--inputpath", source, "--outputpath", str(tmp_path / "out"),
                                "--weights", REPLICA, "--quiet"]) == 0
    result = read_json(tmp_path / "out" / "1054192.json")
    paths = sorted(glob.glob(os.path.join(source, "1054192", "*.jpg")))
    assert len(result) == len(paths) == 60
    for path, values in zip(paths, original_predictions(paths)):
        ours = {t["tag"]: t["confidence"] for t in result[os.path.splitext(os.path.basename(path))[0]]}
        for label, value in zip(LABELS, values):
            if label in ours:
                assert abs(ours[label] - value) <= 0.02, (path, label)
            elif abs(value - 0.4) > 0.02:
                assert value <= 0.4, (path, label, value)


class _WeightServer(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def weight_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WeightServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_download_checks_and_caches_the_file(tmp_path, monkeypatch, weight_server):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights_module, "PROJECT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{weight_server.server_port}/weights_ndllabelimage.hdf5"
    cached = tmp_path / "keras" / "models" / "weights_ndllabelimage.hdf5"

    _WeightServer.body = b"<html>moved</html>"
    with pytest.raises(WeightsError, match="not a usable tag model"):
        weights_module.resolve_weights(url=url)
    assert not cached.exists() and not os.listdir(cached.parent)

    keras.utils.set_random_seed(0)
    legacy = write_legacy_weights(str(tmp_path / "served.hdf5"), build_model(len(LABELS), 64))
    _WeightServer.body = open(legacy, "rb").read()
    assert weights_module.resolve_weights(url=url) == str(cached)
    assert cached.read_bytes() == _WeightServer.body
    _WeightServer.body = b""  # a second call uses the cached file
    assert weights_module.resolve_weights(url=url) == str(cached)


def test_offline_main_job_prints_one_sentence(tmp_path):
    if any(os.path.exists(p) for p in weights_module.local_candidates()):
        pytest.skip("a local weight file exists in this checkout; the offline path is not reached")
    environment = dict(os.environ, KERAS_HOME=str(tmp_path / "keras"),
                       TAGESTIMATE_WEIGHTS_URL="http://127.0.0.1:9/weights_ndllabelimage.hdf5")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "multiinference.py"), "--quiet"],
                          cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "could not download NDL's weights" in done.stderr and "weights_ndllabelimage.hdf5" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_explains_every_flag():
    text = multiinference.build_parser().format_help()
    for flag in ("--inputpath", "--outputpath", "--weights", "--threshold", "--batch-size", "--overwrite",
                 "--format", "--backend", "--workers", "--weights-url", "--full-decode", "--no-report", "--explain",
                 "--engine", "--ray-address", "--actors", "--gpus-per-actor"):
        assert flag in text
    assert "default: input" in text and "default: output" in text and "default: None" not in text
    # --decode-threads is the preferred name (usage shows it); --workers stays as its alias
    usage = " ".join(multiinference.build_parser().format_usage().split())
    assert "[--decode-threads N]" in usage and "--workers" not in usage
    assert "--decode-threads N, --workers N threads decoding images" in " ".join(text.split())


def test_errors_json_does_not_grow_on_resume(tmp_path, constant_weights):
    image(tmp_path / "in" / "item" / "a.jpg")
    image(tmp_path / "in" / "item" / "a.png")  # same key "a": reported, one of them tagged
    for _ in range(3):
        run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights)
        errors = read_json(tmp_path / "out" / "errors.json")
        assert len(errors) == 1 and "same name" in errors[0]["reason"]


def test_colliding_and_undecodable_names_are_reported_not_fatal(tmp_path, constant_weights):
    source = tmp_path / "in"
    image(source / "errors" / "1.jpg")  # would overwrite errors.json
    image(source / "book" / "ok.jpg")
    undecodable = os.fsdecode(b"\x83e\x83X\x83g.jpg")  # Shift_JIS bytes, not UTF-8
    image(os.path.join(str(source / "book"), undecodable))
    assert run("--inputpath", source, "--outputpath", tmp_path / "out", "--weights", constant_weights) == 0
    assert list(read_json(tmp_path / "out" / "book.json")) == ["ok"]
    reasons = {e["item"]: e["reason"] for e in read_json(tmp_path / "out" / "errors.json")}
    assert "errors.json" in reasons["errors"] and "UTF-8" in reasons["book"]


def test_output_files_keep_the_usual_permissions(tmp_path, constant_weights):
    image(tmp_path / "in" / "item" / "a.jpg")
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "out" / "item.json").st_mode & 0o777 == 0o666 & ~umask
    assert os.stat(tmp_path / "out" / "item.emb.npz").st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path / "out")) == ["item.emb.npz", "item.json"]


def test_full_decode_reads_large_jpegs_as_the_original(tmp_path):
    import cv2

    from tagestimate.images import load_image

    path = str(tmp_path / "scan.jpg")
    noise = np.random.default_rng(0).integers(0, 255, (1200, 1000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    original = cv2.resize(cv2.imread(path), (224, 224), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image(path, 224, "BGR", draft=False), original)
    assert not np.array_equal(load_image(path, 224, "BGR"), original)  # the fast path differs here


# Names as libraries write them: Japanese, Arabic-Indic and fullwidth digits, roman numerals,
# circled numbers, superscripts and mixes of them with ASCII digits.
UNICODE_NAMES = ["p2", "p10", "p01", "p1", "①", "1①", "①1", "第2巻", "第10巻", "Ⅻ", "ⅻ巻", "²", "x²3", "٣",
                 "ص٢", "ص١٠", "ص2", "１２", "p①_2", "p①_10", "৩", "𝟗", "", "a", "B", "₃"]


def test_natural_key_orders_any_name_totally():
    from tagestimate.formats import natural_key

    ordered = sorted(UNICODE_NAMES, key=natural_key)  # raises TypeError/ValueError on a partial key
    assert sorted(reversed(UNICODE_NAMES), key=natural_key) == ordered  # total: not the listing order
    assert ordered.index("p2") < ordered.index("p10") and ordered.index("第2巻") < ordered.index("第10巻")
    assert ordered.index("ص٢") < ordered.index("ص١٠")  # Arabic-Indic digits count as numbers too
    assert ordered.index("p①_2") < ordered.index("p①_10")
    assert ordered.index("p01") < ordered.index("p1")  # same number: the name decides
    assert natural_key("1054192_2_0") < natural_key("1054192_10_0") < natural_key("1054192_10_1")


def test_unicode_names_are_sorted_and_tagged(tmp_path, constant_weights):
    source, out = tmp_path / "in", tmp_path / "out"
    folders = ["①", "1①", "²", "第2巻", "٣", "Ⅻ"]
    files = ["①", "1①", "x²", "٢", "p①_10", "p①_2", "２"]
    for folder in folders:
        for name in files:
            image(source / folder / f"{name}.jpg")
    assert run("--inputpath", source, "--outputpath", out, "--weights", constant_weights) == 0
    assert sorted(os.listdir(out)) == sorted([f"{folder}.json" for folder in folders]
                                             + [f"{folder}.emb.npz" for folder in folders])
    for folder in folders:
        result = read_json(out / f"{folder}.json")
        assert list(result) == ["1①", "٢", "２", "p①_2", "p①_10", "x²", "①"]  # ٢ and ２ are 2
        assert all(tags for tags in result.values())


def documented_flags():
    """{flag: default cell} from the flag table of docs/tagging.md."""
    from conftest import docs_flag_table

    return docs_flag_table("tagging.md")


def test_documented_defaults():
    """docs/tagging.md's flag table is the contract: literal values, not the parser's own constants."""
    from tagestimate.model import ModelConfig
    from tagestimate.formats import thresholds_for

    args = multiinference.build_parser().parse_args([])
    assert vars(args) == {
        "inputpath": "input", "outputpath": "output", "weights": None, "weights_url": None, "threshold": None,
        "batch_size": 32, "workers": None, "backend": "auto", "overwrite": False, "format": "json",
        "full_decode": False, "quiet": False, "id_base": None, "target_base": None,
        "no_report": False, "lang": None, "explain": False,
        "engine": "local", "ray_address": None, "actors": None, "gpus_per_actor": None,
        "no_embeddings": False, "extra_tags": None,
    }
    assert thresholds_for(ModelConfig(labels=LABELS)) == [0.4] * len(LABELS)  # no --threshold, no model.json values
    for flag in ("--decode-threads", "--workers"):  # the new name and the old one set the same value
        assert multiinference.build_parser().parse_args([flag, "3"]).workers == 3
    assert multiinference.DEFAULT_THRESHOLD == 0.4
    assert weights_module.NDL_WEIGHTS_URL == \
        "https://lab.ndl.go.jp/dataset/tagestimatemodel/weights_ndllabelimage.hdf5"
    parser = multiinference.build_parser()
    # a renamed flag by its new name, the first (--decode-threads, not its old alias --workers)
    flags = {action.option_strings[0] for action in parser._actions if action.dest != "help"}
    documented = documented_flags()
    assert set(documented) == flags  # every flag in the table, and no flag that is gone
    assert {flag: documented[flag] for flag in ("--inputpath", "--outputpath", "--batch-size", "--backend",
                                                "--format", "--engine")} == \
        {"--inputpath": "`input`", "--outputpath": "`output`", "--batch-size": "32", "--backend": "`auto`",
         "--format": "`json`", "--engine": "`local`"}  # the cells that state the literal defaults above


def test_docs_list_the_extensions_read():
    import re

    from tagestimate.images import IMAGE_EXTENSIONS

    with open(os.path.join(ROOT, "docs", "tagging.md"), encoding="utf-8") as handle:
        text = handle.read()
    listed = re.search(r"Files\s+without an image extension \(`([^`]*)`\)", text).group(1).split()
    assert sorted(listed) == sorted(IMAGE_EXTENSIONS)


def test_csv_row_of_an_untagged_image(tmp_path, constant_weights):
    image(tmp_path / "in" / "item" / "a.jpg")
    run("--inputpath", tmp_path / "in", "--outputpath", tmp_path / "out", "--weights", constant_weights,
        "--format", "csv", "--threshold", "0.999")
    assert (tmp_path / "out" / "item.csv").read_text() == "image,tag,confidence\na,,\n"


def test_rerun_on_finished_items_says_nothing_to_tag(tmp_path, constant_weights, capsys):
    image(tmp_path / "in" / "a" / "1.jpg")
    image(tmp_path / "in" / "b" / "1.jpg")
    arguments = ["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                 "--weights", constant_weights, "--backend", "tensorflow"]
    assert multiinference.main(arguments + ["--quiet"]) == 0
    capsys.readouterr()
    assert multiinference.main(arguments) == 0  # progress bar on: none must be drawn
    captured = capsys.readouterr()
    assert captured.out == (f"2 items already done in {tmp_path / 'out'}, nothing to tag; "
                            "pass --overwrite to tag them again\n")
    assert "img" not in captured.err and "images/s" not in captured.out


def test_output_path_problems_are_found_before_loading_weights(tmp_path, capsys):
    image(tmp_path / "in" / "item" / "a.jpg")
    (tmp_path / "file").write_text("x")
    cases = [(tmp_path / "file", "is an existing file, not a folder"),
             (tmp_path / "file" / "sub", "cannot write in output folder"),
             ("/proc/self", "cannot write in output folder")]  # exists, refuses new files even to root
    if os.getuid() != 0:
        (tmp_path / "locked").mkdir(mode=0o555)
        cases.append((tmp_path / "locked", "cannot write in output folder"))
    for out, words in cases:
        with pytest.raises(SystemExit) as stopped:
            multiinference.main(["--inputpath", str(tmp_path / "in"), "--outputpath", str(out),
                                 "--weights", str(tmp_path / "missing.h5"), "--quiet"])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and words in error and str(out) in error and "--outputpath" in error
        assert "missing.h5" not in error  # stopped before looking at the weights


def test_non_utf8_bytes_in_input_and_output_paths(tmp_path, constant_weights, capsys):
    source = os.path.join(str(tmp_path), os.fsdecode(b"scans\x83e"))  # Shift_JIS bytes, not UTF-8
    out = os.path.join(str(tmp_path), os.fsdecode(b"tags\xff"))
    image(os.path.join(source, "book", "ok.jpg"))
    with open(os.path.join(source, "book", "empty.jpg"), "wb"):
        pass
    image(os.path.join(source, "loose.jpg"))  # item named after the input folder: not UTF-8
    assert run("--inputpath", source, "--outputpath", out, "--weights", constant_weights) == 0
    assert read_json(os.path.join(out, "book.json")).keys() == {"ok"}
    errors = read_json(os.path.join(out, "errors.json"))
    assert [(e["item"], os.path.basename(e["path"])) for e in errors] == [("book", "empty.jpg"),
                                                                           ("scans\\x83e", "loose.jpg")]
    assert all("scans\\x83e" in e["path"] for e in errors)
    captured = capsys.readouterr()
    assert "tags\\xff" in captured.out and "scans\\x83e" in captured.err


def test_listing_problems_are_printed_and_recorded(tmp_path, constant_weights, capsys):
    source = tmp_path / "in"
    image(source / "book" / "a.jpg")
    image(source / "book" / "a.png")  # two files, one stem
    image(os.path.join(str(source / "book"), os.fsdecode(b"\x83e.jpg")))  # not UTF-8
    image(source / "errors" / "1.jpg")  # would overwrite errors.json
    image(source / "in" / "sub.jpg")
    image(source / "loose.jpg")  # loose images form item "in", as does the sub-folder "in"
    assert run("--inputpath", source, "--outputpath", tmp_path / "out", "--weights", constant_weights) == 0
    stderr = capsys.readouterr().err
    expected = {"a.png": "same name as", "\\x83e.jpg": "not valid UTF-8", "1.jpg": "would overwrite errors.json",
                "loose.jpg": "would share the output file"}
    lines = [line for line in stderr.splitlines() if line.startswith("skipped ")]
    assert len(lines) == len(expected)
    for name, reason in expected.items():
        assert any(f"{os.sep}{name}: " in line and reason in line for line in lines), name
    recorded = {os.path.basename(e["path"]): e["reason"] for e in read_json(tmp_path / "out" / "errors.json")}
    assert recorded.keys() == expected.keys()


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import multiinference
from tagestimate.tag import backends
predict = backends.TensorFlowRunner.predict
def slow(self, batch):  # slow enough for the parent to stop the run between items
    time.sleep(0.25)
    return predict(self, batch)
backends.TensorFlowRunner.predict = slow
sys.exit(multiinference.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_keeps_errors_and_a_rerun_finishes(tmp_path, constant_weights):
    import signal
    import time

    names = [f"item{n:02d}" for n in range(16)]
    for name in names:
        image(tmp_path / "in" / name / "good.jpg")
        (tmp_path / "in" / name / "empty.jpg").write_bytes(b"")  # one error per item
    out = tmp_path / "out"
    arguments = ["--inputpath", str(tmp_path / "in"), "--outputpath", str(out), "--weights", constant_weights,
                 "--backend", "tensorflow", "--batch-size", "1", "--quiet", "--no-report"]
    # pytest may run with SIGINT ignored (a background job); the child needs Python's handler.
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT), *arguments], cwd=str(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(glob.glob(str(out / "item*.json"))) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and stdout == ""
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1 and "run the same command again" in said[0] and str(out) in said[0]
    finished = {name[:-len(".json")] for name in os.listdir(out) if name.endswith(".json") and name != "errors.json"}
    assert 2 <= len(finished) < len(names)
    # each finished item's vectors were written before its output; one more item may have stopped between the two
    embedded = {name[:-len(".emb.npz")] for name in os.listdir(out) if name.endswith(".emb.npz")}
    assert finished <= embedded and len(embedded - finished) <= 1
    assert sorted(os.listdir(out)) == sorted([f"{name}.json" for name in finished] + ["errors.json"]
                                             + [f"{name}.emb.npz" for name in embedded])
    assert all(read_json(out / f"{name}.json").keys() == {"good"} for name in finished)
    errored = {e["item"] for e in read_json(out / "errors.json")}
    assert finished <= errored and len(errored - finished) <= 1  # the item stopped between its two writes
    assert f"{len(finished)} of {len(names)} items finished" in said[0]

    assert run(*arguments[:6]) == 0  # the rerun tags the rest
    assert sorted(os.listdir(out)) == sorted([f"{name}.json" for name in names] + ["errors.json"]
                                             + [f"{name}.emb.npz" for name in names])
    errors = read_json(out / "errors.json")
    assert sorted(e["item"] for e in errors) == sorted(names) and all("empty" in e["path"] for e in errors)


def test_an_item_output_is_written_only_once_its_errors_are_saved(tmp_path, monkeypatch):
    """The next run skips items with an output file, so their errors must be on disk first."""
    from modelfiles import trained_config
    from tagestimate import storage
    from tagestimate.tag import inference
    from tagestimate.tag.run import ErrorLog

    class Runner:
        def predict(self, batch):
            return np.full((len(batch), len(LABELS)), 0.9, np.float32)

    for n in range(6):
        image(tmp_path / "in" / f"item{n}" / "good.jpg")
        (tmp_path / "in" / f"item{n}" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    monkeypatch.setattr(ErrorLog, "SHARE", 10 ** 6)  # rewrites of errors.json as rare as allowed
    saved_first = []
    write_atomic = storage.write_atomic  # every write of the engine goes through storage

    def checked(path, data):
        if os.path.basename(path) != "errors.json":
            on_disk = read_json(out / "errors.json") if (out / "errors.json").exists() else []
            saved_first.append(os.path.basename(path)[:-5] in {entry["item"] for entry in on_disk})
        return write_atomic(path, data)

    monkeypatch.setattr(storage, "write_atomic", checked)
    items, problems = inference.find_items(str(tmp_path / "in"))
    tagger = Tagger(Runner(), trained_config(), InferenceSettings(output_dir=str(out), batch_size=1, workers=1,
                                                                  progress=False))
    summary = tagger.run(items, problems)
    assert saved_first == [True] * 6 and summary["finished_items"] == 6
    assert sorted(entry["item"] for entry in read_json(out / "errors.json")) == [f"item{n}" for n in range(6)]


LOADING_CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
import multiinference
from tagestimate.commands import tag as tag_command
def slow_weights(*args):  # stands for a long download or model conversion
    open("loading", "w").close()
    time.sleep(60)
tag_command.resolve_weights = slow_weights
sys.exit(multiinference.main(sys.argv[1:]))
"""


def test_ctrl_c_while_loading_the_model_says_so_in_one_line(tmp_path):
    import signal
    import time

    image(tmp_path / "in" / "item" / "a.jpg")
    child = subprocess.Popen([sys.executable, "-c", LOADING_CHILD.format(root=ROOT), "--inputpath", "in",
                              "--outputpath", "out", "--quiet"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (tmp_path / "loading").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130 and stdout == ""
    assert stderr == "interrupted before any image was tagged; run the same command again\n"
    assert os.listdir(tmp_path / "out") == []


def test_help_and_parser_import_no_model_library():
    heavy = ("tensorflow", "keras", "openvino", "torch")
    code = ("import sys, multiinference; multiinference.build_parser().format_help(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "[]\n", done.stderr
    done = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, "multiinference.py"), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--outputpath" in done.stdout
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "tagestimate.tag.backends" in imported  # the check saw the real imports
    assert not [name for name in imported if name.split(".")[0] in heavy]


class _SlowWeightServer(_WeightServer):
    """Sends half the file, then waits until every expected request got its half."""

    barrier = None

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        half = len(self.body) // 2
        self.wfile.write(self.body[:half])
        self.wfile.flush()
        self.barrier.wait(timeout=20)
        self.wfile.write(self.body[half:])


@pytest.mark.slow
def test_two_downloads_at_once_each_use_their_own_temporary_file(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    legacy = write_legacy_weights(str(tmp_path / "served.hdf5"), build_model(len(LABELS), 64))
    _SlowWeightServer.body = open(legacy, "rb").read()
    _SlowWeightServer.barrier = threading.Barrier(2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowWeightServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/weights_ndllabelimage.hdf5"
    cached = tmp_path / "models" / "weights_ndllabelimage.hdf5"
    outcomes = []

    def download():
        try:
            outcomes.append(weights_module.download_weights(url, str(cached)))
        except Exception as error:  # noqa: BLE001 (the test reports what went wrong)
            outcomes.append(error)

    threads = [threading.Thread(target=download) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    server.shutdown()
    assert outcomes == [str(cached), str(cached)]
    assert cached.read_bytes() == _SlowWeightServer.body
    assert os.listdir(cached.parent) == [cached.name]


def test_openvino_runner_serves_threads_one_call_at_a_time():
    import openvino as ov
    from openvino import opset13 as ops

    from tagestimate.tag.backends import OpenVINORunner

    from tagestimate.tag.backends import EMBEDDING, PROBABILITIES

    pixels = ops.parameter([-1, 4], np.float32)
    # outputs named as a converted model's, in the other order: the runner picks them by name
    outputs = [ops.multiply(pixels, ops.constant(np.float32(3))), ops.multiply(pixels, ops.constant(np.float32(2)))]
    model = ov.Model(outputs, [pixels])
    model.outputs[0].get_tensor().set_names({EMBEDDING})
    model.outputs[1].get_tensor().set_names({PROBABILITIES})
    runner = OpenVINORunner.__new__(OpenVINORunner)  # the runner around a tiny model, no conversion
    runner._start(ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"}))
    failures = []

    def call(value):
        batch = np.full((16, 4), value, np.float32) + np.arange(16, dtype=np.float32)[:, None]
        for _ in range(30):
            result, vectors = runner.infer(batch)
            if not (np.array_equal(result, 2 * batch) and np.array_equal(vectors, 3 * batch)):
                failures.append(value)

    threads = [threading.Thread(target=call, args=(100 * n,), daemon=True) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)  # no call waits for ever
    assert not failures


class MeanRunner:
    """Probabilities from each image's mean pixel (0.1..1.0 of it across the labels): no model."""

    def predict(self, batch):
        means = np.asarray(batch, np.float32).mean(axis=(1, 2, 3)) / 255
        return np.outer(means, np.linspace(0.1, 1.0, len(LABELS))).astype(np.float32)


def exif_rotated(path, size, color):
    """A JPEG stored `size` with EXIF orientation 6: shown rotated, its sides swapped."""
    exif = Image.Exif()
    exif[0x0112] = 6
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, exif=exif)


def test_tag_item_and_write_item_give_the_local_engine_s_bytes(tmp_path):
    """The per-item stages a distributed engine calls write what Tagger.run writes, whatever the batching."""
    from modelfiles import trained_config
    from tagestimate.tag import inference
    from tagestimate.images import load_image
    from tagestimate.formats import with_threshold

    config = trained_config()
    image(tmp_path / "in" / "a" / "p1.jpg", color=(200, 190, 180), size=(48, 40))
    image(tmp_path / "in" / "a" / "p2.png", color=(90, 90, 90), size=(30, 70))
    exif_rotated(str(tmp_path / "in" / "a" / "p10.jpg"), (48, 40), (150, 150, 150))
    (tmp_path / "in" / "a" / "bad.jpg").write_bytes(b"")
    image(tmp_path / "in" / "b" / "x.jpg", color=(250, 240, 250))
    items, _ = inference.find_items(str(tmp_path / "in"))
    os.makedirs(tmp_path / "one")
    for output_format in ("json", "csv"):
        Tagger(MeanRunner(), with_threshold(config, 0.3), InferenceSettings(
            output_dir=str(tmp_path / "local"), output_format=output_format, batch_size=2, workers=1,
            progress=False)).run(items)
        for item in items:
            records, _ = inference.tag_item(item, MeanRunner(), config, batch_size=3, workers=2)
            path = inference.write_item(str(tmp_path / "one"), item.name, records, with_threshold(config, 0.3),
                                        output_format)
            local = (tmp_path / "local" / f"{item.name}.{output_format}").read_bytes()
            assert open(path, "rb").read() == local and b"confidence" in local

    records, errors = inference.tag_item(items[0], MeanRunner(), config, batch_size=2, workers=2)
    assert [record.key for record in records] == ["p1", "p10", "p2"]  # the item's order (the writers sort)
    assert [record.size for record in records] == [(48, 40), (40, 48), (30, 70)]  # (width, height) as shown
    pixels = np.stack([load_image(record.path, 64) for record in records]).astype(np.float32)
    np.testing.assert_array_equal(np.stack([record.probabilities for record in records]),
                                  MeanRunner().predict(pixels))  # every label, not only those over a threshold
    assert errors == [("a", str(tmp_path / "in" / "a" / "bad.jpg"), "empty file (0 bytes); delete it or fetch it again")]


def test_a_new_format_is_one_table_entry_and_sees_every_probability(tmp_path, monkeypatch):
    from modelfiles import trained_config
    from tagestimate.tag import inference
    from tagestimate import formats as results

    def render(item_name, records, config):
        return "".join(f"{item_name}\t{record.key}\t{record.size[0]}x{record.size[1]}\t"
                       + " ".join(f"{value:.2f}" for value in record.probabilities) + "\n" for record in records)

    monkeypatch.setitem(results.FORMATS, "tsv", results.OutputFormat("tsv", render, "every probability"))
    image(tmp_path / "in" / "item" / "a.png", color=(255, 255, 255), size=(48, 40))
    items, _ = inference.find_items(str(tmp_path / "in"))
    summary = Tagger(MeanRunner(), trained_config(), InferenceSettings(output_dir=str(tmp_path / "out"),
                                                                       output_format="tsv", progress=False)).run(items)
    assert summary["finished_items"] == 1 and os.listdir(tmp_path / "out") == ["item.tsv"]
    assert (tmp_path / "out" / "item.tsv").read_text() == \
        "item\ta\t48x40\t0.10 0.19 0.28 0.37 0.46 0.55 0.64 0.73 0.82 0.91 1.00\n"
    assert multiinference.build_parser().parse_args(["--format", "tsv"]).format == "tsv"
    assert "tsv: every probability" in " ".join(multiinference.build_parser().format_help().split())


def test_a_new_backend_is_one_table_entry(monkeypatch):
    from modelfiles import trained_config
    from tagestimate.tag import backends

    made = []

    class FakeRunner:
        def __init__(self, bundle):
            made.append(bundle)

    config = trained_config()
    bundle = ModelBundle("w.weights.h5", config, "keras-weights", "ab" * 32, config)
    monkeypatch.setitem(backends.RUNNERS, "fake", backends.Backend(FakeRunner, lambda: True, "nothing"))
    assert backends.choose_backend("fake") == "fake"
    assert isinstance(backends.make_runner("fake", bundle), FakeRunner)
    assert made == [bundle]  # every runner gets the model bundle: path, ModelConfig, kind, SHA-256
    monkeypatch.setitem(backends.RUNNERS, "fake", backends.Backend(FakeRunner, lambda: False, "the fake package"))
    with pytest.raises(backends.BackendError, match=r"^--backend fake needs the fake package$"):
        backends.choose_backend("fake")
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    monkeypatch.setitem(backends.RUNNERS, "openvino", backends.RUNNERS["openvino"]._replace(available=lambda: False))
    with pytest.raises(backends.BackendError, match=r"^--backend openvino needs the openvino package: "
                                                    r"pip install openvino$"):
        backends.choose_backend("openvino")
    assert backends.choose_backend("auto") == "tensorflow"  # auto without OpenVINO


def test_plan_skips_done_items_and_the_problems_they_recorded(tmp_path):
    from tagestimate.tag.inference import Item, plan_run

    items = [Item("a", [("1", "/x/a/1.jpg")]), Item("b", [("1", "/x/b/1.jpg"), ("2", "/x/b/2.jpg")])]
    (tmp_path / "a.json").write_text("{}")
    problems = [("a", "/x/a/1.png", "same name"), ("b", "/x/b/\\x83.jpg", "not UTF-8"),
                ("errors", "/x/errors/1.jpg", "would overwrite errors.json")]
    plan = plan_run(items, str(tmp_path), "json", problems=problems)
    assert plan.todo == items[1:] and plan.done == ["a"] and plan.problems == problems[1:]
    assert plan.entries() == [("b", "1", "/x/b/1.jpg"), ("b", "2", "/x/b/2.jpg")]
    assert plan.left_out() == problems[2:] and dict(plan.problems_by_item()) == {"b": [problems[1]]}
    assert plan_run(items, str(tmp_path), "csv", problems=problems).todo == items  # no a.csv yet
    assert plan_run(items, str(tmp_path), "json", overwrite=True).todo == items


def test_any_user_error_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from tagestimate.errors import UserError

    def refuse(*args):
        raise UserError("the weight store /w is offline; pass --weights a local file")

    image(tmp_path / "in" / "item" / "a.jpg")
    from tagestimate.commands import tag as tag_command
    monkeypatch.setattr(tag_command, "resolve_weights", refuse)
    assert multiinference.main(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                                "--quiet"]) == 1
    assert capsys.readouterr().err == "error: the weight store /w is offline; pass --weights a local file\n"


def refusal(argv, capsys):
    """multiinference.py's exit-2 message for `argv` (the last stderr line)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        multiinference.main(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
    (["--workers", "0"], "argument --decode-threads/--workers: must be at least 1, not 0"),
    (["--threshold", "1"], "argument --threshold: must be under 1.0, not 1 (the range is [0.0, 1.0))"),
    (["--threshold", "-0.1"], "argument --threshold: must be at least 0.0, not -0.1"),
    (["--threshold", "nan"], "argument --threshold: 'nan' is not a number"),
    (["--actors", "0", "--engine", "ray"], "argument --actors: must be at least 1, not 0"),
    (["--gpus-per-actor", "-1", "--engine", "ray"], "argument --gpus-per-actor: must be at least 0.0, not -1"),
])
def test_out_of_range_numbers_exit_2_naming_the_flag(tmp_path, flags, words, capsys):
    (tmp_path / "in").mkdir()
    assert words in refusal(["--inputpath", str(tmp_path / "in"), *flags], capsys)


@pytest.mark.parametrize("flag", ["--id-base", "--target-base"])
def test_iiif_bases_without_the_iiif_format_are_refused(tmp_path, flag, capsys):
    (tmp_path / "in" / "item").mkdir(parents=True)
    for format_flags in ([], ["--format", "csv"]):
        error = refusal(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"), *format_flags,
                         flag, "https://example.org/tags"], capsys)
        assert f"{flag} serves --format iiif" in error and f"leave {flag} out" in error
    if flag == "--id-base":  # the catalogue has no ids of its own; it does name the image files
        error = refusal(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                         "--format", "catalogue", flag, "https://example.org/tags"], capsys)
        assert "--id-base serves --format iiif only" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, words", [
    ("ftp://example.org/tags", "'ftp://example.org/tags' is a ftp: URL; use http or https"),
    ("https://example.org/my tags", "'https://example.org/my tags' contains a space; write a space in a URL as %20"),
    ("example.org/tags", "'example.org/tags' is not an absolute URL"),
])
def test_iiif_bases_must_be_http_urls_and_the_message_says_why(tmp_path, value, words, capsys):
    (tmp_path / "in" / "item").mkdir(parents=True)
    for flag in ("--id-base", "--target-base"):
        error = refusal(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                         "--format", "iiif", flag, value], capsys)
        assert f"{flag} must be an absolute URL" in error and words in error


def test_an_input_path_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "scans.zip").write_bytes(b"PK")
    error = refusal(["--inputpath", str(tmp_path / "scans.zip"), "--outputpath", str(tmp_path / "out")], capsys)
    assert error == (f"error: --inputpath {tmp_path / 'scans.zip'} is a file, not a folder; pass the folder whose "
                     "sub-folders (items) hold the images")
    assert "does not exist" in refusal(["--inputpath", str(tmp_path / "nowhere")], capsys)
