"""The report's collection-wide pages (review/explore.py, explore_pages.py, neighbours.py, layout.py):
neighbours against brute force, similar links that pair the right images, tag pages in order of
confidence, the map's data, the cache, and items without embeddings. No model: outputs, sidecars
and {item}.emb.npz are written directly."""

import html
import json
import os
import re
import threading

import numpy as np
import pytest

from test_report import HOSTILE_LABELS, image, probabilities, read, tag_output, trained_config
from tagestimate import embeddings
from tagestimate.review import explore, layout, neighbours, report
from tagestimate.review.thumbs import safe_name


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# ---------------------------------------------------------------- neighbours

@pytest.mark.parametrize("count,block_floats,centre", [(300, 1 << 24, False), (300, 700, False), (300, 700, True),
                                                      (7, 3, True), (2, 1 << 24, False)])
def test_neighbours_equal_brute_force(count, block_floats, centre):
    vectors = unit(np.random.default_rng(count).normal(size=(count, 16)) + 3).astype(np.float16)
    indices, scores = neighbours.nearest(vectors, block_floats=block_floats, centre=centre)
    expected, expected_scores = neighbours.brute_force(vectors, centre=centre)
    width = min(5, count - 1)
    assert np.array_equal(indices[:, :width], expected)
    assert np.allclose(scores[:, :width], expected_scores, atol=1e-5)
    assert (indices[:, width:] == -1).all()
    assert not (indices[:, :width] == np.arange(count)[:, None]).any()  # never itself
    assert (np.diff(scores[:, :width], axis=1) <= 0).all()  # most similar first


def test_equal_scores_go_to_the_lower_index_whatever_the_block():
    vectors = unit([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1], [1, 0], [1, 0], [1, 0]])
    for block in (2, 5, 1 << 20):
        indices, _ = neighbours.nearest(vectors, k=3, block_floats=block)
        assert indices[0].tolist() == [1, 2, 3] and indices[7].tolist() == [0, 1, 2]


def test_above_the_limit_neighbours_come_from_a_fixed_sample():
    vectors = unit(np.random.default_rng(1).normal(size=(400, 8)))
    indices, scores = neighbours.nearest(vectors, limit=100)
    pool = neighbours.candidates(400, 100)
    assert len(pool) == 100 and np.isin(indices, pool).all()
    assert np.array_equal(pool, neighbours.candidates(400, 100))  # the same sample on every build
    # each row's neighbours are the brute-force best among the sample (itself excluded)
    sub = vectors[pool]
    for row in (0, int(pool[3]), 399):
        allowed = sub @ vectors[row]
        allowed[pool == row] = -np.inf
        assert indices[row].tolist() == pool[np.argsort(-allowed, kind="stable")[:5]].tolist()


def test_layout_is_in_the_unit_square_and_deterministic():
    vectors = unit(np.random.default_rng(2).normal(size=(500, 32))).astype(np.float16)
    points = layout.pca_2d(vectors)
    assert points.shape == (500, 2) and points.min() >= 0 and points.max() <= 1 + 1e-6
    assert np.isclose(points.max(axis=0) - points.min(axis=0), 1, atol=1e-5).any()  # fills one axis
    assert np.allclose(points, layout.pca_2d(vectors[::-1])[::-1], atol=1e-5)  # order does not matter
    # two clusters far apart stay apart on the map
    split = unit(np.r_[np.tile([1, 0, 0], (20, 1)), np.tile([0, 1, 0], (20, 1))] +
                 np.random.default_rng(3).normal(scale=0.01, size=(40, 3)))
    placed = layout.pca_2d(split)
    gap = np.linalg.norm(placed[:20].mean(0) - placed[20:].mean(0))
    assert gap > 10 * max(placed[:20].std(0).max(), placed[20:].std(0).max())


# ---------------------------------------------------------------- a report with embeddings

def embed(output, item, vectors_by_key, sha="a" * 64, layer="dense"):
    data = embeddings.to_bytes(embeddings.make(vectors_by_key, layer=layer, weights_sha256=sha))
    (output / embeddings.file_name(item)).write_bytes(data)


