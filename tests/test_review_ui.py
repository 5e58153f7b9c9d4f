"""The review markup of the inference report's item pages (the contract review.js reads, shared
with the training report's suspect-labels page): every card names its image's absolute path and
its item, each tag shown is a data-review-tag, the page lists every label once as JSON."""

import json
import os

from test_report import HOSTILE_LABELS, Parsed, image, item_page, tag_output, trained_config

from tagestimate.review import pages, report

HOSTILE_FOLDER = "in, \"q\" & <b>\nx"  # comma, quotes, '&', HTML and a line break in a folder name


def test_every_card_carries_the_review_contract_with_escaped_values(tmp_path, monkeypatch):
    labels = list(HOSTILE_LABELS)
    config = trained_config(labels=tuple(labels))
    output = tmp_path / "out"
    item = "<b onmouseover=alert(4)>h&'"
    folder = tmp_path / HOSTILE_FOLDER
    values = list(HOSTILE_LABELS.values())
    rows = [("k1", image(folder / "a,1.jpg"), values),                          # four tags, one below
            ("k2", image(folder / "b\"2.jpg"), [0.05, 0.95, 0.05, 0.05, 0.45]),  # two tags
            ("k3", image(folder / "c 3.jpg"), [0.05] * 5)]                      # none
    monkeypatch.chdir(tmp_path)  # the sidecar records absolute paths even of relative ones
    tag_output(output, item, [(key, os.path.relpath(path), probs) for key, path, probs in rows], config)
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(output), progress=False)
    text = item_page(output, item)
    page = Parsed(text)
    cards = [attrs for name, attrs in page.elements if name == "figure"]
    assert [card["class"] for card in cards] == ["card review-card"] * 3
    assert [card["data-review-image"] for card in cards] == [path for _, path, _ in rows]
    assert all(os.path.isabs(card["data-review-image"]) for card in cards)
    assert [card["data-review-item"] for card in cards] == [item] * 3
    # the tags shown, card by card (the parser sees them in page order)
    shown, suggested, at = [[] for _ in cards], [[] for _ in cards], -1
    for name, attrs in page.elements:
        at += name == "figure"
        if "data-review-tag" in attrs:
            shown[at].append(attrs["data-review-tag"])
        if "data-review-suggest" in attrs:
            suggested[at].append(attrs["data-review-suggest"])
    assert shown == [labels[:4], labels[1:2] + labels[4:], []]
    assert suggested == [labels[4:], [], []]  # x=1&y z at 0.35: borderline below its threshold
    # the labels, once, as JSON the browser reads without unescaping: "</script>" cannot end it
    assert page.having("script", id="review-labels") == [{"type": "application/json", "id": "review-labels"}]
    raw = text.split('<script type="application/json" id="review-labels">')[1].split("</script>")[0]
    assert json.loads(raw) == labels
    assert "<" not in raw and "&" not in raw


def test_script_json_cannot_end_its_element():
    assert str(pages.script_json(["</script><b>", "a&b"])) == '["\\u003c/script\\u003e\\u003cb\\u003e","a\\u0026b"]'


def test_review_js_holds_no_closing_tag():
    pages.static.cache_clear()
    assert "review-card" in pages.static("review.js")  # static() refuses a file holding "</"


def test_an_item_tagged_without_the_report_names_its_images_absolute(tmp_path, monkeypatch):
    """No sidecar: the image paths come from the input folder as given (relative here), and a card
    whose image is not known at all cannot be reviewed, so it is no review-card."""
    from tagestimate.tag.inference import Item

    monkeypatch.chdir(tmp_path)
    config = trained_config()
    image(tmp_path / "in" / "c" / "p1.jpg")
    tag_output(tmp_path / "out", "c", [("p1", "in/c/p1.jpg", [0.9] * 11), ("p2", "in/c/p2.jpg", [0.9] * 11)], config,
               sidecar=False)
    report.build_report("out", [Item("c", [("p1", os.path.join("in", "c", "p1.jpg"))])], progress=False)
    cards = [attrs for name, attrs in Parsed(item_page(tmp_path / "out", "c")).elements if name == "figure"]
    assert [card.get("data-review-image") for card in cards] == [str(tmp_path / "in" / "c" / "p1.jpg"), None]
    assert [card["class"] for card in cards] == ["card review-card", "card"]
