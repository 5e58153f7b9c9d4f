"""`tagestimate learn-tag`: a held-out class is recovered from a few examples; the CSV, the HTML page
and the saved extra tag; random negatives; bad names."""

import csv
import json
import os

import numpy as np
import pytest

from tagestimate import __main__ as entry, extratags
from tagestimate.discover import index as collection, learn, where

from test_search import SHA, clustered, run, write_item


@pytest.fixture(scope="module", autouse=True)
def sklearn_loaded():
    """scikit-learn imported once, in set-up: its import (seconds on a loaded machine) is no test's time."""
    import sklearn.linear_model  # noqa: F401


@pytest.fixture
def clusters(tmp_path):
    """600 images in 6 items, 8 clusters of 32-d vectors; keys name their cluster (c3-0017)."""
    vectors, labels = clustered(600, dim=32, clusters=8, seed=5, spread=0.8)
    output = tmp_path / "out"
    output.mkdir()
    for item in range(6):
        rows = range(item * 100, item * 100 + 100)
        write_item(output, f"book{item}", {f"c{labels[r]}-{r:04d}": vectors[r] for r in rows})
    return str(output), labels


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_held_out_class_is_ranked_first_from_five_examples(clusters, capsys):
    output, labels = clusters
    members = [r for r in range(600) if labels[r] == 3]
    examples = [f"book{r // 100}/c3-{r:04d}" for r in members[:5]]
    status, out, err = run(["learn-tag", output, "etching", *[f for e in examples for f in ("--positive", e)]], capsys)
    assert status == 0, err
    table = out.strip()
    assert table == os.path.join(output, "learned", "etching.csv")
    ranking = read_csv(table)
    assert len(ranking) == 600 and [line["rank"] for line in ranking[:3]] == ["1", "2", "3"]
    top = ranking[:len(members)]
    held_out = [line for line in top if line["key"].startswith("c3-") and line["example"] != "positive"]
    assert len(held_out) >= 0.9 * (len(members) - 5)  # the class's other images, which no one named
    assert {line["key"] for line in ranking if line["example"] == "positive"} == {e.split("/")[1] for e in examples}
    scores = [float(line["score"]) for line in ranking]
    assert scores == sorted(scores, reverse=True)


def test_random_negatives_are_fixed_and_never_positives():
    first = learn.random_negatives(1000, {1, 2, 3}, 200)
    assert len(first) == 200 and not {1, 2, 3} & set(first.tolist())
    np.testing.assert_array_equal(first, learn.random_negatives(1000, {1, 2, 3}, 200))
    assert len(learn.random_negatives(10, {0, 1}, 200)) == 8  # a small collection: all the others


def test_given_negatives_are_used_and_marked(clusters, capsys):
    output, labels = clusters
    index = collection.update(output, progress=False)
    positives = [r for r in range(600) if labels[r] == 1][:3]
    negatives = [r for r in range(600) if labels[r] == 2][:3]

    def keys(rows):
        return [f"{item}/{key}" for item, key, _, _ in index.describe(rows)]

    argv = ["learn-tag", output, "t"] + [x for k in keys(positives) for x in ("--positive", k)] + \
        [x for k in keys(negatives) for x in ("--negative", k)] + ["--save", os.path.join(output, "t.json")]
    status, out, err = run(argv, capsys)
    assert status == 0, err
    ranking = read_csv(out.strip())
    marked = {line["key"]: line["example"] for line in ranking if line["example"]}
    assert sorted(marked.values()) == ["negative"] * 3 + ["positive"] * 3
    tag = extratags.load(os.path.join(output, "t.json"))
    assert (tag.positives, tag.negatives, tag.threshold) == (3, 3, learn.THRESHOLD)
    assert tag.layer == "dense" and tag.weights_sha256 == SHA and tag.name == "t"
    # the saved tag gives the CSV's scores: what --extra-tags applies is what was ranked
    first = ranking[0]
    stored = index.vectors[index.row(first["item"], first["key"])]
    assert tag.confidences(np.asarray([stored], np.float32))[0] == pytest.approx(float(first["score"]), abs=2e-3)


def test_the_page_shows_the_top_n_with_the_reports_thumbnails_escaped(tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    write_item(output, "b<x>", {"<script>alert(1)</script>": np.ones(8), "plain": np.arange(8.0),
                                **{f"o{i}": np.random.default_rng(i).standard_normal(8) for i in range(5)}})
    thumb = output / "html" / "thumbs" / where.safe_name("b<x>") / (where.safe_name("plain") + ".jpg")
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"jpeg")
    status, out, err = run(["learn-tag", str(output), "n", "--positive", "b<x>/plain", "--top", "3"], capsys)
    assert status == 0, err
    page = (output / "learned" / "n.html").read_text()
    assert "b<x>" not in page and "b&lt;x&gt;/plain" in page  # every name is escaped
    assert page.count("<figure") == 3
    assert f'src="../html/thumbs/{where.safe_name("b<x>")}/{where.safe_name("plain")}.jpg"' in page
    assert "<script" not in page and "<link" not in page and 'src="http' not in page  # nothing from a network
    assert "Top 3 of 7 images" in page


@pytest.mark.parametrize("name", ["../evil", "", "a b", "x" * 65])
def test_a_bad_tag_name_gets_one_sentence(clusters, capsys, name):
    output, _ = clusters
    status, _, err = run(["learn-tag", output, name, "--positive", "book0/c0-0000"], capsys)
    assert status == 1 and "is not usable" in err and not os.path.exists(os.path.join(output, "learned"))


def test_an_unknown_positive_gets_one_sentence(clusters, capsys):
    output, _ = clusters
    status, _, err = run(["learn-tag", output, "t", "--positive", "book0/nope"], capsys)
    assert status == 1 and "--positive 'book0/nope' is neither an image file nor a key" in err


def test_the_command_is_listed():
    assert "learn-tag" in entry.COMMANDS



def test_the_page_links_a_card_to_its_iiif_target_only_by_a_web_url_in_any_case(tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    targets = {"a": "HTTPS://iiif.example.org/canvas/1#xywh=1,2,3,4", "b": "javascript:alert(1)",
               "c": "http://iiif.example.org/canvas/3"}
    write_item(output, "book", {key: np.arange(8.0) + n for n, key in enumerate(targets)})
    (output / "book.iiif.json").write_text(json.dumps({"items": [
        {"id": f"https://tags.example.org/book.iiif.json#{key}/picture", "target": target}
        for key, target in targets.items()]}), encoding="utf-8")
    status, _, err = run(["learn-tag", str(output), "n", "--positive", "book/a", "--top", "3"], capsys)
    assert status == 0, err
    page = (output / "learned" / "n.html").read_text()
    assert f'href="{targets["a"]}"' in page and f'href="{targets["c"]}"' in page
    assert "javascript:" not in page