@pytest.fixture
def collection(tmp_path):
    """Items a (k0..k3) and b (k0..k2): distinct vectors whose nearest neighbours are known, and
    distinct graphic_map confidences across both items. Returns (output, vectors, confidences)."""
    config = trained_config()
    output = tmp_path / "out"
    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=(4, 64)))
    # each image near one of 4 directions: a/k0 with b/k0, a/k1 with b/k1, a/k2 with b/k2; a/k3 alone
    vectors = {("a", "k0"): base[0], ("a", "k1"): base[1], ("a", "k2"): base[2], ("a", "k3"): base[3],
               ("b", "k0"): base[0] + 0.1 * base[1], ("b", "k1"): base[1] + 0.1 * base[2],
               ("b", "k2"): base[2] + 0.1 * base[3]}
    confidences = {("a", "k0"): 0.61, ("a", "k1"): 0.93, ("a", "k2"): 0.47, ("a", "k3"): 0.05,
                   ("b", "k0"): 0.88, ("b", "k1"): 0.72, ("b", "k2"): 0.55}
    for item, keys in (("a", ["k0", "k1", "k2", "k3"]), ("b", ["k0", "k1", "k2"])):
        rows = [(key, image(tmp_path / "in" / item / f"{key}.jpg", (30 * n, 60, 200 - 30 * n)),
                 probabilities(graphic_map=confidences[item, key], picture=0.5 if key == "k2" else 0.05))
                for n, key in enumerate(keys)]
        tag_output(output, item, rows, config)
        embed(output, item, {key: vectors[item, key] for key in keys})
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    return output, vectors, confidences


def similar_links(output, item):
    """{card key: [(page, anchor), ...]} of an item page's similar links, in page order."""
    page = read(output / "html" / report.page_names(item, 1)[0])
    found = {}
    for card in re.findall(r'<figure class="card[^"]*".*?</figure>', page, re.S):
        key = html.unescape(re.search(r'<div class="key"><bdi>(.*?)</bdi>', card).group(1))
        found[key] = re.findall(r'<a class="sim" href="([^"#]*)#([^"]*)"', card)
    return found


def expected_links(vectors, item, key):
    """Brute force on the stored (float16) vectors, centred on the collection's mean as the report does."""
    names = list(vectors)
    matrix = embeddings.make({f"{n}": vectors[name] for n, name in enumerate(names)}).vectors.astype(np.float32)
    matrix = unit(matrix - matrix.mean(axis=0))
    scores = matrix @ matrix[names.index((item, key))]
    scores[names.index((item, key))] = -np.inf
    return [(report.page_names(names[n][0], 1)[0], explore.anchor(names[n][1]))
            for n in np.argsort(-scores, kind="stable")[:5]]


def test_similar_links_open_each_cards_nearest_neighbours(collection):
    output, vectors, _ = collection
    report.build_report(str(output), progress=False)
    links = {**{("a", k): v for k, v in similar_links(output, "a").items()},
             **{("b", k): v for k, v in similar_links(output, "b").items()}}
    assert set(links) == set(vectors)
    for (item, key), found in links.items():
        assert found == expected_links(vectors, item, key), (item, key)
    assert links["a", "k0"][0] == (report.page_names("b", 1)[0], explore.anchor("k0"))
    # each link's anchor is a card on the page it names
    for found in links.values():
        for page, target in found:
            assert f'id="{target}"' in read(output / "html" / page)


def test_swapped_vectors_give_swapped_neighbours(collection):
    """Pairing: a/k1 and a/k2 exchange vectors, so their similar links exchange too (apart from
    naming each other): a report that tied links to the wrong card would not change."""
    output, vectors, _ = collection
    report.build_report(str(output), progress=False)
    before = similar_links(output, "a")
    swapped = dict(vectors)
    swapped["a", "k1"], swapped["a", "k2"] = vectors["a", "k2"], vectors["a", "k1"]
    embed(output, "a", {key: swapped["a", key] for key in ("k0", "k1", "k2", "k3")})
    report.build_report(str(output), progress=False)
    after = similar_links(output, "a")
    assert after["k1"] != before["k1"] and after["k1"][0] == before["k2"][0]
    assert after["k1"][0] == (report.page_names("b", 1)[0], explore.anchor("k2"))
    assert after["k2"][0] == (report.page_names("b", 1)[0], explore.anchor("k1"))
    assert after["k1"] == expected_links(swapped, "a", "k1")


def test_tag_page_lists_every_image_most_confident_first_and_links_to_its_card(collection, monkeypatch):
    output, vectors, confidences = collection
    monkeypatch.setattr(report, "PAGE_SIZE", 4)  # 6 images with graphic_map: two pages
    index = read(report.build_report(str(output), progress=False))
    names = explore.tag_page_names("graphic_map", 6, 4)
    assert len(names) == 2 and f'href="html/{names[0]}"' in index and ">all 6</a>" in index
    cards = []
    for name in names:
        page = read(output / "html" / name)
        for card in re.findall(r'<figure class="card tagcard".*?</figure>', page, re.S):
            href, target = re.search(r'<a href="([^"#]*)#([^"]*)"', card).groups()
            key = re.search(r'<div class="key"><bdi>(.*?)</bdi>', card).group(1)
            item = re.search(r'<div class="item"><bdi>(.*?)</bdi>', card).group(1)
            value = float(re.search(r"graphic_map</bdi> ([0-9.]+)", card).group(1))
            assert href == report.page_names(item, 1)[0] and target == explore.anchor(key)
            cards.append((item, key, value))
    tagged = sorted((pair for pair in confidences if confidences[pair] > 0.4), key=lambda pair: -confidences[pair])
    assert [(item, key) for item, key, _ in cards] == tagged
    assert [value for _, _, value in cards] == [confidences[pair] for pair in tagged]
    assert "page 1 of 2" in read(output / "html" / names[0])
    # picture (a/k2 and b/k2 at 0.5): a page of its own
    assert len(re.findall(r'class="card tagcard"', read(output / "html" / explore.tag_page_names("picture", 2, 4)[0]))) == 2


