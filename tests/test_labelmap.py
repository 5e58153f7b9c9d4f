"""The tag -> labels table, user label maps and the labelmap.py CLI (no TensorFlow needed)."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

import labelmap
import tagestimate.labels
from tagestimate.labels import LABELS, LabelMapError, default_labelmap, from_dict, load_labelmap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def test_the_default_table_is_built_from_the_package_s_definitions():
    # TAG_LABELS is computed once at import; building it again here checks the builders
    # themselves (a mutation tool cannot switch code that only runs at import)
    import tagestimate.labels as labels

    assert labels._expanded(from_dict(labels.default_map_dict())) == labels.TAG_LABELS
    assert {tag: labels.TAG_LABELS[tag] for tag in EXPECTED} == EXPECTED
    rebuilt, default = from_dict(labels.default_map_dict()), default_labelmap()
    assert rebuilt.labels == default.labels and dict(rebuilt.aliases) == dict(default.aliases)


def test_vector_marks_the_labels_in_output_order():
    vector = default_labelmap().vector("picture_landmark")
    assert [LABELS[i] for i, v in enumerate(vector) if v] == ["picture", "picture_outdoor", "picture_landmark"]
    assert vector == [0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]  # 0/1 targets, nothing else


def test_paper_aliases():
    table = default_labelmap()
    assert table.labels_for("graphic_illustration") == EXPECTED["graphic_illust"]
    assert table.labels_for("graphic_illustrator") == EXPECTED["graphic_illustcolor"]


def test_unknown_folder_is_a_clear_error():
    with pytest.raises(LabelMapError, match="'postcards' is not in the label map.*--labelmap") as error:
        default_labelmap().labels_for("postcards")
    assert "one of graphic, graphic_graph, graphic_illust, graphic_illustcolor, graphic_map, picture," in str(error.value)
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
    ({"labels": ["a", ""]}, "non-empty list of label names"),
    ({"labels": ["a", 5]}, "non-empty list of label names"),
    ({"labels": "a"}, "non-empty list of label names"),
    ({"labels": ["a"], "parents": ["a"]}, "'parents' must map a label to its parent label"),
    ({"labels": ["a"], "tags": ["a"]}, "'tags' must map a folder name to a list of labels"),
    ({"labels": ["a"], "tags": {"x": "a"}}, "folder 'x' has an empty or non-list label list"),
    ({"labels": ["a"], "aliases": ["a"]}, "'aliases' must map a name to a folder name"),
    ({"labels": ["a"], "aliases": {"y": 3}}, "alias 'y' points to 3, which is not a folder in the map"),
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
    with pytest.raises(LabelMapError, match=message) as error:
        from_dict(data, source="my_map.json")
    assert str(error.value).startswith("my_map.json: ")  # names the file


def test_every_label_is_a_folder_of_its_own():
    # so a map always has folders; the default source name is "label map"
    assert from_dict({"labels": ["a", "b"]}).tag_labels == {"a": ("a",), "b": ("b",)}
    with pytest.raises(LabelMapError, match="^label map: expected a JSON object"):
        from_dict([])


def test_load_labelmap_from_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": ["a", "b"], "parents": {"b": "a"}}), encoding="utf-8")
    assert load_labelmap(str(path)).labels_for("b") == ("a", "b")
    assert load_labelmap().labels == LABELS
    with pytest.raises(LabelMapError, match=f"^{re.escape(str(tmp_path))}.map.json: 'labels' lists a name twice"):
        path.write_text(json.dumps({"labels": ["a", "a"]}), encoding="utf-8")
        load_labelmap(str(path))  # errors in the map name its file
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(LabelMapError, match="not valid JSON"):
        load_labelmap(str(path))
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(LabelMapError, match="UTF-8"):
        load_labelmap(str(path))
    with pytest.raises(LabelMapError, match="cannot read"):
        load_labelmap(str(tmp_path / "missing.json"))


def test_load_labelmap_reads_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": ["挿絵", "写真"], "tags": {"挿絵": ["挿絵"]}}, ensure_ascii=False),
                    encoding="utf-8")
    assert load_labelmap(str(path)).labels_for("挿絵") == ("挿絵",)
    # an ASCII locale (a bare server, a C locale): the map must still be read as UTF-8
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONIOENCODING="utf-8")
    code = ("import tagestimate.labels as labels, sys; "
            "print(ascii(labels.load_labelmap(sys.argv[1]).labels_for('\\u633f\\u7d75')))")
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, encoding="utf-8")
    assert result.stdout == "('\\u633f\\u7d75',)\n", result.stderr


def test_the_script_re_exports_the_packages_names():
    # scripts and users that import from labelmap.py get the package's objects, not copies:
    # `except labelmap.LabelMapError` must catch what the package raises
    for name in ("LABELS", "NDL_LABELS", "TAG_LABELS", "ALIASES", "UNTAGGED_FOLDER", "LabelMap", "LabelMapError",
                 "default_labelmap", "from_dict", "load_labelmap"):
        assert getattr(labelmap, name) is getattr(tagestimate.labels, name), name


def test_cli_prints_the_table(capsys):
    assert labelmap.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "outputs: " + ", ".join(LABELS)
    assert "picture_landmark      -> picture, picture_outdoor, picture_landmark   (landmark / ランドマーク写真)" in out
    assert "graphic_map           -> graphic, graphic_map   (map / 地図)" in out
    assert "graphic_illustration  =  graphic_illust" in out  # aliases line up with the folders
    assert len(out) == 1 + 12 + 2


def test_cli_help_names_every_flag():
    text = " ".join(labelmap.build_parser().format_help().split())
    assert labelmap.build_parser().format_help().split("\n\n")[1] == (
        "Print the tag -> labels table, or check a data set folder against it.")
    assert "--labelmap JSON a JSON label map to use instead of the built-in NDL table" in text
    assert "--check DIR list DIR's folders with their labels and image counts, and name unknown folders" in text


def test_cli_check_counts_images_and_names_unknown_folders(tmp_path, capsys):
    for folder, count in (("stamp", 2), ("graphic_illustration", 1), ("postcards", 1)):
        os.makedirs(tmp_path / folder)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(tmp_path / folder / f"1_{i}_0.jpg")
    (tmp_path / "stamp" / "notes.txt").write_text("not counted")
    for folder in (".cache", "unknown", "picture_outdoor", "zines"):
        os.makedirs(tmp_path / folder)
    (tmp_path / "README.txt").write_text("a file, not a folder")
    assert labelmap.main(["--check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "graphic_illustration       1 image   -> graphic",
        "picture_outdoor            0 images  -> picture, picture_outdoor",
        "postcards                  1 image   -> UNKNOWN (not in the label map)",
        "stamp                      2 images  -> stamp",
        "unknown                    0 images  -> not trained (records without tags from the crawler; "
        "move them into tag folders)",
        "zines                      0 images  -> UNKNOWN (not in the label map)",
        "6 folders, 4 images",
    ]
    assert captured.err == "unknown folders: postcards, zines\n"


def test_cli_check_of_a_known_data_set_succeeds_quietly(tmp_path, capsys):
    for folder in ("stamp", "map"):
        os.makedirs(tmp_path / folder)
    Image.new("RGB", (8, 8)).save(tmp_path / "stamp" / "1_1_0.jpg")
    labelmap_file = tmp_path.parent / f"{tmp_path.name}_map.json"
    labelmap_file.write_text(json.dumps({"labels": ["stamp"], "tags": {"stamp": ["stamp"], "map": ["stamp"]}}))
    assert labelmap.main(["--check", str(tmp_path), "--labelmap", str(labelmap_file)]) == 0
    captured = capsys.readouterr()
    # short names: the name column is still 6 wide, like the "folder" it stands under
    assert captured.out.splitlines() == ["map          0 images  -> stamp", "stamp        1 image   -> stamp",
                                         "2 folders, 1 image"]
    assert captured.err == ""


def test_cli_check_leaves_out_the_rejected_images_folder(tmp_path, capsys):
    """newdataclawer.py --from-corrections moves rejected images to _rejected/{tag}/: not a tag, not trained."""
    os.makedirs(tmp_path / "_rejected" / "stamp")
    os.makedirs(tmp_path / "stamp")
    Image.new("RGB", (8, 8)).save(tmp_path / "_rejected" / "stamp" / "1_1_0.jpg")
    assert labelmap.main(["--check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["stamp        0 images  -> stamp", "1 folder, 0 images"]


def test_cli_check_of_a_missing_folder_is_one_sentence(tmp_path, capsys):
    # exit 1 and the sentence on stderr, as sys.exit("error: ...") gave before the shared wrapper (cli.run)
    assert labelmap.main(["--check", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'nowhere'} is not a folder; pass the data set folder, "
                                       "e.g. --check datasetpdm\n")


def test_cli_bad_map_exits_with_the_reason(tmp_path, capsys):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"labels": ["a"], "tags": {"x": []}}), encoding="utf-8")
    assert labelmap.main(["--labelmap", str(path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "empty" in error and error.count("\n") == 1


def test_cli_counts_read_singular_and_plural(tmp_path, capsys):
    """"1 image", "1 folder", "unknown folder:" for one; the plural for 0 and 2."""
    os.makedirs(tmp_path / "zines")
    Image.new("RGB", (8, 8)).save(tmp_path / "zines" / "1_1_0.jpg")
    assert labelmap.main(["--check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["zines        1 image   -> UNKNOWN (not in the label map)",
                                         "1 folder, 1 image"]
    assert captured.err == "unknown folder: zines\n"
    os.makedirs(tmp_path / "stamps")
    Image.new("RGB", (8, 8)).save(tmp_path / "stamps" / "1_2_0.jpg")
    assert labelmap.main(["--check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "2 folders, 2 images" and captured.err == "unknown folders: stamps, zines\n"


def test_every_tag_of_the_default_map_has_a_distinct_name_in_each_language():
    from tagestimate import labels

    table = labels.default_labelmap()
    for language in labels.LANGUAGES:
        names = [labels.tag_name(tag, language) for tag in table.tag_labels]
        assert all(name not in table.tag_labels for name in names), language  # a name, not the machine tag
        assert len(set(names)) == len(names), language
    assert labels.tag_names("graphic_map") == {"en": "map", "ja": "地図"}
    assert labels.tag_names("ukiyoe") == {"en": "ukiyoe", "ja": "ukiyoe"}  # unknown: its machine name


def test_a_label_maps_names_override_and_extend_and_reach_to_dict():
    from tagestimate import labels

    table = from_dict({"labels": ["ukiyoe", "stamp"], "names": {"ukiyoe": {"en": "woodblock print", "ja": "浮世絵"},
                                                                "stamp": {"ja": "蔵書印"}}})
    assert [table.name("ukiyoe", "ja"), table.name("stamp", "ja"), table.name("stamp", "en")] == [
        "浮世絵", "蔵書印", "seal stamp"]
    assert from_dict(table.to_dict()).names == table.names  # model.json's labelmap keeps them
    assert "names" not in labels.default_labelmap().to_dict()


@pytest.mark.parametrize("names, needle", [
    ([], "must map a tag"), ({"postcard": {"en": "x"}}, "'postcard', which is not"),
    ({"stamp": {"fr": "timbre"}}, "must map en or ja"), ({"stamp": {"en": " "}}, "non-empty"),
])
def test_bad_names_in_a_label_map(names, needle):
    with pytest.raises(LabelMapError, match=needle):
        from_dict({"labels": ["stamp"], "names": names})


# ---------------------------------------------------------------- what the mutation campaign found untested

def test_the_command_s_usage_and_interrupt_lines_name_it(capsys, monkeypatch):
    from tagestimate.commands import labels as command

    assert command.build_parser("tagestimate labels").format_usage().startswith("usage: tagestimate labels [-h]")
    with pytest.raises(SystemExit) as stop:
        command.main(["--bogus"], prog="tagestimate labels")
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("usage: tagestimate labels [-h]")

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "load_labelmap", interrupted)
    assert command.main([]) == 130
    assert capsys.readouterr().err == "interrupted; labelmap.py only reads, so nothing changed\n"


@pytest.mark.parametrize("names, message", [
    ([], """'names' must map a tag to its names, e.g. {"my_tag": {"en": "my tag", "ja": "私のタグ"}}"""),
    ({"stamp": "seal stamp"}, "the names of 'stamp' must map en or ja to a non-empty name"),
    ({"stamp": {}}, "the names of 'stamp' must map en or ja to a non-empty name"),
    ({"stamp": {"en": " "}}, "the names of 'stamp' must map en or ja to a non-empty name"),
])
def test_a_bad_names_entry_is_one_sentence_naming_the_file(names, message):
    with pytest.raises(LabelMapError) as error:
        from_dict({"labels": ["stamp"], "names": names}, source="my_map.json")
    assert str(error.value) == f"my_map.json: {message}"


def test_names_may_name_a_folder_that_is_not_a_label_and_tag_names_uses_them():
    from tagestimate import labels

    table = from_dict({"labels": ["print", "stamp"], "tags": {"ukiyoe": ["print"]},
                       "names": {"ukiyoe": {"en": "woodblock print", "ja": "浮世絵"}}})
    assert table.name("ukiyoe", "en") == "woodblock print"
    assert labels.tag_names("ukiyoe", table.names) == {"en": "woodblock print", "ja": "浮世絵"}
    assert labels.tag_names("ukiyoe") == {"en": "ukiyoe", "ja": "ukiyoe"}


def test_config_names_are_a_copy_of_the_model_s_label_map_names():
    from types import SimpleNamespace

    from tagestimate import labels

    names = {"ukiyoe": {"en": "woodblock print", "ja": "浮世絵"}, "stamp": {"ja": "蔵書印"}}
    found = labels.config_names(SimpleNamespace(labelmap={"labels": ["ukiyoe", "stamp"], "names": names}))
    assert found == names
    found["ukiyoe"]["en"] = "changed"
    assert names["ukiyoe"]["en"] == "woodblock print"  # a copy: the model's config is not changed through it
    assert labels.config_names(SimpleNamespace(labelmap={"labels": ["stamp"]})) == {}
    assert labels.config_names(SimpleNamespace(labelmap=None)) == {}
    assert labels.config_names(object()) == {}  # a config without a label map (NDL's weight file)
