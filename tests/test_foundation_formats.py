"""The three small file formats the discovery and review work share: embeddings, extra tags, corrections."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from tagestimate import corrections, embeddings, extratags


def sample():
    rng = np.random.default_rng(7)
    raw = {"p10": rng.normal(size=8), "p2": rng.normal(size=8) * 5, "p1": np.zeros(8)}
    return raw, embeddings.make(raw, layer="dense", weights_sha256="ab" * 32)


def test_embeddings_order_normalised_and_round_trip():
    raw, made = sample()
    assert made.keys == ("p1", "p2", "p10")  # natural order, as in {item}.json
    assert made.vectors.dtype == np.float16 and made.dim == 8
    np.testing.assert_allclose(np.linalg.norm(made.vectors[1:].astype(np.float32), axis=1), 1, atol=2e-3)
    np.testing.assert_allclose(made.vectors[2], raw["p10"] / np.linalg.norm(raw["p10"]), atol=2e-3)
    assert not made.vectors[0].any()  # a zero vector stays zero, never NaN
    back = embeddings.from_bytes(embeddings.to_bytes(made))
    assert back.keys == made.keys and back.layer == "dense" and back.weights_sha256 == "ab" * 32
    np.testing.assert_array_equal(back.vectors, made.vectors)


def test_embeddings_bytes_depend_on_values_only_and_load_with_numpy(tmp_path):
    _, made = sample()
    first = embeddings.to_bytes(made)
    assert embeddings.to_bytes(embeddings.from_bytes(first)) == first
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    path = tmp_path / embeddings.file_name("book")
    path.write_bytes(first)
    with np.load(path, allow_pickle=False) as archive:
        assert list(archive["keys"]) == ["p1", "p2", "p10"]
    assert embeddings.item_name("book.emb.npz") == "book" and embeddings.item_name(".emb.npz") is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "dim", "duplicate"])
def test_damaged_embeddings_are_one_sentence(damage):
    _, made = sample()
    data = embeddings.to_bytes(made)
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = b"not a zip at all"
    elif damage == "dim":
        buffer = io.BytesIO()  # 4 columns where meta says 8
        np.savez(buffer, keys=np.array(made.keys), vectors=made.vectors[:, :4],
                 meta=np.array(json.dumps({"dim": 8, "layer": "dense", "version": 1})))
        data = buffer.getvalue()
    else:
        data = embeddings.to_bytes(embeddings.Embeddings(("a", "a", "b"), made.vectors, "dense", ""))
    with pytest.raises(embeddings.EmbeddingsError) as caught:
        embeddings.from_bytes(data, source="out/book.emb.npz")
    assert "out/book.emb.npz" in str(caught.value) and "\n" not in str(caught.value)


def test_extra_tag_round_trip_confidences_and_model_check(tmp_path):
    tag = extratags.ExtraTag("ukiyoe", np.array([2.0, -1.0]), 0.5, 0.7, "dense", "cd" * 32, 3, 9)
    path = extratags.save(str(tmp_path / "ukiyoe.tag.json"), tag)
    back = extratags.load(path)
    assert (back.name, back.intercept, back.threshold, back.positives, back.negatives) == ("ukiyoe", 0.5, 0.7, 3, 9)
    confidences = back.confidences(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(confidences, 1 / (1 + np.exp(-np.array([2.5, -0.5]))))
    back.check_model("dense", "cd" * 32)
    with pytest.raises(extratags.ExtraTagError, match="learn it again"):
        back.check_model("dense", "ef" * 32)
    with pytest.raises(extratags.ExtraTagError, match="layer 'dense_1'"):
        back.check_model("dense_1", "cd" * 32)


@pytest.mark.parametrize("text, needle", [
    ("{", "not an extra-tag file"), ('{"format": "other"}', "format"),
    (json.dumps({"format": extratags.FORMAT, "version": 1, "name": "../x", "coef": [1], "intercept": 0}), "not usable"),
    (json.dumps({"format": extratags.FORMAT, "version": 1, "name": "x", "coef": [], "intercept": 0}), "coef"),
])
def test_bad_extra_tag_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(extratags.ExtraTagError, match=needle):
        extratags.load(str(path))
    with pytest.raises(extratags.ExtraTagError, match="cannot read"):
        extratags.load(str(tmp_path / "missing.json"))


def test_corrections_round_trip_relative_paths_and_problems(tmp_path):
    rows = [corrections.Correction("crops/a.jpg", "book1", "graphic_map", "confirm", "kim", "2026-12-05T03:00:00Z"),
            corrections.Correction("/abs/b.jpg", "book1", "stamp", "reject", "", "2026-12-05T03:01:00Z")]
    path = corrections.write(str(tmp_path / "corrections.csv"), rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("c.jpg,book1,picture,maybe,kim,t\n,book1,picture,add,kim,t\nd.jpg,book1\n\n")
    read, problems = corrections.read(path)
    assert [line for line, _ in read] == [2, 3]
    assert read[0][1].image == os.path.join(str(tmp_path), "crops", "a.jpg") and read[1][1].image == "/abs/b.jpg"
    assert read[0][1].tag == "graphic_map" and read[1][1].decision == "reject"
    assert [(problem.line, problem.reason.split()[0]) for problem in problems] == [(4, "decision"), (5, "no"), (6, "2")]


def test_corrections_header_encoding_and_contradictions(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("image,tag\n")
    with pytest.raises(corrections.CorrectionsError, match="header"):
        corrections.read(str(path))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(corrections.CorrectionsError, match="UTF-8"):
        corrections.read(str(path))
    rows, _ = corrections.parse("image,item,tag,decision,reviewer,time\n/a,,map,confirm,,\n/a,,map,reject,,\n"
                                "/a,,stamp,add,,\n/a,,stamp,confirm,,\n", "/")
    assert corrections.contradictions(rows) == {("/a", "map"): [2, 3]}
