"""tagestimate.manifest, where the mutation campaign found it untested: what a manifest remembers of
its rows (origins, keys, counts), a rejected file adopted, widening an older file's columns, the
temporary files of _rejected/, and replace then commit. Distinct values throughout, so that a
swapped field or folder shows."""

import csv
import hashlib
import logging
import os

from tagestimate.manifest import (EXTENDED_FIELDS, LEGACY_FIELDS, MANIFEST_FIELDS, MANIFEST_NAME, Manifest,
                                  REJECTED_FOLDER)

from test_manifest import put, read, row, write_manifest


def header(out):
    with open(os.path.join(out, MANIFEST_NAME), newline="", encoding="utf-8") as handle:
        return tuple(next(csv.reader(handle)))


def full(image_id, folder, **values):
    """A row with every column of EXTENDED_FIELDS."""
    return {field: "" for field in EXTENDED_FIELDS} | {"id": image_id, "folder": folder} | values


def test_open_and_append_remember_each_folder_s_first_manifest_its_keys_and_counts(tmp_path):
    out = str(tmp_path)
    for folder, image_id in (("book1", "1_1_0"), ("book1", "1_2_0"), ("book2", "2_1_0")):
        put(out, folder, image_id)
    put(out, os.path.join(REJECTED_FOLDER, "book1"), "1_3_0")
    rows = [full("1_1_0", "book1", manifest="https://iiif.example.org/m1.json"),
            full("1_2_0", "book1", manifest="https://iiif.example.org/m2.json"),
            full("2_1_0", "book2"),
            full("1_3_0", "book1", manifest="https://iiif.example.org/m3.json", source="reviewed", decision="reject")]
    manifest = Manifest(out, extended=True)
    manifest.replace(rows)
    manifest = Manifest(out, extended=True)
    manifest.open()
    assert manifest.origins == {"book1": "https://iiif.example.org/m1.json"}  # the first row's; rejected ones never
    assert manifest.keys == {("book1", "1_1_0"), ("book1", "1_2_0"), ("book2", "2_1_0")}
    assert manifest.counts == {"book1": 2, "book2": 1}
    assert manifest.rejected == {("book1", "1_3_0")} and manifest.reviewed == {"1_3_0"}
    put(out, "book3", "3_1_0")
    manifest.append(full("3_1_0", "book3", manifest="https://iiif.example.org/m4.json"))
    assert manifest.origins["book3"] == "https://iiif.example.org/m4.json" and manifest.counts["book3"] == 1
    manifest.close()
    manifest.replace(rows[2:3])  # replace forgets what it held before
    assert (manifest.origins, manifest.keys, manifest.counts) == ({}, {("book2", "2_1_0")}, {"book2": 1})
    manifest.commit()  # nothing pending after a replace: the file keeps what replace wrote
    assert [r["id"] for r in read(out)] == ["2_1_0"]


def test_a_rejected_file_without_a_row_is_adopted_as_a_reviewed_reject_of_its_own_bytes(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1054192_3_0", b"kept in its folder")
    put(out, os.path.join(REJECTED_FOLDER, "stamp"), "1054192_5_1", b"taken out by a reviewer")
    write_manifest(out, [row("1054192_3_0", pid="1054192", page="3")])  # an older file: no provenance columns
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    manifest = Manifest(out)
    manifest.open()
    manifest.commit()
    assert header(out) == MANIFEST_FIELDS  # widened: the adopted row's decision needs the column
    adopted = read(out)[1]
    stat = os.stat(os.path.join(out, REJECTED_FOLDER, "stamp", "1054192_5_1.jpg"))
    assert adopted == {field: "" for field in MANIFEST_FIELDS} | {
        "id": "1054192_5_1", "folder": "stamp", "pid": "1054192", "page": "5",
        "sha256": hashlib.sha256(b"taken out by a reviewer").hexdigest(), "bytes": str(stat.st_size),
        "time": adopted["time"], "source": "reviewed", "decision": "reject"}
    assert manifest.rejected == {("stamp", "1054192_5_1")}
    assert caplog.records[-1].getMessage().endswith("adopted 1 file it lacked, removed 0 temporary files")


def test_a_repeated_row_is_not_taken_for_a_rejected_file_s_earlier_row(tmp_path):
    """Only a row whose file went missing is the earlier row of a file found under _rejected/."""
    out = str(tmp_path)
    put(out, "stamp", "1_1_0", b"in the folder")
    put(out, os.path.join(REJECTED_FOLDER, "stamp"), "1_1_0", b"a copy a reviewer rejected")
    write_manifest(out, [row("1_1_0", title="first"), row("1_1_0", title="repeated", sha256="f" * 64)])
    manifest = Manifest(out)
    manifest.open()
    manifest.commit()
    kept, adopted = read(out)
    assert kept["title"] == "first" and adopted["decision"] == "reject"
    assert adopted["title"] == "" and adopted["sha256"] == hashlib.sha256(b"a copy a reviewer rejected").hexdigest()


def test_an_older_file_gets_the_provenance_columns_with_the_first_new_row(tmp_path):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    write_manifest(out, [row("1_1_0", title="old", sha256="a" * 64)])
    manifest = Manifest(out)
    manifest.open()
    put(out, "stamp", "2_1_0")
    manifest.append(full("2_1_0", "stamp", title="new", source="crawled", tags='{"stamp": 0.9}'))
    manifest.close()
    assert header(out) == MANIFEST_FIELDS  # not the extra columns a --pid crawl adds: a row's extra keys are left out
    assert read(out) == [{field: "" for field in MANIFEST_FIELDS} | {"id": "1_1_0", "folder": "stamp", "title": "old",
                                                                      "sha256": "a" * 64},
                         {field: "" for field in MANIFEST_FIELDS} | {"id": "2_1_0", "folder": "stamp", "title": "new",
                                                                      "source": "crawled"}]


def test_an_extended_crawl_widens_a_plain_file_and_a_new_one_starts_wide(tmp_path):
    plain, new = str(tmp_path / "plain"), str(tmp_path / "new")
    put(plain, "stamp", "1_1_0")
    write_manifest(plain, [row("1_1_0")])
    manifest = Manifest(plain, extended=True)
    manifest.open()
    manifest.commit()
    assert header(plain) == LEGACY_FIELDS + EXTENDED_FIELDS[len(MANIFEST_FIELDS):]  # provenance waits for a row
    manifest = Manifest(new, extended=True)
    manifest.open()
    put(new, "book", "1_1_0")
    manifest.append(full("1_1_0", "book", canvas="https://iiif.example.org/c/1"))
    manifest.close()
    assert header(new) == EXTENDED_FIELDS and read(new)[0]["canvas"] == "https://iiif.example.org/c/1"


def test_temporary_files_under_rejected_are_removed_too(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    put(out, os.path.join(REJECTED_FOLDER, "stamp"), "1_2_0")
    write_manifest(out, [row("1_1_0")])
    (tmp_path / REJECTED_FOLDER / "stamp" / ".1_3_0.jpg.abc.part").write_text("half")
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    Manifest(out).open()
    assert sorted(os.listdir(tmp_path / REJECTED_FOLDER / "stamp")) == ["1_2_0.jpg"]
    assert caplog.records[-1].getMessage().endswith("adopted 1 file it lacked, removed 1 temporary file")
