"""The tag -> labels table, user label maps and the labelmap.py CLI (no TensorFlow needed)."""

import json
import os

import pytest
from PIL import Image

import labelmap
from labelmap import LABELS, LabelMapError, default_labelmap, from_dict, load_labelmap

EXPECTED = {
    "graphic_illust": ("graphic",),
    "graphic_graph": ("graphic", "graphic_graph"),
    "graphic_map": ("graphic", "graphic_map"),
    "graphic_illustcolor": ("graphic", "graphic_illustcolor"),
    "picture_indoor": ("picture", "picture_indoor"),
    "picture_object": ("picture", "picture_object"),
    "picture_person": ("picture", "picture_person"),
    "picture_outdoor": ("picture", "picture_outdoor"),
    "picture_landmark": ("picture", "picture_outdoor", "picture_landmark"),
    "stamp": ("stamp",),
    "graphic": ("graphic",),
    "picture": ("picture",),
}


def test_outputs_are_in_ndl_order():
    assert LABELS == ("graphic", "picture", "graphic_graph", "graphic_map", "graphic_illustcolor",
                      "picture_indoor", "picture_object", "picture_person", "picture_outdoor",
                      "picture_landmark", "stamp")


@pytest.mark.parametrize("folder, labels", sorted(EXPECTED.items()))
def test_folders_expand_as_the_table_says(folder, labels):
    assert default_labelmap().labels_for(folder) == labels


def test_vector_marks_the_labels_in_output_order():
    vector = default_labelmap().vector("picture_landmark")
    assert [LABELS[i] for i, v in enumerate(vector) if v] == ["picture", "picture_outdoor", "picture_landmark"]


def test_paper_aliases():
    table = default_labelmap()
    assert table.labels_for("graphic_illustration") == EXPECTED["graphic_illust"]
    assert table.labels_for("graphic_illustrator") == EXPECTED["graphic_illustcolor"]


def test_unknown_folder_is_a_clear_error():
    with pytest.raises(LabelMapError, match="'postcards' is not in the label map.*--labelmap"):
        default_labelmap().labels_for("postcards")
    assert default_labelmap().resolve("postcards") is None


def test_parents_form_trains_ancestors():
    table = from_dict({"labels": ["animal", "dog", "puppy"], "parents": {"dog": "animal", "puppy": "dog"},
                       "tags": {"pets": ["dog"]}, "aliases": {"doggo": "dog"}})
    assert table.labels_for("puppy") == ("animal", "dog", "puppy")
    assert table.labels_for("doggo") == ("animal", "dog")
    assert table.labels_for("pets") == ("dog",)


def test_to_dict_round_trips():
    table = default_labelmap()
    again = from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.labels == table.labels
    for folder in [*EXPECTED, "graphic_illustration"]:
        assert again.labels_for(folder) == table.labels_for(folder)


@pytest.mark.parametrize("data, message", [
    ({"labels": []}, "non-empty list"),
    ({"labels": ["a", "a"]}, "twice"),
    ({"labels": ["a"], "parents": {"a": "zzz"}}, "'zzz', which is not in 'labels'"),
    ({"labels": ["a"], "parents": {"a": ["b"]}}, "not in 'labels'"),
    ({"labels": ["a", "b"], "parents": {"a": "b", "b": "a"}}, "cycle"),
    ({"labels": ["a"], "tags": {"x": []}}, "empty"),
    ({"labels": ["a"], "tags": {"x": ["a", "b"]}}, r"unknown label\(s\) \['b'\]"),
    ({"labels": ["a"], "tags": {"x": [{"a": 1}]}}, "unknown label"),
    ({"labels": ["a"], "aliases": {"y": "nowhere"}}, "not a folder"),
    ({"labels": ["a", "b"], "aliases": {"a": "b"}}, "also a folder"),
    (["a"], "JSON object"),
])
def test_bad_maps_are_clear_errors(data, message):
    with pytest.raises(LabelMapError, match=message):
        from_dict(data, source="my_map.json")


def test_load_labelmap_from_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": ["a", "b"], "parents": {"b": "a"}}), encoding="utf-8")
    assert load_labelmap(str(path)).labels_for("b") == ("a", "b")
    assert load_labelmap().labels == LABELS
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(LabelMapError, match="not valid JSON"):
        load_labelmap(str(path))
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(LabelMapError, match="UTF-8"):
        load_labelmap(str(path))
    with pytest.raises(LabelMapError, match="cannot read"):
        load_labelmap(str(tmp_path / "missing.json"))


def test_cli_prints_the_table(capsys):
    assert labelmap.main([]) == 0
    out = capsys.readouterr().out
    assert "picture_landmark" in out and "picture, picture_outdoor, picture_landmark" in out
    assert "graphic_illustration" in out


def test_cli_check_counts_images_and_names_unknown_folders(tmp_path, capsys):
    for folder, count in (("stamp", 2), ("graphic_illustration", 1), ("postcards", 1)):
        os.makedirs(tmp_path / folder)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"1_{i}_0.jpg")
    (tmp_path / "stamp" / "notes.txt").write_text("not counted")
    assert labelmap.main(["--check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "stamp" in captured.out and "2 images" in captured.out
    assert "graphic_illustration" in captured.out and "-> graphic" in captured.out
    assert "postcards" in captured.err and "UNKNOWN" in captured.out


def test_cli_bad_map_exits_with_the_reason(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": ["a"], "tags": {"x": []}}), encoding="utf-8")
    with pytest.raises(SystemExit, match="empty"):
        labelmap.main(["--labelmap", str(path)])
