"""Every output format reads back what it writes (tagestimate/formats.py), and a new format is one
entry of FORMATS that the run writes, resume skips and the review report shows."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from modelfiles import trained_config, write_trained_weights
from tagestimate import formats
from tagestimate.records import Record, RunContext, tags_of
from tagestimate.review import report
from tagestimate.tag.inference import write_item

# Labels and keys a hostile folder or label map could bring: markup, quotes, ampersands, RTL text,
# the characters the iiif ids and the CSV quote ("/", "%", "#", ",", a line break).
LABELS = ["<script>alert(1)</script>", "say \"hi\" 'there'", "fish & chips", "\u05e9\u05dc\u05d5\u05dd",
          "a/b%2F#c", "comma, here"]
KEYS = ["<script>x</script>", "q\"uote's", "a&b", "\u05e9\u05dc\u05d5\u05dd/\u05e2\u05d5\u05dc\u05dd", "p 2",
        "line\nbreak\r,%41#", "untagged"]
CONFIG = trained_config(labels=LABELS)


def hostile_records():
    """One record per key; every (image, tag) pair above the threshold has its own confidence."""
    records = []
    for i, key in enumerate(KEYS):
        if key == "untagged":
            values = [0.1] * len(LABELS)
        else:  # image i keeps labels i.. (a different set per image), each at its own value
            values = [0.41 + 0.07 * i + 0.011 * j if j >= i % 3 else 0.2 for j in range(len(LABELS))]
        records.append(Record(key, f"/in/book/{key}.jpg", (100, 80), np.array(values, np.float32)))
    return records


def expected_tags(records, output):
    """{key: [(tag, confidence)]} a format must give back: what tags_of keeps, untagged images
    left out by a format whose file does not list them."""
    return {key: [(tag["tag"], tag["confidence"]) for tag in tags]
            for key, tags in tags_of(records, CONFIG).items() if tags or output.lists_untagged}


def test_the_hostile_records_pair_every_tag_with_its_own_confidence():
    # guards the round trips below: a swapped confidence, tag or image must change what they compare
    expected = expected_tags(hostile_records(), formats.FORMATS["json"])
    values = [value for tags in expected.values() for _, value in tags]
    assert len(set(values)) == len(values) > 2 * len(KEYS)
    assert len({tuple(tag for tag, _ in tags) for tags in expected.values()}) == 4  # 3 tag sets and none
    assert expected["untagged"] == []


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_every_format_parses_back_what_it_renders(name):
    output = formats.FORMATS[name]
    records = hostile_records()
    context = RunContext(id_base="https://example.org/tags", created="2026-12-05T00:00:00Z")
    text = output.render("book <&> \u05e9", records, CONFIG, context=context)
    assert output.parse(text) == expected_tags(records, output)
    assert output.parse(output.render("empty", [], CONFIG)) == {}


@pytest.mark.parametrize("name", sorted(formats.FORMATS))
def test_the_report_reads_each_format_from_its_file(tmp_path, name):
    records = hostile_records()
    path = write_item(str(tmp_path), "book", records, CONFIG, name)
    assert report.list_item_files(str(tmp_path)) == {"book": path}
    assert report.read_tags(path) == expected_tags(records, formats.FORMATS[name])


def test_file_names_map_back_to_their_item_and_format():
    assert [formats.FORMATS[name].file_name("a.b") for name in ("json", "csv", "iiif")] == \
        ["a.b.json", "a.b.csv", "a.b.iiif.json"]
    assert formats.match_file("a.iiif.json") == ("a", "iiif")  # the longest extension wins
    assert formats.match_file("a.json") == ("a", "json") and formats.match_file("a.b.csv") == ("a.b", "csv")
    assert [formats.match_file(name) for name in ("context.jsonld", ".json", "a.tsv", "a.JSON")] == [None] * 4
    assert [formats.FORMATS[name].lists_untagged for name in ("json", "csv", "iiif")] == [True, True, False]


def test_an_item_with_several_files_is_read_from_the_first_format(tmp_path):
    for name in ("iiif", "csv", "json"):
        write_item(str(tmp_path), "both", hostile_records(), CONFIG, name)
    write_item(str(tmp_path), "page", hostile_records(), CONFIG, "iiif")
    for name in ("iiif", "csv"):
        write_item(str(tmp_path), "rows", hostile_records(), CONFIG, name)
    (tmp_path / "errors.json").write_text("[]")
    assert report.list_item_files(str(tmp_path)) == {"both": str(tmp_path / "both.json"),
                                                     "page": str(tmp_path / "page.iiif.json"),
                                                     "rows": str(tmp_path / "rows.csv")}


def test_a_write_only_format_is_listed_by_no_reader(tmp_path, monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "txt", formats.OutputFormat("txt", lambda *args: "x\n", "plain"))
    write_item(str(tmp_path), "book", hostile_records(), CONFIG, "txt")
    assert os.listdir(tmp_path) == ["book.txt"]
    assert formats.match_file("book.txt") is None and report.list_item_files(str(tmp_path)) == {}


# ---------------------------------------------------------------- a fourth format, end to end

def render_tsv(item_name, records, config, context=None):
    """image<TAB>tag<TAB>confidence, one line per tag; an untagged image gets one line with no tag."""
    lines = []
    for key, tags in tags_of(records, config).items():
        lines += [f"{key}\t{tag['tag']}\t{tag['confidence']}" for tag in tags] or [f"{key}\t\t"]
    return "".join(line + "\n" for line in lines)


def parse_tsv(text):
    tags = {}
    for line in text.splitlines():
        key, tag, confidence = line.split("\t")
        tags.setdefault(key, [])
        if tag:
            tags[key].append((tag, float(confidence)))
    return tags


def image(path, color):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (48, 40), color).save(path)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.slow
def test_a_fourth_format_is_one_entry_written_resumed_and_shown_in_the_report(tmp_path, monkeypatch, capsys):
    import multiinference
    from tagestimate.labels import LABELS as NDL_LABELS

    monkeypatch.setitem(formats.FORMATS, "tsv", formats.OutputFormat("tsv", render_tsv, "tab-separated", parse_tsv))
    logits = np.full(len(NDL_LABELS), -4.0, np.float32)
    logits[NDL_LABELS.index("picture")], logits[NDL_LABELS.index("stamp")] = 2.0, 1.0  # 0.881, 0.731
    weights, _ = write_trained_weights(str(tmp_path / "w"), logits=logits, image_size=64)
    image(tmp_path / "in" / "book" / "p1.png", (200, 30, 30))
    argv = ["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"), "--weights", weights,
            "--backend", "tensorflow", "--quiet", "--format", "tsv"]
    assert multiinference.main(argv) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["book.emb.npz", "book.tsv", "html", "index.html"]
    assert read(tmp_path / "out" / "book.tsv") == "p1\tpicture\t0.881\np1\tstamp\t0.731\n"

    # Resume: book is done (its file is edited to tell a rewrite apart), only the new item is tagged.
    (tmp_path / "out" / "book.tsv").write_text("p1\tpicture\t0.555\np1\tstamp\t0.731\n", encoding="utf-8")
    image(tmp_path / "in" / "later" / "q1.png", (30, 200, 30))
    capsys.readouterr()
    assert multiinference.main(argv) == 0
    assert "1 image tagged in 1 item" in capsys.readouterr().out
    assert read(tmp_path / "out" / "book.tsv") == "p1\tpicture\t0.555\np1\tstamp\t0.731\n"
    assert read(tmp_path / "out" / "later.tsv") == "q1\tpicture\t0.881\nq1\tstamp\t0.731\n"

    # The report reads both items from their .tsv files: the edited confidence is the one shown.
    index = read(tmp_path / "out" / "index.html")
    assert re.search(r"<tr><th>items</th><td>2</td>", index) and "cannot read" not in index
    book = read(tmp_path / "out" / "html" / report.page_names("book", 1)[0])
    chip = r"<bdi>{}</bdi> {}</span>"  # a tag chip on a card: the label, then its confidence
    assert re.search(chip.format("picture", r"0\.555"), book) and re.search(chip.format("stamp", r"0\.731"), book)
    assert "p1" in book
    assert re.search(chip.format("picture", r"0\.881"), read(tmp_path / "out" / "html" / report.page_names("later", 1)[0]))
