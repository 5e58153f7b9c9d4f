"""Atomic writes, file hashes, printable paths, NDL names, the help formatter (tagestimate/files.py)."""

import argparse
import hashlib
import io
import os
import stat

import pytest
from PIL import Image

from tagestimate import files


def test_temporary_suffix_is_part():
    assert files.TEMP_SUFFIX == ".part"  # the crawler and docs/crawling.md name it; a rename would orphan files


@pytest.mark.parametrize("size, chunk", [(0, 4), (5, 4), (4096, 1000), (3 << 20, 1 << 20)])
def test_sha256_file_hashes_the_whole_file_in_chunks(tmp_path, size, chunk):
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert files.sha256_file(path, chunk=chunk) == hashlib.sha256(data).hexdigest()
    assert files.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_sha256_file_never_reads_more_than_a_chunk(tmp_path, monkeypatch):
    sizes = []

    class Recording(io.BytesIO):
        def read(self, size=-1):
            sizes.append(size)
            return super().read(size)

    monkeypatch.setattr(files, "open", lambda path, mode: Recording(b"x" * 10), raising=False)
    assert files.sha256_file("any", chunk=4) == hashlib.sha256(b"x" * 10).hexdigest()
    assert sizes == [4, 4, 4, 4]  # a big file is never held whole in memory


def test_printable_path_escapes_bytes_that_are_not_utf8():
    assert files.printable_path("写真/p1.jpg") == "写真/p1.jpg"
    assert files.printable_path(os.fsdecode(b"scan\x83.jpg")) == "scan\\x83.jpg"
    assert files.printable_path(b"scan\x83.jpg") == "scan\\x83.jpg"
    "\n".join([files.printable_path(os.fsdecode(b"\xff"))]).encode("utf-8")  # printable, no error


def test_temporary_path_is_hidden_unique_and_beside_the_target(tmp_path):
    target = tmp_path / "out" / "result.json"
    first, second = files.temporary_path(target), files.temporary_path(str(target))
    assert first != second
    for temporary in (first, second):
        folder, name = os.path.split(temporary)
        assert folder == str(tmp_path / "out")
        assert name.startswith(".result.json.") and name.endswith(".part")
        assert len(name) > len(".result.json..part") + 16  # a random part, not a fixed name
    os.chdir(tmp_path)
    assert os.path.dirname(files.temporary_path("result.json")) == str(tmp_path)  # absolute


