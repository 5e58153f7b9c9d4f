"""Embeddings from the tagging pass: {item}.emb.npz as both engines write it (local disk and s3://),
its vectors against a direct Keras computation, resume, --no-embeddings, and --extra-tags."""

import csv
import glob
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import multiinference
from labelmap import LABELS
from modelfiles import write_trained_weights
from tagestimate import embeddings, extratags, formats
from tagestimate.images import load_image
from tagestimate.model import WeightsError, embedding_model, load_model
from tagestimate.records import ExtraScore, Record
from tagestimate.tag import backends
from tagestimate.tag.backends import BackendError, match_outputs
from tagestimate.tag.settings import ModelBundle
from test_inference import shared_tensorflow_runner
from test_storage import download, make_bucket, s3_server  # noqa: F401 - s3_server is a fixture

ITEMS = {"book1": ["p1", "p2", "p10"], "book2": ["a", "b"]}


def make_input(folder):
    """Two items of distinct noise images (distinct vectors: a swapped row shows)."""
    rng = np.random.default_rng(7)
    for item, keys in ITEMS.items():
        os.makedirs(os.path.join(folder, item), exist_ok=True)
        for key in keys:
            pixels = rng.integers(0, 256, (56 + len(key), 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, item, key + ".png"))
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path, _ = write_trained_weights(str(tmp_path_factory.mktemp("weights")), seed=3)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_input(str(tmp_path_factory.mktemp("input")))


@pytest.fixture(autouse=True)
def one_tensorflow_model_per_weight_file(monkeypatch):
    monkeypatch.setitem(backends.RUNNERS, "tensorflow",
                        backends.RUNNERS["tensorflow"]._replace(runner=shared_tensorflow_runner))


def run(source, output, weights, *extra):
    return multiinference.main(["--inputpath", str(source), "--outputpath", str(output), "--weights", str(weights),
                                "--quiet", "--backend", "tensorflow", "--no-report", *map(str, extra)])


def files_in(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


def read_embeddings(path):
    with open(path, "rb") as handle:
        return embeddings.from_bytes(handle.read(), path)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, source, weights):
    """One default run's output folder (json, with embeddings)."""
    out = tmp_path_factory.mktemp("tagged") / "out"
    assert run(source, out, weights) == 0
    return out


def keras_vectors(weights, paths):
    """The `dense` layer's output for each image, computed by Keras directly, L2-normalised."""
    bundle = ModelBundle.load(weights)
    config = bundle.config
    model = load_model(weights, config, bundle.kind)
    import keras

    dense = keras.Model(model.input, model.get_layer("dense").output)
    pixels = np.stack([load_image(path, config.image_size, config.channel_order) for path in paths])
    return embeddings.normalise(dense.predict(pixels.astype(np.float32), verbose=0))


def test_vectors_are_the_dense_layer_s_normalised_in_the_keys_order(tagged, source, weights):
    for item, keys in ITEMS.items():
        stored = read_embeddings(tagged / f"{item}.emb.npz")
        expected_keys = sorted(keys, key=formats.natural_key)  # p1, p2, p10
        assert stored.keys == tuple(expected_keys)
        assert stored.layer == "dense" and stored.dim == 512 and stored.vectors.dtype == np.float16
        assert stored.weights_sha256 == ModelBundle.load(weights).sha256
        direct = keras_vectors(weights, [os.path.join(source, item, key + ".png") for key in expected_keys])
        rows = stored.vectors.astype(np.float32)
        assert np.abs(rows - direct).max() < 2e-3  # float16 of unit vectors: ~5e-4 at most, plus float32 noise
        # Each row is its own image's: nearer its key's direct vector than any other image's.
        distances = np.linalg.norm(rows[:, None, :] - direct[None, :, :], axis=2)
        assert list(distances.argmin(axis=1)) == list(range(len(keys)))
        assert np.sort(distances, axis=1)[:, 1].min() > 10 * np.diag(distances).max()


def test_ndl_json_is_byte_identical_with_and_without_embeddings(tmp_path, tagged, source, weights):
    assert run(source, tmp_path / "plain", weights, "--no-embeddings") == 0
    plain, full = files_in(tmp_path / "plain"), files_in(tagged)
    assert sorted(plain) == ["book1.json", "book2.json"]  # --no-embeddings writes none
    assert sorted(full) == ["book1.emb.npz", "book1.json", "book2.emb.npz", "book2.json"]
    assert {name: full[name] for name in plain} == plain


