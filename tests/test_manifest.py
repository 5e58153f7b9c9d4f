"""The crawler's manifest.csv (tagestimate/manifest.py) on its own: reconciliation with the
folders after a crash, torn and repeated rows, adoption of files it lacks, durable appends."""

import csv
import datetime
import errno
import hashlib
import logging
import os
import subprocess
import sys
import threading

import pytest

from tagestimate import files
from tagestimate.manifest import IMAGE_SUFFIX, LEGACY_FIELDS, MANIFEST_FIELDS, MANIFEST_NAME, CrawlError, Manifest

# The columns of a manifest written before provenance (source, reviewer, decision) was recorded:
# the tests below write such files, which must stay readable.
FIELDS = ["id", "pid", "page", "x", "y", "w", "h", "title", "folder", "confidence", "source_url", "sha256",
          "bytes", "time"]
HEADER = ",".join(FIELDS) + "\n"
NEW_FIELDS = FIELDS + ["source", "reviewer", "decision"]  # what a new manifest gets
NEW_HEADER = ",".join(NEW_FIELDS) + "\n"


def row(image_id, folder="stamp", **values):
    return {field: "" for field in FIELDS} | {"id": image_id, "folder": folder} | values


def put(out, folder, image_id, data=b"jpeg bytes"):
    os.makedirs(os.path.join(out, folder), exist_ok=True)
    path = os.path.join(out, folder, image_id + ".jpg")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def write_manifest(out, rows, tail="\n"):
    os.makedirs(out, exist_ok=True)
    lines = [",".join(r[f] for f in FIELDS) for r in rows]
    with open(os.path.join(out, "manifest.csv"), "w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + "\n".join(lines) + (tail if lines else ""))


def read(out):
    with open(os.path.join(out, "manifest.csv"), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def opened(out):
    manifest = Manifest(out)
    manifest.open()
    return manifest


def test_constants():
    assert MANIFEST_NAME == "manifest.csv" and list(LEGACY_FIELDS) == FIELDS
    assert list(MANIFEST_FIELDS) == NEW_FIELDS
    assert IMAGE_SUFFIX == ".jpg"


def test_image_path_refuses_names_that_leave_the_folder(tmp_path):
    manifest = Manifest(str(tmp_path))
    assert manifest.path == os.path.join(str(tmp_path), "manifest.csv")
    assert manifest.image_path("stamp", "1054192_2_0") == os.path.join(str(tmp_path), "stamp", "1054192_2_0.jpg")
    for folder, image_id in (("..", "x"), ("stamp", "../x"), ("a/b", "x"), ("stamp", ""), ("", "x"), ("stamp", None)):
        with pytest.raises(ValueError) as error:
            manifest.image_path(folder, image_id)
        assert str(error.value) == f"unsafe folder or id: {folder!r}, {image_id!r}"


def test_a_new_folder_is_created_only_with_the_first_row(tmp_path):
    out = str(tmp_path / "new" / "out")
    manifest = opened(out)
    assert not os.path.exists(tmp_path / "new")  # nothing before a server answered
    manifest.commit()
    assert not os.path.exists(tmp_path / "new")  # not even a bare header
    put(out, "stamp", "1_1_0")
    manifest.append(row("1_1_0", sha256="ab"))
    manifest.append(row("2_1_0", folder="graphic"))
    manifest.close()
    manifest.close()  # twice is fine
    assert open(os.path.join(out, "manifest.csv"), encoding="utf-8", newline="").read() == (
        NEW_HEADER.replace("\n", "\r\n") + "1_1_0,,,,,,,,stamp,,,ab,,,,,\r\n2_1_0,,,,,,,,graphic,,,,,,,,\r\n")
    assert manifest.ids == {"1_1_0", "2_1_0"} and manifest.counts == {"stamp": 1, "graphic": 1}


def test_appends_are_flushed_and_fsynced_row_by_row(tmp_path, monkeypatch):
    out = str(tmp_path)
    (tmp_path / "manifest.csv").write_text(NEW_HEADER)  # with the provenance columns: no widening rewrite
    manifest = opened(out)
    seen = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.fstat(fd).st_size), real(fd)))
    manifest.append(row("1_1_0"))
    assert seen == [os.path.getsize(manifest.path)] and read(out)[0]["id"] == "1_1_0"  # on disk before it returns
    manifest.close()


