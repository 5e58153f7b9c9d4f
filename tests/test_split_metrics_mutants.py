"""tagestimate.train.dataset where the mutation campaign found it untested: split.csv and folds.csv read
back against a data set that changed since (masks, fold numbers and the exact warnings, singular and
plural), assign_folds' refusals and warnings, and list_samples' messages. Distinct folders, item ids
and folds, so a swapped mask or fold shows."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from tagestimate.labels import default_labelmap
from tagestimate.train import dataset
from tagestimate.train.settings import TrainingError


def samples_of(root, names):
    """Samples for `names` ("folder/file.jpg") under root (files need not exist)."""
    paths = [os.path.join(root, name) for name in names]
    folders = [name.split("/")[0] for name in names]
    return dataset.Samples(paths, folders, [dataset.item_id(p) for p in paths],
                           np.zeros((len(names), 2), np.float32))


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tagestimate.train.dataset"]


@pytest.mark.parametrize("added, removed, lines", [
    (["stamp/9_1_0.jpg"], ["map/3_1_0.jpg"],
     ["1 image is not in {file} and is left out; start a new {what}", "1 image listed in {file} is no longer in {data}"]),
    (["stamp/9_1_0.jpg", "map/8_1_0.jpg"], ["map/3_1_0.jpg", "stamp/2_1_0.jpg"],
     ["2 images are not in {file} and are left out; start a new {what}",
      "2 images listed in {file} are no longer in {data}"]),
])
def test_split_and_folds_read_back_against_a_changed_data_set(tmp_path, caplog, added, removed, lines):
    data = str(tmp_path / "data")
    before = ["map/1_1_0.jpg", "map/3_1_0.jpg", "stamp/2_1_0.jpg", "stamp/4_1_0.jpg"]
    written = samples_of(data, before)
    dataset.write_split(str(tmp_path / "split.csv"), written, np.array([False, True, True, False]), data)
    dataset.write_folds(str(tmp_path / "folds.csv"), written, np.array([1, 3, 2, 3]), data)
    now = samples_of(data, [name for name in before if name not in removed] + added)
    names = [os.path.relpath(p, data) for p in now.paths]
    known = {name: n for n, name in enumerate(before)}
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    keep, val = dataset.read_split(str(tmp_path / "split.csv"), now, data)
    split_lines = messages(caplog)
    caplog.clear()
    keep_folds, folds = dataset.read_folds(str(tmp_path / "folds.csv"), now, data)
    assert keep.tolist() == keep_folds.tolist() == [name in known for name in names]
    assert val.tolist() == [name in known and [False, True, True, False][known[name]] for name in names]
    assert folds.tolist() == [[1, 3, 2, 3][known[name]] if name in known else 0 for name in names]
    split, folds_file = str(tmp_path / "split.csv"), str(tmp_path / "folds.csv")
    assert split_lines == [lines[0].format(file=split, what="run to train on them"),
                           lines[1].format(file=split, data=data)]
    assert messages(caplog) == [lines[0].format(file=folds_file, what="cross-validation to use them")]


def test_a_split_of_the_same_images_reads_back_silently(tmp_path, caplog):
    data = str(tmp_path)
    samples = samples_of(data, ["a/1_1_0.jpg", "b/2_1_0.jpg"])
    dataset.write_split(str(tmp_path / "split.csv"), samples, np.array([True, False]), data)
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    keep, val = dataset.read_split(str(tmp_path / "split.csv"), samples, data)
    assert keep.tolist() == [True, True] and val.tolist() == [True, False] and messages(caplog) == []


def test_folds_keep_each_item_whole_use_every_number_and_repeat_with_the_seed(caplog):
    names = [f"{folder}/{book}_{page}_0.jpg" for folder, books in (("map", range(100, 106)), ("stamp", range(200, 206)))
             for book in books for page in (1, 2)]
    samples = samples_of("/data", names)
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    folds = dataset.assign_folds(samples, 3, seed=7)
    assert sorted(set(folds.tolist())) == [1, 2, 3]
    by_book = {}
    for group, fold in zip(samples.groups, folds):
        by_book.setdefault(group, set()).add(int(fold))
    assert all(len(found) == 1 for found in by_book.values())  # a book never straddles two folds
    for folder in ("map", "stamp"):  # stratified: each folder in every fold
        assert set(folds[np.asarray(samples.folders) == folder].tolist()) == {1, 2, 3}
    assert dataset.assign_folds(samples, 3, seed=7).tolist() == folds.tolist()
    assert dataset.assign_folds(samples, 3, seed=8).tolist() != folds.tolist()
    assert messages(caplog) == []


def test_folds_refuse_too_few_items_and_say_what_they_cannot_do(caplog):
    with pytest.raises(TrainingError) as error:
        dataset.assign_folds(samples_of("/d", ["map/1_1_0.jpg", "map/1_2_0.jpg", "stamp/2_1_0.jpg"]), 3, seed=0)
    assert str(error.value) == ("--folds 3 needs at least 3 item ids (books), but the readable images belong to 2; "
                                "use fewer folds or add images of more items")
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    thin = samples_of("/d", ["map/1_1_0.jpg", "stamp/2_1_0.jpg", "graphic/3_1_0.jpg"])
    folds = dataset.assign_folds(thin, 3, seed=0)
    assert sorted(folds.tolist()) == [1, 2, 3]
    assert messages(caplog) == [
        "no folder has 3 images, so the 3 folds are grouped by item id but not stratified",
        "folder graphic has images in only 1 of the 3 folds (too few item ids)",
        "folder map has images in only 1 of the 3 folds (too few item ids)",
        "folder stamp has images in only 1 of the 3 folds (too few item ids)"]


def image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


def test_list_samples_lists_tag_folders_only_and_says_what_it_leaves_out(tmp_path, caplog):
    data = tmp_path / "data"
    image(str(data / "stamp" / "1054192_3_0.jpg"))
    image(str(data / "graphic_map" / "2000001_1_0.jpg"))
    image(str(data / "graphic_map" / "2000001_2_0.jpg"))
    image(str(data / "_rejected" / "stamp" / "9_1_0.jpg"))
    image(str(data / "unknown" / "7_1_0.jpg"))
    image(str(data / ".hidden" / "8_1_0.jpg"))
    image(str(data / "loose.jpg"))
    os.makedirs(data / "picture")  # a tag folder without images
    caplog.set_level(logging.INFO, logger="tagestimate.train.dataset")
    labels = default_labelmap()
    samples = dataset.list_samples(str(data), labels)
    assert [os.path.relpath(p, data) for p in samples.paths] == ["graphic_map/2000001_1_0.jpg",
                                                                   "graphic_map/2000001_2_0.jpg", "stamp/1054192_3_0.jpg"]
    assert samples.folders == ["graphic_map", "graphic_map", "stamp"]
    assert samples.groups == ["2000001", "2000001", "1054192"]
    assert samples.targets.tolist() == [list(labels.vector("graphic_map"))] * 2 + [list(labels.vector("stamp"))]
    assert messages(caplog) == [
        f"{data / '_rejected'} is not a tag folder (its name starts with '_'); its images are not trained",
        f"1 image directly in {data} belongs to no tag folder and is ignored (e.g. loose.jpg)",
        f"{data / 'unknown'} holds images the crawler found without any tag; they are not trained "
        "(move them into tag folders to use them)",
        f"folder {data / 'picture'} has no images; it is ignored"]


def test_data_that_is_not_a_folder_is_one_sentence(tmp_path):
    """(Unknown folders and folders without images: test_split_metrics.py.)"""
    with pytest.raises(TrainingError) as error:
        dataset.list_samples(str(tmp_path / "nope"), default_labelmap())
    assert str(error.value) == (f"--data {tmp_path / 'nope'} is not a folder; pass the folder that holds one "
                                "sub-folder of images per tag (e.g. datasetpdm/picture_indoor/...)")


def test_folds_stratify_when_the_biggest_folder_has_exactly_as_many_images_as_folds(caplog):
    samples = samples_of("/d", ["map/1_1_0.jpg", "map/2_1_0.jpg", "map/3_1_0.jpg",
                                "stamp/4_1_0.jpg", "stamp/5_1_0.jpg", "stamp/6_1_0.jpg"])
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    folds = dataset.assign_folds(samples, 3, seed=0)
    assert messages(caplog) == []  # stratified: not "grouped by item id but not stratified"
    assert sorted(folds[:3].tolist()) == sorted(folds[3:].tolist()) == [1, 2, 3]


@pytest.mark.parametrize("count", [1, 2])
def test_list_samples_words_loose_and_non_utf8_images_by_their_number(tmp_path, caplog, count):
    data = tmp_path / "data"
    image(str(data / "stamp" / "1054192_3_0.jpg"))
    for n in range(count):
        image(str(data / f"loose{n}.jpg"))
        with open(os.path.join(os.fsencode(data / "stamp"), b"\x83" + str(n).encode() + b".jpg"), "wb") as handle:
            handle.write((data / "stamp" / "1054192_3_0.jpg").read_bytes())
    caplog.set_level(logging.WARNING, logger="tagestimate.train.dataset")
    samples = dataset.list_samples(str(data), default_labelmap())
    assert [os.path.basename(p) for p in samples.paths] == ["1054192_3_0.jpg"]
    found = messages(caplog)
    if count == 1:
        assert found[0] == f"1 image directly in {data} belongs to no tag folder and is ignored (e.g. loose0.jpg)"
        assert found[-1] == ("1 image left out because its name is not UTF-8 (listed above); rename it to UTF-8 to "
                             f"train on it (e.g. convmv -r -f shift_jis -t utf8 --notest {data})")
    else:
        assert found[0] in (f"2 images directly in {data} belong to no tag folder and are ignored (e.g. loose{n}.jpg)"
                            for n in (0, 1))  # the first the folder lists
        assert found[-1] == ("2 images left out because their names are not UTF-8 (listed above); rename them to "
                             f"UTF-8 to train on them (e.g. convmv -r -f shift_jis -t utf8 --notest {data})")
    assert len(found) == 2 + count  # and one line per undecodable name


def test_one_skipped_image_and_one_image_of_one_item_are_worded_as_one():
    from test_split_metrics import make_report

    from tagestimate.train import metrics

    report = make_report()
    report["skipped_images"] = [{"path": "x.jpg", "reason": "empty file (0 bytes)"}]
    assert metrics.format_summary(report).splitlines()[6] == "skipped 1 unreadable image, listed in report.json"
    with pytest.raises(TrainingError) as error:
        dataset.split_samples(samples_of("/d", ["stamp/1054192_3_0.jpg"]), 0.2, seed=0)
    assert str(error.value).startswith("the 1 readable image belongs to one item id (1054192), but validation needs")
    with pytest.raises(TrainingError) as error:
        dataset.split_samples(samples_of("/d", ["stamp/1054192_3_0.jpg", "map/1054192_4_0.jpg"]), 0.2, seed=0)
    assert str(error.value).startswith("all 2 readable images belong to one item id (1054192), but validation needs")
