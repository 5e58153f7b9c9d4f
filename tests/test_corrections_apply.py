"""newdataclawer.py --from-corrections: a reviewer's corrections.csv applied to a data set, its bad
input, idempotence, Ctrl-C, and the crawl that must leave reviewed images as decided."""

import csv
import hashlib
import io
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import newdataclawer
from tagestimate import corrections, files, manifest
from tagestimate.crawl import apply_corrections
from tagestimate.labels import default_labelmap
from tagestimate.train.dataset import list_samples
from tests.ndl_emulator import NdlEmulator
from tests.test_crawler import make_records, run_cli

T1, T2, T3 = "2026-12-05T03:04:05Z", "2026-12-05T03:05:00Z", "2026-12-05T03:06:00Z"


def jpeg(colour, size=(40, 32), fmt="JPEG"):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


@pytest.fixture
def data(tmp_path):
    """A crawled data set (stamp: A, B; graphic_map: C) and images outside it to review."""
    out = tmp_path / "datasetpdm"
    put(out / "stamp" / "1001_1_0.jpg", jpeg((200, 0, 0)))
    put(out / "stamp" / "1002_1_0.jpg", jpeg((0, 200, 0)))
    put(out / "graphic_map" / "1003_1_0.jpg", jpeg((0, 0, 200)))
    rows = [{"id": image_id, "pid": image_id[:4], "page": "1", "folder": folder, "confidence": confidence,
             "source_url": f"https://iiif.example/{image_id}", "sha256": "", "bytes": "", "time": T1,
             "source": "crawled"}
            for image_id, folder, confidence in (("1001_1_0", "stamp", "0.91"), ("1002_1_0", "stamp", "0.62"),
                                                 ("1003_1_0", "graphic_map", "0.83"))]
    with open(out / "manifest.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=manifest.MANIFEST_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    put(tmp_path / "input" / "2000" / "2000_3_0.jpg", jpeg((120, 120, 0)))
    with open(tmp_path / "input" / "manifest.csv", "w", encoding="utf-8", newline="") as handle:  # --pid 2000
        writer = csv.DictWriter(handle, fieldnames=manifest.EXTENDED_FIELDS, restval="")
        writer.writeheader()
        writer.writerow({"id": "2000_3_0", "pid": "2000", "page": "3", "x": "1.5", "folder": "2000", "title": "本",
                         "source_url": "https://iiif.example/2000_3_0", "tags": '{"picture": 0.8}', "source": "crawled"})
    put(tmp_path / "input" / "book" / "0001.png", jpeg((0, 120, 120), fmt="PNG"))
    return tmp_path


def write_corrections(folder, rows, name="corrections.csv"):
    return corrections.write(str(folder / name), [corrections.Correction(*row) for row in rows])


def apply(tmp_path, path, *more):
    return newdataclawer.main(["--from-corrections", str(path), "--out", str(tmp_path / "datasetpdm"), *more])


def read_rows(out):
    with open(os.path.join(out, "manifest.csv"), encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == manifest.MANIFEST_FIELDS
        return {(row["folder"], row["id"], row["decision"] == "reject"): row for row in reader}


def tree(out):
    """{relative path: bytes} of every file under out."""
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, out)] = handle.read()
    return found


REVIEW = [
    ("datasetpdm/stamp/1001_1_0.jpg", "", "stamp", "confirm", "ayumi", T1),
    ("datasetpdm/stamp/1002_1_0.jpg", "", "stamp", "reject", "ayumi", T2),
    ("datasetpdm/stamp/1001_1_0.jpg", "", "graphic_map", "add", "ken", T3),
    ("input/book/0001.png", "book", "picture_indoor", "add", "ken", T2),
    ("input/2000/2000_3_0.jpg", "2000", "picture", "reject", "ken", T1),
]