def test_write_atomic_writes_text_as_utf8_and_bytes_as_is(tmp_path):
    path = tmp_path / "a.txt"
    assert files.write_atomic(path, "写真\n") == path
    assert path.read_bytes() == "写真\n".encode("utf-8")
    files.write_atomic(str(path), b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert os.listdir(tmp_path) == ["a.txt"]  # nothing left beside it


def test_write_atomic_replaces_only_once_complete_and_fsynced(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_text("old")
    seen = []
    real_fsync = os.fsync

    def fsync(descriptor):
        seen.append((os.fstat(descriptor).st_size, path.read_text()))
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    files.write_atomic(path, "new content")
    # fsync saw the whole (flushed) data while the old file was still in place
    assert seen == [(len("new content"), "old")]
    assert path.read_text() == "new content"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_preview_is_written_whole_without_fsync_and_an_empty_one_is_not_current(tmp_path, monkeypatch):
    """Thumbnails and overlays skip the fsync (0.1 ms of CPU and a disk wait per image of a run): the
    rename still shows them whole; an empty one, what a power cut may leave, counts as not made."""
    from tagestimate.review import thumbs

    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    source = tmp_path / "page.png"
    Image.new("RGB", (320, 200), (200, 30, 60)).save(source)
    target = tmp_path / "thumbs" / "page.jpg"
    assert thumbs.ensure_thumbnail(str(source), str(target))
    assert synced == [] and os.listdir(target.parent) == ["page.jpg"]
    with Image.open(target) as made:
        assert made.size == (160, 100) and made.getpixel((80, 50)) == pytest.approx((200, 30, 60), abs=6)
    files.write_atomic(tmp_path / "report.json", "{}")
    assert len(synced) == 1  # everything else still is fsynced
    assert thumbs.is_current(str(target), str(source))
    target.write_bytes(b"")
    os.utime(target, (os.path.getmtime(source) + 10,) * 2)  # newer than its source, but empty
    assert not thumbs.is_current(str(target), str(source))
    assert thumbs.ensure_thumbnail(str(source), str(target)) and target.stat().st_size > 0


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_text("old")

    def broken(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_rename_leaves_no_temporary(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "x").write_text("keep")  # os.replace cannot put a file over a non-empty folder
    with pytest.raises(OSError):
        files.write_atomic(target, "data")
    assert sorted(os.listdir(tmp_path)) == ["folder"]
    assert os.listdir(target) == ["x"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_write_atomic_gives_the_usual_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.write_atomic(tmp_path / "a", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o666 & ~umask


def test_write_json_is_sorted_indented_utf8_with_a_final_newline(tmp_path):
    path = tmp_path / "a.json"
    assert files.write_json(path, {"b": [1], "a": "写真"}) == path
    assert path.read_text(encoding="utf-8") == '{\n  "a": "写真",\n  "b": [\n    1\n  ]\n}\n'
    files.write_json(path, {"k": 1}, indent=None)
    assert path.read_text() == '{"k": 1}\n'


@pytest.mark.parametrize("name, pid, page, n", [
    ("1054192_2_0", "1054192", "2", "0"),
    ("R100000039-I000001_12_3", "R100000039-I000001", "12", "3"),
    ("abc_def_7_1", "abc_def", "7", "1"),
])
def test_ndl_name_splits_pid_page_and_crop(name, pid, page, n):
    match = files.NDL_NAME.fullmatch(name)
    assert (match["pid"], match["page"], match["n"]) == (pid, page, n)


@pytest.mark.parametrize("name", ["1054192_2", "1054192__2_0", "_2_0", "a/b_2_0", "1054192_12345678_0"])
def test_ndl_name_rejects_other_names(name):
    assert files.NDL_NAME.fullmatch(name) is None


def test_help_formatter_shows_defaults_except_none():
    parser = argparse.ArgumentParser(formatter_class=files.HelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="image size")
    parser.add_argument("--labelmap", default=None, help="a JSON label map")
    text = " ".join(parser.format_help().split())
    assert "image size (default: 224)" in text
    assert "a JSON label map" in text and "default: None" not in text


@pytest.mark.parametrize("value", ["p\r1", "a\r\nb", "x\ny", 'q"r', "plain"])
def test_every_csv_we_write_reads_back_whole(tmp_path, value):
    """A lone carriage return is quoted like a line break (csv alone would write "p\\r1" bare, read back as
    two rows): the tag CSV, corrections.csv and a DictWriter's rows each read back as written."""
    import csv
    import io

    from tagestimate import corrections, formats
    from tagestimate.files import CsvWriter, csv_dict_writer

    buffer = io.StringIO()
    CsvWriter(buffer).writerows([[value, 1], ["next", 2]])
    assert list(csv.reader(io.StringIO(buffer.getvalue(), newline=""))) == [[value, "1"], ["next", "2"]]
    assert buffer.getvalue().endswith("next,2\n")  # "\n" line ends; only the odd row is quoted
    assert formats.parse_csv(formats.item_csv({value: [{"tag": "stamp", "confidence": 0.9}], "k2": []})) == {
        value: [("stamp", 0.9)], "k2": []}
    buffer = io.StringIO()
    writer = csv_dict_writer(buffer, ["a", "b"])
    writer.writeheader()
    writer.writerow({"a": value, "b": "z"})
    assert list(csv.DictReader(io.StringIO(buffer.getvalue(), newline=""))) == [{"a": value, "b": "z"}]
    text = corrections.to_text([("/img/1.jpg", "book", "stamp", "confirm", value, "2026-12-05T08:00:00+00:00")])
    assert list(csv.reader(io.StringIO(text, newline="")))[1][4] == value


@pytest.mark.parametrize("text,web", [("https://example.org/a", True), ("HTTP://EXAMPLE.ORG", True),
                                      ("hTTpS://x", True), ("javascript:alert(1)", False), ("file:///etc/passwd", False),
                                      ("data:text/html,x", False), ("https:/x", False), ("", False), (None, False),
                                      (" https://x", False), ("httpx://x", False)])
def test_is_web_url_takes_http_and_https_in_any_case_only(text, web):
    assert files.is_web_url(text) is web


def test_csv_rows_end_in_a_newline_quoted_or_not():
    import io

    text = io.StringIO()
    writer = files.CsvWriter(text)
    writer.writerows([["a", "b"], ["p\r1", 2]])
    dict_text = io.StringIO()
    rows = files.csv_dict_writer(dict_text, ["key", "n"])
    rows.writeheader()
    rows.writerow({"key": "q\r2", "n": 3})
    assert text.getvalue() == 'a,b\n"p\r1","2"\n'
    assert dict_text.getvalue() == 'key,n\n"q\r2","3"\n'
