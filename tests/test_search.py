"""The collection index and `tagestimate search`: incremental = full build, refusals, exact and
approximate top-k, paths and IIIF targets, the command's formats and sentences, Ctrl-C."""

import csv
import io
import json
import logging
import os

import numpy as np
import pytest

from tagestimate import __main__ as entry, embeddings, storage
from tagestimate.discover import index as collection, nearest, query, where
from tagestimate.files import sha256_file

from conftest import SHARED_DATA
from test_storage import s3_server  # noqa: F401 - the fixture: moto's S3 server on loopback

REPLICA = os.path.join(SHARED_DATA, "legacy-weights", "replica_ndllabelimage.hdf5")
SHA = "a" * 64


def write_item(output, item, vectors_by_key, layer="dense", sha=SHA):
    path = os.path.join(output, embeddings.file_name(item))
    with open(path, "wb") as handle:
        handle.write(embeddings.to_bytes(embeddings.make(vectors_by_key, layer, sha)))
    with open(os.path.join(output, f"{item}.json"), "w") as handle:
        handle.write("{}\n")
    return path


def clustered(n, dim=32, clusters=8, seed=0, spread=0.3):
    """n unit vectors round `clusters` centres, and each one's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    labels = rng.integers(0, clusters, n)
    return embeddings.normalise(centres[labels] + spread * rng.standard_normal((n, dim))), labels


@pytest.fixture
def output(tmp_path):
    """Three items of distinct random vectors; keys with '/' in one."""
    folder = tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for item in ("book1", "book2", "book10"):
        write_item(folder, item, {f"p{i}" if i % 2 else f"sub/p{i}": rng.standard_normal(16) for i in range(6)})
    return str(folder)


def run(argv, capsys):
    status = entry.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---------------------------------------------------------------- the index

def test_a_build_holds_every_vector_items_in_natural_order(output):
    index = collection.update(output, progress=False)
    assert [item.name for item in index.items] == ["book1", "book2", "book10"]
    assert len(index) == 18 and index.dim == 16 and index.weights_sha256 == SHA
    stored = embeddings.from_bytes(open(os.path.join(output, "book2.emb.npz"), "rb").read())
    row = index.row("book2", stored.keys[3])
    assert row == 6 + 3
    np.testing.assert_array_equal(index.vectors[row], stored.vectors[3])
    assert index.describe([row])[0][:2] == ("book2", stored.keys[3])


def test_incremental_update_equals_a_full_build_and_reads_only_what_changed(output, tmp_path, monkeypatch):
    collection.update(output, progress=False)
    rng = np.random.default_rng(3)
    write_item(output, "book3", {f"n{i}": rng.standard_normal(16) for i in range(4)})  # new
    write_item(output, "book1", {"x": rng.standard_normal(16), "y": rng.standard_normal(16)})  # changed
    os.unlink(os.path.join(output, "book10.emb.npz"))  # removed
    read = []
    real = embeddings.from_bytes
    monkeypatch.setattr(embeddings, "from_bytes", lambda data, source="": read.append(source) or real(data, source))
    incremental = collection.update(output, progress=False)
    assert sorted(os.path.basename(path) for path in read) == ["book1.emb.npz", "book3.emb.npz"]
    full = collection.update(output, rebuild=True, progress=False)
    assert [item.to_dict() for item in incremental.items] == [item.to_dict() for item in full.items]
    np.testing.assert_array_equal(incremental.vectors, full.vectors)
    assert [item.name for item in full.items] == ["book1", "book2", "book3"] and len(full) == 12
    reloaded = collection.load(output)  # what was saved is what was built
    np.testing.assert_array_equal(reloaded.vectors, full.vectors)
    read.clear()
    collection.update(output, progress=False)
    assert read == []  # nothing changed: nothing read, nothing written


def test_one_vectors_file_is_left_after_updates(output):
    collection.update(output, progress=False)
    write_item(output, "book4", {"a": np.ones(16)})
    index = collection.update(output, progress=False)
    names = sorted(os.listdir(os.path.join(output, collection.FOLDER)))
    assert names == [collection.INDEX_NAME, f"vectors-{index.token}.npy"]


def test_item_file_of_another_model_is_refused(output):
    collection.update(output, progress=False)
    write_item(output, "book5", {"a": np.ones(16)}, sha="b" * 64)
    with pytest.raises(collection.SearchError, match=r"book5\.emb\.npz holds vectors of layer 'dense' of weights "
                                                     r"bbbbbbbbbbbb.*the search index holds .*aaaaaaaaaaaa.*one model"):
        collection.update(output, progress=False)


def test_items_of_two_layers_are_refused_on_a_first_build(tmp_path):
    write_item(tmp_path, "a", {"k": np.ones(16)})
    write_item(tmp_path, "b", {"k": np.ones(16)}, layer="dense_1")
    with pytest.raises(collection.SearchError, match=r"b\.emb\.npz holds vectors of layer 'dense_1'.*a\.emb\.npz"):
        collection.update(str(tmp_path), progress=False)


def test_an_index_of_another_model_is_replaced_when_every_item_changed(output):
    collection.update(output, progress=False)
    for item in ("book1", "book2", "book10"):  # everything tagged again with other weights
        write_item(output, item, {"k": np.ones(16)}, sha="c" * 64)
    assert collection.update(output, progress=False).weights_sha256 == "c" * 64


def test_empty_collections_are_refused(tmp_path):
    with pytest.raises(collection.SearchError, match=r"holds no embeddings \(\{item\}\.emb\.npz files\); tag"):
        collection.update(str(tmp_path), progress=False)
    with open(tmp_path / "a.emb.npz", "wb") as handle:
        handle.write(embeddings.to_bytes(embeddings.make({})))
    with pytest.raises(collection.SearchError, match="hold no image"):
        collection.update(str(tmp_path), progress=False)
    with pytest.raises(collection.SearchError, match="does not exist"):
        collection.update(str(tmp_path / "missing"), progress=False)


@pytest.mark.parametrize("damage", ["index", "vectors"])
def test_a_damaged_index_is_rebuilt_with_a_warning(output, caplog, damage):
    built = collection.update(output, progress=False)
    folder = os.path.join(output, collection.FOLDER)
    victim = collection.INDEX_NAME if damage == "index" else f"vectors-{built.token}.npy"
    with open(os.path.join(folder, victim), "r+b") as handle:
        handle.truncate(40)
    with pytest.raises(collection.DamagedIndex, match=r"search index in .*\.index is damaged .*delete that folder"):
        collection.load(output)
    with caplog.at_level(logging.WARNING):
        rebuilt = collection.update(output, progress=False)
    assert "rebuilding it" in caplog.text
    np.testing.assert_array_equal(rebuilt.vectors, built.vectors)
    collection.load(output)  # whole again


@pytest.mark.parametrize("write", ["vectors-", collection.INDEX_NAME])
def test_ctrl_c_while_saving_leaves_the_old_index(output, monkeypatch, write):
    before = collection.update(output, progress=False)
    write_item(output, "book4", {"a": np.ones(16)})
    real = storage.write_atomic

    def interrupted(path, data):
        if write in os.path.basename(path):
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(storage, "write_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collection.update(output, progress=False)
    monkeypatch.undo()
    after = collection.load(output)  # the old index, whole
    np.testing.assert_array_equal(after.vectors, before.vectors)
    assert [item.name for item in after.items] == ["book1", "book2", "book10"]
    assert not [name for name in os.listdir(os.path.join(output, collection.FOLDER)) if name.endswith(".part")]
    assert len(collection.update(output, progress=False)) == 19  # and the next update completes it


# ---------------------------------------------------------------- top-k

def test_exact_top_k_is_the_brute_force_order_and_skips_excluded_rows(monkeypatch):
    vectors, _ = clustered(500)
    monkeypatch.setattr(nearest, "BLOCK", 64)  # several blocks
    query_vector = vectors[17]
    rows, values = nearest.exact(vectors.astype(np.float16), query_vector, 5, exclude=[17])
    expected = np.argsort(-(vectors.astype(np.float16).astype(np.float32) @ query_vector), kind="stable")
    assert rows.tolist() == [row for row in expected if row != 17][:5]
    assert values[0] >= values[-1] and 17 not in rows.tolist()


def test_approximate_recall_at_10_against_exact(tmp_path):
    vectors, _ = clustered(2000, dim=64, clusters=20, seed=2)
    stored = vectors.astype(np.float16)
    approximate = nearest.build_approximate(stored)
    queries = clustered(100, dim=64, clusters=20, seed=2, spread=0.35)[0]
    hits = []
    for query_vector in queries:
        exact_rows = set(nearest.exact(stored, query_vector, 10)[0].tolist())
        found, scores = nearest.search_approximate(approximate, query_vector, 10)
        hits.append(len(exact_rows & set(found.tolist())) / 10)
        np.testing.assert_allclose(scores, stored[found].astype(np.float32) @ query_vector, atol=2e-3)
    assert np.mean(hits) >= 0.95


def test_the_searcher_saves_its_approximate_index_and_opens_it_again(output, monkeypatch):
    index = collection.update(output, progress=False)
    searcher = nearest.Searcher(index, approximate=True)
    path = os.path.join(output, collection.FOLDER, f"ann-{index.token}.usearch")
    assert os.path.isfile(path)
    rows, _ = searcher.search(np.asarray(index.vectors[4], np.float32), 3)
    assert rows[0] == 4
    monkeypatch.setattr(nearest, "build_approximate", lambda vectors: pytest.fail("built again"))
    assert nearest.Searcher(index, approximate=True).search(np.asarray(index.vectors[4], np.float32), 3)[0][0] == 4


def test_without_usearch_the_search_is_exact_and_says_so(output, monkeypatch, caplog):
    index = collection.update(output, progress=False)
    monkeypatch.setattr(nearest, "usearch_available", lambda: False)
    monkeypatch.setattr(nearest, "APPROX_FROM", 1)
    with caplog.at_level(logging.INFO):
        searcher = nearest.Searcher(index)
    assert searcher.approximate is None and "usearch is not installed" in caplog.text
    assert searcher.search(np.asarray(index.vectors[2], np.float32), 1)[0][0] == 2


# ---------------------------------------------------------------- paths and targets

def test_safe_name_is_the_reports():
    from tagestimate.review.thumbs import safe_name

    for text in ("book1", "sub/p3", "ぺーじ 1", "a" * 90, ""):
        assert where.safe_name(text) == safe_name(text)


def test_paths_come_from_the_report_then_the_input_folder_and_targets_from_the_manifest(tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    for relative in ("book1/p1.jpg", "book1/p2.png", "1054192/1054192_5_0.jpg"):
        (inputs / relative).parent.mkdir(parents=True, exist_ok=True)
        (inputs / relative).write_bytes(b"x")
    output.mkdir()
    write_item(output, "book1", {"p1": np.ones(8), "p2": np.arange(8.0)})
    write_item(output, "1054192", {"1054192_5_0": np.ones(8)})
    data = output / "html" / "data"
    data.mkdir(parents=True)
    (data / (where.safe_name("book1") + ".json")).write_text(json.dumps(
        {"item": "book1", "labels": [], "thresholds": [], "images": [["p1", "/elsewhere/p1.jpg", []]]}))
    (output / "html" / "run.json").write_text(json.dumps({"input": str(inputs)}))
    (inputs / "manifest.csv").write_text("id,pid,page,x,y,w,h,folder,canvas\n"
                                         "p2,,,10,20,30,40,book1,https://example.org/canvas/2\n")
    index = collection.update(str(output), progress=False)
    described = {(item, key): (path, target) for item, key, path, target in index.describe(range(len(index)))}
    assert described[("book1", "p1")] == ("/elsewhere/p1.jpg", "")  # the report's path wins
    assert described[("book1", "p2")] == (str(inputs / "book1" / "p2.png"),
                                              "https://example.org/canvas/2#xywh=percent:10.0,20.0,30.0,40.0")
    path, target = described[("1054192", "1054192_5_0")]
    assert path == str(inputs / "1054192" / "1054192_5_0.jpg")
    assert target.startswith("https://") and "/1054192/R0000005/full/full/0/default.jpg" in target


def test_targets_of_an_iiif_output_are_read_back(tmp_path):
    write_item(tmp_path, "b", {"sub/p 1": np.ones(8)})
    page = {"type": "AnnotationPage", "items": [{
        "id": "https://x.org/b.iiif.json#sub%2Fp%201/map", "target": {
            "type": "SpecificResource", "source": {"id": "https://x.org/canvas/1", "type": "Canvas"},
            "selector": {"type": "FragmentSelector", "value": "xywh=percent:1.0,2.0,3.0,4.0"}}}]}
    (tmp_path / "b.iiif.json").write_text(json.dumps(page))
    index = collection.update(str(tmp_path), progress=False)
    assert index.describe([0])[0][3] == "https://x.org/canvas/1#xywh=percent:1.0,2.0,3.0,4.0"


# ---------------------------------------------------------------- the command

def test_search_by_key_lists_the_nearest_others_in_each_format(output, capsys):
    index = collection.update(output, progress=False)
    row = index.row("book2", "p3")
    expected = [index.describe([r])[0][:2] for r in nearest.exact(index.vectors, np.asarray(
        index.vectors[row], np.float32), 3, exclude=[row])[0]]
    status, out, err = run(["search", output, "--like", "book2/p3", "-k", "3", "--format", "csv"], capsys)
    assert status == 0, err
    found = list(csv.DictReader(io.StringIO(out)))
    assert [(line["item"], line["key"]) for line in found] == expected
    assert [line["rank"] for line in found] == ["1", "2", "3"] and list(found[0]) == list(query.COLUMNS)
    status, out, _ = run(["search", output, "--like", "book2/p3", "-k", "3", "--format", "json"], capsys)
    assert [(entry["item"], entry["key"]) for entry in json.loads(out)] == expected
    status, out, _ = run(["search", output, "--like", "book2/p3", "-k", "3"], capsys)
    assert out.splitlines()[0].split() == ["rank", "score", "item", "key"]  # empty columns left out
    assert out.splitlines()[1].split()[2:] == list(expected[0])


def test_several_examples_find_what_lies_between_them(tmp_path, capsys):
    basis = np.eye(8)
    write_item(tmp_path, "b", {"a": basis[0], "b": basis[1], "between": basis[0] + basis[1],
                               "near-a": basis[0] + 0.5 * basis[2], "near-b": basis[1] + 0.5 * basis[3]})
    status, out, err = run(["search", str(tmp_path), "--like", "b/a", "--like", "b/b", "-k", "1", "--format", "csv"],
                           capsys)
    assert status == 0, err
    line = list(csv.DictReader(io.StringIO(out)))[0]
    assert line["key"] == "between" and float(line["score"]) == pytest.approx(1.0, abs=1e-3)


def test_a_key_with_a_slash_and_several_examples_search_their_normalised_mean(output, capsys):
    index = collection.update(output, progress=False)
    rows = [index.row("book1", "sub/p0"), index.row("book10", "p5")]
    mean = query.mean_vector(np.asarray(index.vectors[rows], np.float32))
    expected = [index.describe([r])[0][:2] for r in nearest.exact(index.vectors, mean, 4, exclude=rows)[0]]
    status, out, err = run(["search", output, "--like", "book1/sub/p0", "--like", "key:book10/p5",
                            "-k", "4", "--format", "json"], capsys)
    assert status == 0, err
    assert [(entry["item"], entry["key"]) for entry in json.loads(out)] == expected


@pytest.mark.parametrize("like, words", [
    ("book2/nope", "'book2/nope' is neither an image file nor a key of the index of"),
    ("nobook/p1", "neither an image file nor a key"),
    ("key:book2", "'key:book2' is not a key of the index"),
])
def test_an_unknown_key_gets_one_sentence(output, capsys, like, words):
    status, out, err = run(["search", output, "--like", like], capsys)
    assert status == 1 and out == ""
    assert err.startswith("error: ") and words in err and "ITEM/KEY" in err and len(err.splitlines()) == 1


def test_an_empty_output_folder_gets_one_sentence(tmp_path, capsys):
    status, _, err = run(["search", str(tmp_path), "--like", "a/b"], capsys)
    assert status == 1 and "holds no embeddings" in err and "Traceback" not in err


def test_a_query_image_needs_the_indexs_weights(tmp_path, capsys):
    write_item(tmp_path, "b", {"k": np.ones(8)}, sha="d" * 64)
    image = tmp_path / "q.png"
    from PIL import Image

    Image.new("RGB", (20, 20), "red").save(image)
    status, _, err = run(["search", str(tmp_path), "--like", str(image), "--weights", REPLICA], capsys)
    assert status == 1 and "replica_ndllabelimage.hdf5 give layer 'dense' of weights" in err
    assert "holds layer 'dense' of weights dddddddddddd; pass the weights that tagged it with --weights" in err


def test_an_unreadable_query_image_gets_one_sentence(tmp_path, capsys):
    write_item(tmp_path, "b", {"k": np.ones(8)}, sha=sha256_file(REPLICA))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    status, _, err = run(["search", str(tmp_path), "--like", str(bad), "--weights", REPLICA], capsys)
    assert status == 1 and "query image" in err and "broken.jpg cannot be read" in err
    assert len(err.strip().splitlines()) == 1


def test_help_lists_the_commands():
    from tagestimate.commands import learntag, search

    assert "--like" in search.build_parser("x").format_help()
    assert "--positive" in learntag.build_parser("x").format_help()
    assert {"search", "learn-tag"} <= set(entry.COMMANDS)


@pytest.mark.slow  # moto's server: a few seconds
def test_an_s3_output_is_indexed_and_searched_as_a_local_one(output, s3_server, capsys):
    from test_storage import keys, make_bucket, upload

    uri = make_bucket("search-out") + "/run"
    upload(output, uri)
    local = collection.update(output, progress=False)
    remote = collection.update(uri, progress=False)
    np.testing.assert_array_equal(remote.vectors, local.vectors)
    stored = keys("search-out")
    assert "run/.index/index.json" in stored and f"run/.index/vectors-{remote.token}.npy" in stored
    status, out, err = run(["search", uri, "--like", "book2/p3", "-k", "2", "--format", "json"], capsys)
    assert status == 0, err
    assert [entry["key"] for entry in json.loads(out)] == \
        [key for _, key, _, _ in local.describe(nearest.exact(local.vectors, np.asarray(
            local.vectors[local.row("book2", "p3")], np.float32), 2, exclude=[local.row("book2", "p3")])[0])]
    assert len([key for key in keys("search-out") if "vectors-" in key]) == 1  # nothing rewritten, nothing left


def test_the_simd_scan_and_numpy_agree(monkeypatch):
    from tagestimate.discover import learn
    from tagestimate.extratags import ExtraTag

    vectors, _ = clustered(3000, dim=64, clusters=30, seed=4)
    index = collection.CollectionIndex("unused", "dense", "", 64, [], vectors.astype(np.float16))
    query_vector = vectors[5]
    rows, values = nearest.brute_force(index.vectors, query_vector, 20)
    exact_rows, exact_values = nearest.exact(index.vectors, query_vector, 20)
    assert rows[0] == 5 and len(set(rows.tolist()) & set(exact_rows.tolist())) >= 19
    np.testing.assert_allclose(values, index.vectors[rows].astype(np.float32) @ query_vector, atol=2e-3)
    tag = ExtraTag("t", np.random.default_rng(0).standard_normal(64) * 4, -1.0)
    fast = learn.confidences(index, tag)
    monkeypatch.setattr(nearest, "usearch_available", lambda: False)
    np.testing.assert_allclose(fast, learn.confidences(index, tag), atol=2e-3)
    np.testing.assert_allclose(fast, tag.confidences(index.vectors.astype(np.float32)), atol=2e-3)