def test_a_rerun_after_an_interruption_leaves_identical_files(tmp_path, tagged, source, weights):
    out = tmp_path / "out"
    assert run(source, out, weights) == 0
    assert files_in(out) == files_in(tagged)  # a second run: the same bytes
    # Interrupted between book2's vectors and its output (the output marks it done): tagged again.
    os.remove(out / "book2.json")
    (out / "book2.emb.npz").write_bytes(b"half written")
    assert run(source, out, weights) == 0
    assert files_in(out) == files_in(tagged)


def test_ctrl_c_while_the_vectors_are_written_leaves_the_item_to_do(tmp_path, tagged, source, weights, monkeypatch):
    from tagestimate.tag import vectors

    write = vectors.storage.write_atomic

    def interrupted(path, data):
        if path.endswith("book2.emb.npz"):
            raise KeyboardInterrupt
        return write(path, data)

    out = tmp_path / "out"
    monkeypatch.setattr(vectors.storage, "write_atomic", interrupted)
    assert run(source, out, weights) == 130
    assert sorted(files_in(out)) == ["book1.emb.npz", "book1.json"]  # no output without its vectors first
    monkeypatch.setattr(vectors.storage, "write_atomic", write)
    assert run(source, out, weights) == 0
    assert files_in(out) == files_in(tagged)


def test_an_item_tagged_without_embeddings_stays_without_until_overwrite(tmp_path, tagged, source, weights):
    out = tmp_path / "out"
    assert run(source, out, weights, "--no-embeddings") == 0
    assert run(source, out, weights) == 0  # every item done: skipped, no vectors added
    assert sorted(files_in(out)) == ["book1.json", "book2.json"]
    assert run(source, out, weights, "--overwrite") == 0
    assert files_in(out) == files_in(tagged)


def test_s3_output_gets_the_local_embeddings(tmp_path, tagged, source, weights, s3_server):  # noqa: F811
    bucket = make_bucket("embeddings")
    assert run(source, bucket + "/out/", weights) == 0
    remote = download(bucket + "/out")
    assert {name: data for name, data in remote.items() if name.endswith(".emb.npz")} == {
        name: data for name, data in files_in(tagged).items() if name.endswith(".emb.npz")}
    assert remote["book1.json"] == files_in(tagged)["book1.json"]


# ---------------------------------------------------------------- --extra-tags

def extra_tag(folder, tagged, weights, name="ukiyoe", **changes):
    """A tag whose confidences differ per image (from the run's stored vectors); threshold at their median."""
    rows = np.concatenate([read_embeddings(tagged / f"{item}.emb.npz").vectors for item in ITEMS]).astype(np.float64)
    coef = 40 * (rows[0] - rows[3])
    logits = rows @ coef
    values = dict(name=name, coef=coef, intercept=-float(np.median(logits)), threshold=0.5, layer="dense",
                  weights_sha256=ModelBundle.load(weights).sha256, positives=2, negatives=2)
    values.update(changes)
    return extratags.save(str(folder / f"{name}.json"), extratags.ExtraTag(**values))


def expected_extra(tagged, path):
    tag = extratags.load(path)
    found = {}
    for item in ITEMS:
        stored = read_embeddings(tagged / f"{item}.emb.npz")
        for key, value in zip(stored.keys, tag.confidences(stored.vectors)):
            found[(item, key)] = round(float(value), 3)
    return tag, found


def test_an_extra_tag_is_scored_on_the_stored_vectors_and_marked_in_json(tmp_path, tagged, source, weights):
    path = extra_tag(tmp_path, tagged, weights)
    tag, expected = expected_extra(tagged, path)
    assert len(set(expected.values())) == len(expected)  # distinct per image: a mix-up shows
    kept = {where for where, value in expected.items() if value > tag.threshold}
    assert 0 < len(kept) < len(expected)
    out = tmp_path / "out"
    assert run(source, out, weights, "--extra-tags", path) == 0
    plain = files_in(tagged)
    assert files_in(out)["book1.emb.npz"] == plain["book1.emb.npz"]
    for item in ITEMS:
        document = json.loads((out / f"{item}.json").read_text())
        model_tags = json.loads(plain[f"{item}.json"])
        for key, tags in document.items():
            extra = [entry for entry in tags if entry.get("extra")]
            assert [entry for entry in tags if not entry.get("extra")] == model_tags[key]
            assert extra == ([{"tag": "ukiyoe", "confidence": expected[(item, key)], "extra": True}]
                             if (item, key) in kept else [])
        # the report's reader takes them as tags
        parsed = formats.parse_json((out / f"{item}.json").read_text())
        assert {key for key, tags in parsed.items() if ("ukiyoe", expected[(item, key)]) in tags} == {
            key for it, key in kept if it == item}