def test_open_of_a_consistent_folder_changes_nothing(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    put(out, "graphic", "2_1_0")
    write_manifest(out, [row("1_1_0"), row("2_1_0", folder="graphic")])
    before = os.stat(os.path.join(out, "manifest.csv"))
    caplog.set_level(logging.INFO)
    manifest = opened(out)
    manifest.commit()
    assert os.stat(os.path.join(out, "manifest.csv")).st_mtime_ns == before.st_mtime_ns
    assert manifest.ids == {"1_1_0", "2_1_0"} and manifest.counts == {"stamp": 1, "graphic": 1}
    assert caplog.records == []


def test_open_drops_rows_without_a_file_and_repeated_rows_and_adopts_files(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    adopted = put(out, "picture_indoor", "R1-b_12_3", data=b"an image the manifest lacks")
    put(out, "picture_indoor", "notes")  # a valid id that is not an NDL name
    put(out, ".hidden", "9_9_9")
    (tmp_path / "stamp" / "readme.txt").write_text("not an image")
    (tmp_path / "stamp" / "bad name.jpg").write_text("not an id")
    os.makedirs(tmp_path / "stamp" / "sub.jpg")  # a folder, not a file
    write_manifest(out, [row("1_1_0", title="first"), row("1_1_0", title="again"), row("3_1_0")])
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    manifest = opened(out)
    manifest.commit()
    rows = read(out)
    assert [(r["folder"], r["id"], r["title"]) for r in rows] == [
        ("stamp", "1_1_0", "first"), ("picture_indoor", "R1-b_12_3", ""), ("picture_indoor", "notes", "")]
    new = rows[1]
    mtime = datetime.datetime.fromtimestamp(os.stat(adopted).st_mtime, datetime.timezone.utc)
    assert new == row("R1-b_12_3", folder="picture_indoor", pid="R1-b", page="12",
                      sha256=hashlib.sha256(b"an image the manifest lacks").hexdigest(),
                      bytes=str(len(b"an image the manifest lacks")), time=mtime.isoformat(timespec="seconds"))
    assert rows[2]["pid"] == "" and rows[2]["page"] == ""
    assert manifest.ids == {"1_1_0", "R1-b_12_3", "notes"}
    assert manifest.counts == {"stamp": 1, "picture_indoor": 2}
    assert [r.getMessage() for r in caplog.records] == [
        f"reconciled {manifest.path}: dropped 2 rows (file missing, torn or repeated), adopted 2 files it lacked, "
        "removed 0 temporary files"]


def test_page_numbers_lose_leading_zeros(tmp_path):
    put(str(tmp_path), "stamp", "1054192_0007_0")
    manifest = opened(str(tmp_path))
    manifest.commit()
    assert read(str(tmp_path))[0]["page"] == "7"


def test_open_removes_temporary_files_only(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    write_manifest(out, [row("1_1_0")])
    (tmp_path / ".manifest.csv.abc.part").write_text("half")
    (tmp_path / "stamp" / ".1_2_0.jpg.abc.part").write_text("half")
    (tmp_path / "stamp" / "keep.partial").write_text("not ours")
    os.makedirs(tmp_path / "stamp" / "dir.part")  # a folder is never removed
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    opened(out).commit()
    assert sorted(os.listdir(tmp_path)) == ["manifest.csv", "stamp"]
    assert sorted(os.listdir(tmp_path / "stamp")) == ["1_1_0.jpg", "dir.part", "keep.partial"]
    assert caplog.records[-1].getMessage().endswith("adopted 0 files it lacked, removed 2 temporary files")
    assert len(read(out)) == 1


def test_torn_rows_are_dropped_and_a_missing_final_newline_is_repaired(tmp_path, caplog):
    out = str(tmp_path)
    for image_id in ("1_1_0", "2_1_0", "3_1_0", "4_1_0", "5_1_0", "6_1_0", "8_1_0"):
        put(out, "stamp", image_id)
    write_manifest(out, [row("1_1_0"), row("2_1_0")], tail="")
    with open(os.path.join(out, "manifest.csv"), "a", encoding="utf-8") as handle:
        handle.write("\n3_1_0,,,,,,,,stamp,,,,,,extra\n4_1_0,,,\n5_1_0,,,,,,,,../x,,,,,\n"
                     "../6_1_0,,,,,,,,stamp,,,,,\n8_1_0,,,,,,,,stamp,,,,,\n6_1_0,,,,,,,,stamp,,,")
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    manifest = opened(out)
    manifest.append(row("7_1_0"))
    manifest.close()
    # the torn rows' files are adopted afresh; rows after a torn one are kept
    assert [r["id"] for r in read(out)] == ["1_1_0", "2_1_0", "8_1_0", "3_1_0", "4_1_0", "5_1_0", "6_1_0", "7_1_0"]
    assert open(os.path.join(out, "manifest.csv"), "rb").read().endswith(b"\n")
    assert [r.getMessage() for r in caplog.records] == [
        f"reconciled {manifest.path}: dropped 5 rows (file missing, torn or repeated), adopted 4 files it lacked, "
        "removed 0 temporary files"]


def test_dropping_rows_alone_is_logged(tmp_path, caplog):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    write_manifest(out, [row("1_1_0"), row("2_1_0")])
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    opened(out)
    assert [r.getMessage() for r in caplog.records] == [
        f"reconciled {os.path.join(out, 'manifest.csv')}: dropped 1 row (file missing, torn or repeated), "
        "adopted 0 files it lacked, removed 0 temporary files"]


@pytest.mark.parametrize("manifest_text", [None, ""])
def test_a_missing_or_empty_manifest_drops_nothing(tmp_path, caplog, manifest_text):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    if manifest_text is not None:
        (tmp_path / "manifest.csv").write_text(manifest_text)
    caplog.set_level(logging.INFO, logger="tagestimate.manifest")
    opened(out).commit()
    assert [r["id"] for r in read(out)] == ["1_1_0"]
    assert caplog.records[-1].getMessage().endswith(": dropped 0 rows (file missing, torn or repeated), adopted 1 "
                                                    "file it lacked, removed 0 temporary files")


def test_titles_with_line_breaks_survive_a_rewrite(tmp_path):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    put(out, "stamp", "2_1_0")
    with open(os.path.join(out, "manifest.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerow(row("1_1_0", title="vol. 1\r\nplate 3"))
    opened(out).commit()  # 2_1_0 is adopted, so the file is rewritten
    assert [r["title"] for r in read(out)] == ["vol. 1\r\nplate 3", ""]


MANIFEST_UNDER_ASCII_LOCALE = """
import sys
from tagestimate.manifest import MANIFEST_FIELDS, Manifest
manifest = Manifest(sys.argv[1])
manifest.open()
manifest.append(dict({f: "" for f in MANIFEST_FIELDS}, id="1_1_0", folder="stamp", title="\\u5199\\u771f"))
manifest.close()
"""


def test_rows_are_appended_as_utf8_whatever_the_locale(tmp_path):
    manifest = opened(str(tmp_path / "in_process"))
    manifest.append(row("1_1_0", title="写真"))
    manifest.close()
    assert read(str(tmp_path / "in_process"))[0]["title"] == "写真"
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", MANIFEST_UNDER_ASCII_LOCALE, str(tmp_path / "c")], cwd=root,
                            env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read(str(tmp_path / "c"))[0]["title"] == "写真"


def test_close_closes_the_file(tmp_path):
    manifest = opened(str(tmp_path))
    manifest.append(row("1_1_0"))
    handle = manifest._handle
    manifest.close()
    assert handle.closed


def test_symbolic_links_are_neither_removed_nor_adopted(tmp_path):
    outside = tmp_path / "outside"
    put(str(outside), "stamp", "9_1_0")
    (outside / "x.part").write_text("someone else's")
    out = tmp_path / "out"
    put(str(out), "graphic", "1_1_0")
    os.symlink(outside / "x.part", out / "graphic" / "link.part")
    os.symlink(outside / "x.part", out / "link2.part")
    os.symlink(outside / "stamp" / "9_1_0.jpg", out / "graphic" / "9_1_0.jpg")
    os.symlink(outside / "stamp", out / "stamp")
    opened(str(out)).commit()
    assert [(r["folder"], r["id"]) for r in read(str(out))] == [("graphic", "1_1_0")]
    assert os.path.islink(out / "graphic" / "link.part") and os.path.islink(out / "link2.part")
    assert (outside / "x.part").read_text() == "someone else's"


def test_a_file_without_final_newline_is_rewritten_at_commit(tmp_path):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    write_manifest(out, [row("1_1_0")], tail="")
    opened(out).commit()
    assert open(os.path.join(out, "manifest.csv"), encoding="utf-8", newline="").read() == (
        HEADER.replace("\n", "\r\n") + "1_1_0,,,,,,,,stamp,,,,,\r\n")


def test_undecodable_bytes_do_not_stop_the_crawl(tmp_path):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    write_manifest(out, [row("1_1_0", title="ok")])
    with open(os.path.join(out, "manifest.csv"), "ab") as handle:
        handle.write(b"\xff\xfe torn,\n")
    manifest = opened(out)
    manifest.commit()
    assert [r["title"] for r in read(out)] == ["ok"]


def test_an_empty_manifest_file_is_rewritten_with_its_header(tmp_path):
    out = str(tmp_path)
    (tmp_path / "manifest.csv").write_text("")
    opened(out).commit()
    assert (tmp_path / "manifest.csv").read_bytes() == NEW_HEADER.replace("\n", "\r\n").encode()


def test_a_foreign_csv_is_refused_not_overwritten(tmp_path):
    (tmp_path / "manifest.csv").write_text("name,score\na,1\n")
    manifest = Manifest(str(tmp_path))
    with pytest.raises(CrawlError) as error:
        manifest.open()
    assert str(error.value) == (f"{manifest.path} does not have the manifest columns {','.join(FIELDS)}; "
                                "move it away or choose another --out")
    assert (tmp_path / "manifest.csv").read_text() == "name,score\na,1\n"


def test_an_out_under_a_file_fails_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as error:
        Manifest(str(blocker / "out")).open()
    assert error.value.errno == errno.ENOTDIR and error.value.filename == str(blocker)
    assert error.value.strerror == "not a folder"


def test_check_writable_needs_write_and_search_permission(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(os, "access", lambda path, mode: asked.append((path, mode)) or False)
    with pytest.raises(PermissionError) as error:
        Manifest(str(tmp_path / "a")).open()
    assert asked == [(str(tmp_path), os.W_OK | os.X_OK)]
    assert error.value.strerror == "no permission to write there"
    assert error.value.errno == errno.EACCES and error.value.filename == str(tmp_path)


def test_commit_writes_a_reconciled_manifest_and_only_once(tmp_path, monkeypatch):
    out = str(tmp_path)
    put(out, "stamp", "1_1_0")
    manifest = opened(out)
    writes = []
    real = files.write_atomic
    monkeypatch.setattr(files, "write_atomic", lambda path, data: writes.append(path) or real(path, data))
    manifest.commit()
    manifest.commit()
    manifest.append(row("2_1_0"))
    manifest.close()
    assert writes == [manifest.path]
    assert [r["id"] for r in read(out)] == ["1_1_0", "2_1_0"]


def test_appends_from_many_threads_all_arrive_whole(tmp_path):
    manifest = opened(str(tmp_path))
    threads = [threading.Thread(target=lambda i=i: [manifest.append(row(f"{i}_{k}_0", title="t" * 200))
                                                    for k in range(20)]) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    manifest.close()
    rows = read(str(tmp_path))
    assert len(rows) == 160 and all(r["title"] == "t" * 200 for r in rows)
    assert manifest.counts == {"stamp": 160} and len(manifest.ids) == 160