def test_confirm_add_and_reject_reach_folders_and_manifest(data, capsys):
    out = data / "datasetpdm"
    crawled = (out / "stamp" / "1002_1_0.jpg").read_bytes()
    assert apply(data, write_corrections(data, REVIEW)) == 0
    files_now = tree(out)
    assert sorted(files_now) == sorted([
        "manifest.csv", "stamp/1001_1_0.jpg", "graphic_map/1003_1_0.jpg", "graphic_map/1001_1_0.jpg",
        "picture_indoor/book_0001.jpg", "_rejected/stamp/1002_1_0.jpg", "_rejected/picture/2000_3_0.jpg"])
    assert files_now["_rejected/stamp/1002_1_0.jpg"] == crawled  # moved, bytes as they were, never deleted
    assert files_now["graphic_map/1001_1_0.jpg"] == files_now["stamp/1001_1_0.jpg"]
    assert files_now["_rejected/picture/2000_3_0.jpg"] == (data / "input/2000/2000_3_0.jpg").read_bytes()
    with Image.open(out / "picture_indoor" / "book_0001.jpg") as image:  # a PNG is stored as the crawler stores
        assert image.format == "JPEG" and image.getpixel((5, 5)) == pytest.approx((0, 120, 120), abs=3)
    rows = read_rows(out)
    assert {key: (r["source"], r["reviewer"], r["decision"], r["time"]) for key, r in rows.items()} == {
        ("stamp", "1001_1_0", False): ("reviewed", "ayumi", "confirm", T1),
        ("stamp", "1002_1_0", True): ("reviewed", "ayumi", "reject", T2),
        ("graphic_map", "1001_1_0", False): ("reviewed", "ken", "add", T3),
        ("graphic_map", "1003_1_0", False): ("crawled", "", "", T1),
        ("picture_indoor", "book_0001", False): ("reviewed", "ken", "add", T2),
        ("picture", "2000_3_0", True): ("reviewed", "ken", "reject", T1),
    }
    # what the crawl knew stays: the rejected image keeps its URL and NDL's (wrong) confidence
    assert rows[("stamp", "1002_1_0", True)]["source_url"] == "https://iiif.example/1002_1_0"
    assert rows[("stamp", "1002_1_0", True)]["confidence"] == "0.62"
    # a copy into another tag keeps the provenance but not the confidence NDL gave the other tag
    copy = rows[("graphic_map", "1001_1_0", False)]
    assert copy["source_url"] == "https://iiif.example/1001_1_0" and copy["confidence"] == ""
    assert copy["sha256"] == hashlib.sha256(files_now["graphic_map/1001_1_0.jpg"]).hexdigest()
    from_book = rows[("picture", "2000_3_0", True)]  # what the book crawl recorded comes along
    assert (from_book["pid"], from_book["page"], from_book["x"], from_book["title"], from_book["source_url"]) == (
        "2000", "3", "1.5", "本", "https://iiif.example/2000_3_0")
    assert [manifest.source_of(r) for r in rows.values()].count("reviewed") == 5
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["tag", "confirm", "add", "reject", "unchanged", "not", "applied"]
    assert table[-1] == "5 rows: 5 applied, 0 already as decided, 0 not applied"
    assert {line.split()[0]: line.split()[1:] for line in table[1:-1]}["stamp"] == ["1", "0", "1", "0", "0"]


def test_the_trainer_does_not_read_rejected_images(data):
    assert apply(data, write_corrections(data, REVIEW)) == 0
    samples = list_samples(str(data / "datasetpdm"), default_labelmap())
    names = sorted(os.path.relpath(p, data / "datasetpdm") for p in samples.paths)
    assert names == ["graphic_map/1001_1_0.jpg", "graphic_map/1003_1_0.jpg", "picture_indoor/book_0001.jpg",
                     "stamp/1001_1_0.jpg"]


def test_applying_the_same_file_twice_changes_nothing(data, capsys):
    path = write_corrections(data, REVIEW)
    assert apply(data, path) == 0
    first = tree(data / "datasetpdm")
    stamps = {name: os.stat(data / "datasetpdm" / name).st_mtime_ns for name in first}
    capsys.readouterr()
    assert apply(data, path) == 0
    assert tree(data / "datasetpdm") == first
    assert {name: os.stat(data / "datasetpdm" / name).st_mtime_ns for name in first} == stamps
    assert capsys.readouterr().out.splitlines()[-1] == "5 rows: 0 applied, 5 already as decided, 0 not applied"