def test_an_extra_tag_is_marked_in_csv_and_iiif(tmp_path, tagged, source, weights):
    pytest.importorskip("iiif_prezi3")
    path = extra_tag(tmp_path, tagged, weights)
    tag, expected = expected_extra(tagged, path)
    kept = {where: value for where, value in expected.items() if value > tag.threshold}
    assert run(source, tmp_path / "csv", weights, "--extra-tags", path, "--format", "csv",
               "--no-embeddings") == 0
    assert sorted(files_in(tmp_path / "csv")) == ["book1.csv", "book2.csv"]  # vectors computed, not written
    rows = []
    for item in ITEMS:
        text = (tmp_path / "csv" / f"{item}.csv").read_text()
        assert text.splitlines()[0] == "image,tag,confidence,extra"
        rows += [(item, row) for row in csv.DictReader(io.StringIO(text))]
        assert all(tag == "ukiyoe" for tags in formats.parse_csv(text).values() for tag, _ in tags
                   if tag not in LABELS)
    assert {(item, row["image"]): float(row["confidence"]) for item, row in rows if row["extra"] == "1"} == kept
    assert all(row["tag"] in LABELS for _, row in rows if row["extra"] == "" and row["tag"])
    assert run(source, tmp_path / "iiif", weights, "--extra-tags", path, "--format", "iiif") == 0
    found = {}
    for item in ITEMS:
        page = json.loads((tmp_path / "iiif" / f"{item}.iiif.json").read_text())
        for annotation in page["items"]:
            naming = [body for body in annotation["body"] if body["purpose"] == "tagging"]  # one per language
            marked = all(body.get("extraTag") is True for body in naming)
            assert marked == (naming[0]["value"] == "ukiyoe") and len(naming) == 2
            assert not any(body.get("extraTag") for body in annotation["body"] if body["purpose"] != "tagging")
            if marked:
                found[(item, annotation["id"].rpartition("/")[0].rpartition("#")[2])] = annotation["confidence"]
        parsed = formats.parse_iiif((tmp_path / "iiif" / f"{item}.iiif.json").read_text())
        assert {key for key, tags in parsed.items() if any(t == "ukiyoe" for t, _ in tags)} == {
            key for it, key in kept if it == item}
    assert found == kept
    context = json.loads((tmp_path / "iiif" / "context.jsonld").read_text())["@context"]
    assert context["extraTag"]["@type"] == "xsd:boolean"


def test_the_review_report_shows_an_extra_tag(tmp_path, tagged, source, weights):
    path = extra_tag(tmp_path, tagged, weights)
    tag, expected = expected_extra(tagged, path)
    out = tmp_path / "out"
    assert multiinference.main(["--inputpath", source, "--outputpath", str(out), "--weights", weights, "--quiet",
                                "--backend", "tensorflow", "--extra-tags", path]) == 0
    pages = "".join(open(page, encoding="utf-8").read() for page in glob.glob(str(out / "html" / "*.html")))
    assert "ukiyoe" in pages and "ukiyoe" in (out / "index.html").read_text(encoding="utf-8")


def test_without_extra_tags_the_csv_keeps_its_three_columns():
    records = [Record("a", "/a.png", (1, 1), np.array([0.9, 0.1], np.float32))]
    from tagestimate.modelconfig import ModelConfig

    config = ModelConfig(labels=("x", "y"))
    assert formats.render_csv("i", records, config) == "image,tag,confidence\na,x,0.9\n"
    scored = [records[0]._replace(extra=(ExtraScore("z", 0.2, 0.5),))]  # computed, below its threshold
    assert formats.render_csv("i", scored, config) == "image,tag,confidence,extra\na,x,0.9,\n"
    assert formats.render_json("i", scored, config) == formats.render_json("i", records, config)


@pytest.mark.parametrize("changes, words", [
    ({"weights_sha256": "f" * 64}, "was learned from the vectors of layer 'dense' of weights ffffffffffff"),
    ({"layer": "dense_1"}, "was learned from the vectors of layer 'dense_1'"),
    ({"name": "graphic"}, "is named 'graphic', like one of the model's labels"),
])
def test_an_extra_tag_from_another_model_is_refused_before_any_image(tmp_path, tagged, source, weights, capsys,
                                                                   changes, words):
    path = extra_tag(tmp_path, tagged, weights, **changes)
    assert run(source, tmp_path / "out", weights, "--extra-tags", path) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and path in err and len(err.strip().splitlines()) == 1
    assert not any(name.endswith((".json", ".npz")) for name in os.listdir(tmp_path / "out"))