def test_similar_links_find_cards_on_later_pages(collection, monkeypatch):
    """Item a split into pages of 2: a neighbour that is a's 3rd image links to a's second page."""
    output, vectors, _ = collection
    monkeypatch.setattr(report, "PAGE_SIZE", 2)
    report.build_report(str(output), progress=False)
    links = [link for found in similar_links(output, "b").values() for link in found]
    assert (report.page_names("a", 3)[1], explore.anchor("k2")) in links
    assert f'id="{explore.anchor("k2")}"' in read(output / "html" / report.page_names("a", 3)[1])


def map_data(output):
    page = read(output / "html" / "map.html")
    return page, json.loads(re.search(r'<script type="application/json" id="mapdata">(.*?)</script>', page, re.S).group(1))


def test_map_has_one_point_per_image_coloured_by_its_top_tag(collection):
    output, vectors, confidences = collection
    index = read(report.build_report(str(output), progress=False))
    assert 'href="html/map.html"' in index
    page, data = map_data(output)
    assert len(data["x"]) == len(data["y"]) == len(vectors) == 7
    assert 'data-total="7" data-shown="7"' in page and '<b id="points">7</b> images' in page
    points = {(data["items"][i][0], key): n for n, (i, key) in enumerate(zip(data["i"], data["k"]))}
    assert set(points) == set(vectors)
    labels = data["labels"]
    # a/k2: picture 0.5 beats graphic_map 0.47; b/k2: graphic_map 0.55 beats picture 0.5; a/k3: no tag
    assert labels[data["t"][points["a", "k2"]]] == "picture"
    assert labels[data["t"][points["b", "k2"]]] == "graphic_map"
    assert data["t"][points["a", "k3"]] == -1
    assert data["items"][data["i"][points["b", "k1"]]][1] == safe_name("b")
    assert data["s"][points["b", "k1"]] == safe_name("k1") and all(data["h"])
    # the same layout as layout.pca_2d of the vectors in the collection's order
    order = sorted(points, key=lambda pair: points[pair])
    expected = layout.pca_2d(embeddings.make({f"{n}": vectors[pair] for n, pair in enumerate(order)}).vectors)
    assert np.allclose(np.c_[data["x"], data["y"]], expected, atol=1e-4)


def test_hostile_labels_and_keys_are_safe_in_tag_pages_and_map(tmp_path):
    labels = list(HOSTILE_LABELS)
    config = trained_config(labels=tuple(labels))
    output = tmp_path / "out"
    key = "k'\"</script ><img src=x onerror=alert(2)>&"
    tag_output(output, "h", [(key, image(tmp_path / "in" / "h" / "k.jpg"), list(HOSTILE_LABELS.values())),
                             ("other", image(tmp_path / "in" / "h" / "o.jpg"), [0.05] * 5)], config)
    embed(output, "h", {key: [1.0, 0.0], "other": [0.0, 1.0]})
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(output), progress=False)
    for root, folders, files in os.walk(output / "html"):
        for name in folders + files:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
    for label in labels[:4]:
        page = read(output / "html" / explore.tag_page_names(label, 1, 10)[0])
        assert f"<bdi>{html.escape(label, quote=True).replace('&#x27;', '&#39;').replace('&quot;', '&#34;')}</bdi>" in page
        assert "<script>alert" not in page and "<img src=x" not in page
    page, data = map_data(output)
    assert len(re.findall(r"</script[\s/>]", page, re.I)) == 2  # the data's and map.js's: none ended early
    assert data["labels"] == labels and key in data["k"]
    assert data["labels"][data["t"][data["k"].index(key)]] == "<script>alert(1)</script>"  # its top tag, 0.91


# ---------------------------------------------------------------- without embeddings, cache, versions