def test_later_decisions_change_a_reviewed_row_and_can_undo_a_reject(data):
    assert apply(data, write_corrections(data, REVIEW)) == 0
    undo = [("datasetpdm/_rejected/stamp/1002_1_0.jpg", "", "stamp", "confirm", "mio", T3)]
    assert apply(data, write_corrections(data, undo, "second.csv")) == 0
    rows = read_rows(data / "datasetpdm")
    assert ("stamp", "1002_1_0", True) not in rows
    assert (rows[("stamp", "1002_1_0", False)]["reviewer"], rows[("stamp", "1002_1_0", False)]["decision"]) == (
        "mio", "confirm")
    assert os.path.isfile(data / "datasetpdm" / "stamp" / "1002_1_0.jpg")
    assert not os.path.exists(data / "datasetpdm" / "_rejected" / "stamp" / "1002_1_0.jpg")


def test_bad_rows_are_left_out_one_sentence_each_and_the_rest_applied(data, capsys, caplog):
    put(data / "input" / "book" / "notes.jpg", b"<html>not an image</html>")
    rows = [
        ("datasetpdm/stamp/1001_1_0.jpg", "", "stmap", "confirm", "ayumi", T1),       # 2 unknown tag
        ("input/book/gone.jpg", "book", "stamp", "add", "ayumi", T1),                  # 3 missing image
        ("datasetpdm/stamp/1002_1_0.jpg", "", "stamp", "reject", "ayumi", T1),         # 4 } contradictory
        ("datasetpdm/stamp/1002_1_0.jpg", "", "stamp", "confirm", "ken", T2),          # 5 }
        ("datasetpdm/graphic_map/1003_1_0.jpg", "", "graphic_map", "confirm", "ken", T1),  # 6 } repeated: once
        ("datasetpdm/graphic_map/1003_1_0.jpg", "", "graphic_map", "confirm", "ken", T2),  # 7 }
        ("input/book/notes.jpg", "book", "stamp", "add", "ken", T1),                   # 8 not an image
        ("datasetpdm/stamp/1001_1_0.jpg", "", "stamp", "confirm", "ken", "yesterday"),  # 9 bad time
        ("input/2000/2000_3_0.jpg", "2000", "picture", "add", "ken", T3),              # 10 fine
    ]
    path = write_corrections(data, rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("datasetpdm/stamp/1001_1_0.jpg,,stamp,maybe,ken,\n")            # 11 bad decision
    caplog.set_level(logging.WARNING)
    assert apply(data, path) == 0
    out = data / "datasetpdm"
    stored = read_rows(out)
    assert stored[("graphic_map", "1003_1_0", False)]["time"] == T2  # the last of the repeated rows
    assert stored[("picture", "2000_3_0", False)]["decision"] == "add"
    assert os.path.isfile(out / "stamp" / "1002_1_0.jpg") and stored[("stamp", "1002_1_0", False)]["source"] == "crawled"
    assert stored[("stamp", "1001_1_0", False)]["source"] == "crawled"
    assert not os.path.exists(out / "stmap") and not os.path.exists(out / "stamp" / "book_notes.jpg")
    messages = [record.getMessage() for record in caplog.records]
    p, image = str(path), data / "datasetpdm" / "stamp" / "1002_1_0.jpg"
    assert messages == [
        f"{p} line 2 not applied: tag 'stmap' is not a label of the default table nor a folder of {out}; correct "
        f"the tag, or create the folder {out / 'stmap'} first for a new tag",
        f"{p} line 3 not applied: the image {data / 'input/book/gone.jpg'} does not exist (moved or deleted?); "
        "check the path",
        f"{p} line 4 not applied: {image} is both kept and rejected for tag stamp by lines 4, 5, so none of them is "
        "applied; keep one decision",
        f"{p} line 5 not applied: {image} is both kept and rejected for tag stamp by lines 4, 5, so none of them is "
        "applied; keep one decision",
        f"{p} line 9 not applied: time 'yesterday' is not an ISO 8601 time such as 2026-12-05T03:04:05Z",
        f"{p} line 11 not applied: decision 'maybe' is not one of confirm, reject, add",
        f"{p} line 8 not applied: {data / 'input/book/notes.jpg'} is not an image that can be read "
        "(UnidentifiedImageError); check the file",
    ]
    assert capsys.readouterr().out.splitlines()[-1] == (
        "10 rows: 2 applied, 0 already as decided, 7 not applied (see the warnings above), 1 repeated")


def test_a_file_cut_short_applies_its_whole_rows_only(data, caplog):
    text = corrections.to_text([corrections.Correction(*row) for row in REVIEW[:2]])
    path = data / "cut.csv"
    # cut inside the time: every cell is there and "2026-12-05" is a valid time, but the row is not whole
    path.write_text(text + "datasetpdm/graphic_map/1003_1_0.jpg,,graphic_map,reject,ken,2026-12-05")
    caplog.set_level(logging.WARNING)
    assert apply(data, path) == 0
    assert [record.getMessage() for record in caplog.records] == [
        f"{path} line 4 not applied: the file ends without a line break, so this last row may be cut short; if it "
        "is whole, end the file with a line break"]
    rows = read_rows(data / "datasetpdm")
    assert rows[("stamp", "1002_1_0", True)]["decision"] == "reject"
    assert ("graphic_map", "1003_1_0", False) in rows and rows[("graphic_map", "1003_1_0", False)]["source"] == "crawled"


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text; save it as UTF-8 CSV"),
    (b'[{"id": 1, "annotations": []}]', "does not start with the header image,item,tag,decision,reviewer,time"),
    (b"", "does not start with the header image,item,tag,decision,reviewer,time"),
])
def test_a_file_that_is_no_corrections_csv_applies_nothing(data, capsys, content, message):
    before = tree(data / "datasetpdm")
    (data / "bad.csv").write_bytes(content)
    assert apply(data, data / "bad.csv") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and str(data / "bad.csv") in err[-1] and message in err[-1]
    assert tree(data / "datasetpdm") == before