def test_two_extra_tags_with_one_name_are_refused(tmp_path, tagged, source, weights, capsys):
    first = extra_tag(tmp_path, tagged, weights)
    (tmp_path / "copy").mkdir()
    second = extra_tag(tmp_path / "copy", tagged, weights)
    assert run(source, tmp_path / "out", weights, "--extra-tags", first, "--extra-tags", second) == 1
    assert "both name the tag 'ukiyoe'" in capsys.readouterr().err


# ---------------------------------------------------------------- model.json's layer, runners' outputs

def test_a_layer_not_in_the_model_is_one_sentence_naming_model_json(tmp_path, weights, source, capsys):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "best.weights.h5").write_bytes(open(weights, "rb").read())
    config = json.loads(open(os.path.join(os.path.dirname(weights), "model.json")).read())
    config["embedding_layer"] = "dense_9"
    (folder / "model.json").write_text(json.dumps(config))
    assert run(source, tmp_path / "out", folder / "best.weights.h5") == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {folder / 'model.json'} names embedding_layer 'dense_9', which the model has no layer "
                   "of; name one of its layers there, e.g. 'dense' (NDL's head)")


@pytest.mark.slow  # builds and traces a model of its own
def test_another_layer_named_in_model_json_gives_its_vectors(tmp_path, weights):
    bundle = ModelBundle.load(weights)
    other = bundle.__class__(bundle.path, bundle.config.__class__(**{**bundle.config.__dict__,
                                                                      "embedding_layer": "dense_1"}),
                             bundle.kind, bundle.sha256, bundle.output_config)
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    model = load_model(weights, bundle.config, bundle.kind)
    probabilities, vectors = backends.TensorFlowRunner(other).infer(pixels)
    import keras

    direct = keras.Model(model.input, model.get_layer("dense_1").output).predict(pixels, verbose=0)
    assert np.abs(vectors - direct).max() <= 1e-5 * np.abs(direct).max()
    assert np.abs(vectors - keras.Model(model.input, model.get_layer("dense").output).predict(
        pixels, verbose=0)).max() > 1e-3 * np.abs(direct).max()  # not the default layer's
    assert vectors.shape == (3, 512) and probabilities.shape == (3, len(LABELS))
    with pytest.raises(WeightsError, match="model.json names embedding_layer 'nope'"):
        embedding_model(model, bundle.config.__class__(labels=bundle.config.labels, embedding_layer="nope"))


def test_a_lone_image_gets_what_it_gets_in_a_batch(weights):
    """TensorFlow's kernel for one row sums differently; float16 would then differ between engines."""
    runner = shared_tensorflow_runner(ModelBundle.load(weights))
    pixels = np.random.default_rng(1).uniform(0, 255, (5, 64, 64, 3)).astype(np.float32)
    _, together = runner.infer(pixels)
    alone = np.concatenate([runner.infer(pixels[i:i + 1])[1] for i in range(5)])
    assert np.array_equal(alone, together)


def test_outputs_are_matched_by_values_not_position():
    probabilities, vectors = np.full((2, 3), 0.25, np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)
    assert match_outputs([probabilities, vectors], [vectors, probabilities]) == [1, 0]
    assert match_outputs([probabilities, vectors], [probabilities, vectors]) == [0, 1]
    # one shape for both (a model with as many labels as dimensions): told apart by their values
    same = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 6)
    other = same[::-1] * 3
    assert match_outputs([same, other], [other + 1e-7, same]) == [1, 0]
    with pytest.raises(BackendError, match="--backend tensorflow"):
        match_outputs([probabilities, vectors], [probabilities, probabilities])


@pytest.mark.slow
def test_openvino_gives_tensorflow_s_vectors_through_its_named_outputs(tmp_path, weights, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    bundle = ModelBundle.load(weights)
    pixels = np.random.default_rng(2).uniform(0, 255, (6, 64, 64, 3)).astype(np.float32)
    ov_probabilities, ov_vectors = backends.OpenVINORunner(bundle).infer(pixels)
    tf_probabilities, tf_vectors = shared_tensorflow_runner(bundle).infer(pixels)
    assert ov_vectors.shape == (6, 512) and ov_probabilities.shape == (6, len(LABELS))
    assert np.abs(ov_probabilities - tf_probabilities).max() < 1e-4
    ours, theirs = embeddings.normalise(ov_vectors), embeddings.normalise(tf_vectors)
    assert np.abs(ours - theirs).max() < 1e-3
    assert np.abs(ours[0] - theirs[1]).max() > 1e-2  # rows differ: the comparison above can fail
    cached = backends.OpenVINORunner(bundle)  # from the cache: the names were saved with the model
    assert cached.conversion_seconds is None
    assert np.array_equal(cached.infer(pixels)[1], ov_vectors)