def test_without_embeddings_the_report_works_and_says_why_once(collection):
    output, _, _ = collection
    for name in os.listdir(output):
        if name.endswith(".emb.npz"):
            os.remove(output / name)
    index = read(report.build_report(str(output), progress=False))
    assert index.count("No similar links and no map") == 1
    assert "--no-embeddings" in index
    assert not (output / "html" / "map.html").exists() and "map.html" not in index
    for item in ("a", "b"):
        page = read(output / "html" / report.page_names(item, 1)[0])
        assert 'class="similar"' not in page and "<details" not in page
        assert 'id="c-' in page  # cards keep their anchors
    assert os.path.exists(output / "html" / explore.tag_page_names("graphic_map", 6, 2000)[0])  # no embeddings needed


def test_items_without_embeddings_or_of_another_model_are_left_out_with_a_note(collection):
    output, vectors, _ = collection
    embed(output, "b", {key: vectors["b", key] for key in ("k0", "k1", "k2")}, sha="b" * 64)
    index = read(report.build_report(str(output), progress=False))
    assert "1 items have embeddings of another model or layer than the rest (b)" in index
    _, data = map_data(output)
    assert {data["items"][i][0] for i in data["i"]} == {"a"}
    assert similar_links(output, "b") == {"k0": [], "k1": [], "k2": []}
    os.remove(output / embeddings.file_name("b"))
    index = read(report.build_report(str(output), progress=False))
    assert "1 of 2 items have no embeddings" in index
    (output / embeddings.file_name("b")).write_bytes(b"not a zip")
    index = read(report.build_report(str(output), progress=False))
    assert "damaged or not an embeddings file" in index and html.escape(embeddings.file_name("b")) in index


def test_a_rebuild_without_changes_reuses_the_cached_neighbours_and_layout(collection, monkeypatch):
    output, vectors, _ = collection
    report.build_report(str(output), progress=False)
    first = similar_links(output, "a")
    calls = []
    real = neighbours.nearest
    monkeypatch.setattr(neighbours, "nearest", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    report.build_report(str(output), progress=False)
    assert calls == [] and similar_links(output, "a") == first
    embed(output, "b", {key: -vectors["b", key] for key in ("k0", "k1", "k2")})  # changed vectors: computed again
    report.build_report(str(output), progress=False)
    assert calls == [1] and similar_links(output, "a") != first
    (output / "html" / explore.CACHE).write_bytes(b"damaged")
    report.build_report(str(output), progress=False)
    assert calls == [1, 1]


def test_the_map_layout_runs_beside_the_item_pages_and_its_error_reaches_the_caller(collection, monkeypatch):
    """The layout leaves the GIL (numpy), so it runs in a thread while the item pages render: here it
    waits for the first item page, which a layout run before the pages would never see."""
    output, _, _ = collection
    first_page, seen = threading.Event(), []
    real_write, real_layout = report.write_atomic, layout.pca_2d

    def write(path, data, **kwargs):
        if os.path.basename(path).startswith(("a-", "b-")):
            first_page.set()
        return real_write(path, data, **kwargs)

    def lay_out(vectors):
        seen.append((threading.current_thread() is threading.main_thread(), first_page.wait(timeout=10)))
        return real_layout(vectors)

    monkeypatch.setattr(report, "write_atomic", write)
    monkeypatch.setattr(layout, "pca_2d", lay_out)
    report.build_report(str(output), progress=False)
    assert seen == [(False, True)]
    page, data = map_data(output)
    assert len(data["x"]) == 7  # the map was drawn with the thread's layout
    os.remove(output / "html" / explore.CACHE)
    monkeypatch.setattr(layout, "pca_2d", lambda vectors: (_ for _ in ()).throw(MemoryError("no room for the map")))
    with pytest.raises(MemoryError, match="no room for the map"):
        report.build_report(str(output), progress=False)


def test_above_its_limit_the_map_shows_a_sample_and_says_so(collection, monkeypatch):
    output, vectors, _ = collection
    monkeypatch.setattr(layout, "MAP_LIMIT", 4)
    monkeypatch.setattr(neighbours, "EXACT_LIMIT", 5)
    report.build_report(str(output), progress=False)
    page, data = map_data(output)
    assert len(data["x"]) == 4 and 'data-total="7" data-shown="4"' in page
    assert "A random sample of <b id=\"points\">4</b> of the 7 images" in page
    pool = set(neighbours.candidates(7, 5).tolist())
    order = list(vectors)  # the collection's order: items, then keys in natural order
    links = {**{("a", key): found for key, found in similar_links(output, "a").items()},
             **{("b", key): found for key, found in similar_links(output, "b").items()}}
    for pair, found in links.items():
        targets = {order.index((page[:1], anchor)) for page, anchor in
                   ((p, next(key for key in ("k0", "k1", "k2", "k3") if explore.anchor(key) == a)) for p, a in found)}
        assert targets <= pool and order.index(pair) not in targets
        assert len(found) == 4  # at most one fewer than the candidates, whether or not it is one