def test_rows_naming_another_data_sets_images_apply_nothing(data, capsys):
    other = data / "other"
    put(other / "stamp" / "9_1_0.jpg", jpeg((9, 9, 9)))
    (other / "manifest.csv").write_text(",".join(manifest.MANIFEST_FIELDS) + "\n")
    before = tree(data / "datasetpdm")
    path = write_corrections(data, REVIEW[:2] + [("other/stamp/9_1_0.jpg", "", "stamp", "reject", "ken", T1)])
    assert apply(data, path) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {path} line 4 names {other / 'stamp' / '9_1_0.jpg'}, an image of the data set {other}, not of "
        f"--out {data / 'datasetpdm'}: nothing applied; pass --out {other} to apply the file there")
    assert tree(data / "datasetpdm") == before


def test_ctrl_c_midway_leaves_a_consistent_data_set_that_a_rerun_completes(data, monkeypatch, capsys,
                                                                           python_sigint_handler):
    clean = data / "clean"
    shutil.copytree(data / "datasetpdm", clean / "datasetpdm")
    shutil.copytree(data / "input", clean / "input")
    assert apply(clean, write_corrections(clean, REVIEW)) == 0
    path = write_corrections(data, REVIEW)
    real, calls = os.replace, []

    def interrupting(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the first copy, before the second file op is done
        return real(source, target)

    monkeypatch.setattr(os, "replace", interrupting)
    assert apply(data, path) == 130
    monkeypatch.setattr(os, "replace", real)
    assert "interrupted: run the same command again to finish" in capsys.readouterr().out
    out = data / "datasetpdm"
    rows = read_rows(out)  # consistent: every row's file exists, every image has its row
    assert {manifest.Manifest(str(out)).row_path(r) for r in rows.values()} == {
        str(out / name) for name in tree(out) if name != "manifest.csv"}
    assert not [name for name in tree(out) if name.endswith(files.TEMP_SUFFIX)]
    assert apply(data, path) == 0
    assert tree(out) == tree(clean / "datasetpdm") or _same_rows(out, clean / "datasetpdm")


def _same_rows(a, b):
    """Same files and the same rows, in whatever order."""
    files_a, files_b = tree(a), tree(b)
    assert {k: v for k, v in files_a.items() if k != "manifest.csv"} == {
        k: v for k, v in files_b.items() if k != "manifest.csv"}
    assert read_rows(a) == read_rows(b)
    return True


def test_a_kill_between_a_reject_move_and_the_manifest_keeps_the_rows_provenance(data):
    out = data / "datasetpdm"
    os.makedirs(out / "_rejected" / "stamp")
    os.replace(out / "stamp" / "1002_1_0.jpg", out / "_rejected" / "stamp" / "1002_1_0.jpg")
    opened = manifest.Manifest(str(out))
    opened.open()
    opened.commit()
    row = read_rows(out)[("stamp", "1002_1_0", True)]
    assert (row["source_url"], row["confidence"], row["source"], row["decision"]) == (
        "https://iiif.example/1002_1_0", "0.62", "reviewed", "reject")
    assert ("stamp", "1002_1_0") in opened.rejected and opened.counts == {"stamp": 1, "graphic_map": 1}
    assert "1002_1_0" in opened.ids and "1002_1_0" in opened.reviewed


def test_an_old_manifest_stays_readable_and_source_of_infers_what_it_can(tmp_path):
    out = tmp_path / "old"
    put(out / "stamp" / "1_1_0.jpg", jpeg((1, 2, 3)))
    put(out / "stamp" / "2_1_0.jpg", jpeg((1, 2, 4)))
    old = ",".join(manifest.LEGACY_FIELDS) + "\n1_1_0,1,1,,,,,,stamp,0.9,u,,,t\n2_1_0,2,1,,,,,,stamp,,,,,t\n"
    (out / "manifest.csv").write_text(old)
    opened = manifest.Manifest(str(out))
    opened.open()
    opened.commit()
    assert (out / "manifest.csv").read_text() == old  # nothing to do: not rewritten
    assert [manifest.source_of(row) for row in opened.rows] == ["crawled", ""]
    assert manifest.source_of({"source": "rebuilt", "confidence": "0.5"}) == "rebuilt"
    assert manifest.source_of({"source": "nonsense"}) == ""
    assert manifest.source_of({"tags": '{"picture": 0.9}'}) == "crawled"


def test_a_later_crawl_leaves_reviewed_images_as_decided(tmp_path, capsys):
    out = tmp_path / "datasetpdm"
    records = make_records("stamp", 5)
    ids = sorted(record["id"] for record in records)
    with NdlEmulator(records) as emulator:
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "3") == 0
        first = sorted(name[:-4] for name in os.listdir(out / "stamp"))
        rejected, confirmed = first[0], first[1]
        review = [(f"datasetpdm/stamp/{rejected}.jpg", "", "stamp", "reject", "ken", T1),
                  (f"datasetpdm/stamp/{confirmed}.jpg", "", "stamp", "confirm", "ken", T1)]
        assert apply(tmp_path, write_corrections(tmp_path, review)) == 0
        confirmed_bytes = (out / "stamp" / f"{confirmed}.jpg").read_bytes()
        capsys.readouterr()
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "5", "--max-idle", "4") == 0
    summary = capsys.readouterr().out.splitlines()
    assert sorted(name[:-4] for name in os.listdir(out / "stamp")) == [i for i in ids if i != rejected]
    assert os.listdir(out / "_rejected" / "stamp") == [f"{rejected}.jpg"]
    assert (out / "stamp" / f"{confirmed}.jpg").read_bytes() == confirmed_bytes
    rows = read_rows(out)
    assert rows[("stamp", confirmed, False)]["source"] == "reviewed"
    assert {r["source"] for key, r in rows.items() if key[1] not in (rejected, confirmed)} == {"crawled"}
    header, stamp = summary[0].split(), summary[1].split()
    assert header[:4] == ["folder", "saved", "duplicates", "reviewed"]
    assert stamp[0] == "stamp" and stamp[1] == "2" and int(stamp[3]) >= 1  # the API sent them again: counted
    assert stamp[8] == "4"  # total: the rejected image is not in the folder


def test_corrections_mode_is_a_mode_of_its_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        newdataclawer.main(["--from-corrections", "c.csv", "--tag", "stamp"])
    assert exit_.value.code == 2
    assert "--tag and --from-corrections are different modes; give one of them" in capsys.readouterr().err
    assert "--from-corrections FILE" in newdataclawer.build_parser().format_help()
