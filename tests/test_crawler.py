"""The crawler against a loopback emulator of the NDL API and IIIF server (tests/ndl_emulator.py)."""

import csv
import errno
import hashlib
import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import _thread

import pytest
from PIL import Image

import newdataclawer
from tagestimate.labels import LABELS
from tagestimate import files, manifest, ndl
from tagestimate.crawl import progress, rebuild, settings, tagged
from tagestimate.errors import EXIT_ERROR
from conftest import ROOT, docs_flag_table, restore_default_sigint
from tests.ndl_emulator import NdlEmulator

SHARED_METADATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                               "ndl-imagelabel-samples", "metadata.csv")
INDEX_HEADER = ["ファイル名", "ラベル名", "ファイルのディレクトリパス", "タイトル", "資料のURL",
                "当該画像のフルサイズのURL(IIIF Image API)"]
IIIF_PATH = re.compile(r"/api/iiif/[0-9A-Za-z_-]+/R\d{7}/pct:[\d.]+,[\d.]+,[\d.]+,[\d.]+/,256/0/default\.jpg")


def make_records(tag, count, start=0, confidence=0.9, extra_tags=()):
    """`count` distinct API records carrying `tag`, pids from `start`."""
    records = []
    for n in range(start, start + count):
        pid = str(1000000 + n)
        records.append({
            "id": f"{pid}_{n % 50 + 1}_0", "pid": pid, "page": n % 50 + 1, "title": f"本 {n}",
            "x": 10.0 + n % 7, "y": 20.5, "w": 40.0, "h": 50.25,
            "graphictags": [{"tagname": tag, "confidence": confidence}]
                           + [{"tagname": t, "confidence": 0.5} for t in extra_tags],
            "unexpected": {"ignored": True},
        })
    return records


FAST = ["--delay", "0", "--timeout", "1", "--retries", "2", "--backoff", "0.01", "--max-wait", "0.5"]


def run_cli(emulator, out, *args):
    return newdataclawer.main(["--out", str(out), "--api-base", emulator.api_base,
                               "--iiif-base", emulator.iiif_base, *FAST, *args])


def last_line(err):
    """The last line a script wrote to stderr: where its one-sentence error must be, whole."""
    return err.splitlines()[-1] if err else ""


def options(emulator, out, **changes):
    values = dict(out=str(out), api_base=emulator.api_base, iiif_base=emulator.iiif_base, delay=0.0,
                  timeout=1.0, retries=2, backoff=0.01, max_wait=0.5)
    values.update(changes)
    return settings.CrawlOptions(**values)


def read_manifest(out):
    with open(os.path.join(out, manifest.MANIFEST_NAME), encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == manifest.MANIFEST_FIELDS
        return list(reader)


def image_files(out):
    """{(folder, id)} of every .jpg under out; fail on anything but those and the manifest."""
    found = set()
    for folder, _, names in os.walk(out):
        for name in names:
            if folder == str(out):
                assert name == manifest.MANIFEST_NAME, f"unexpected file {name} in {out}"
            else:
                assert name.endswith(".jpg") and not name.startswith("."), f"unexpected file {folder}/{name}"
                found.add((os.path.basename(folder), name[:-4]))
    return found


def assert_consistent(out):
    """Manifest and folders agree, ids are unique, every file is a complete JPEG with its recorded hash."""
    rows = read_manifest(out)
    assert {(row["folder"], row["id"]) for row in rows} == image_files(out)
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        path = os.path.join(out, row["folder"], row["id"] + ".jpg")
        with open(path, "rb") as handle:
            data = handle.read()
        ndl.check_jpeg(data)
        if row["source_url"]:
            assert row["sha256"] == hashlib.sha256(data).hexdigest() and int(row["bytes"]) == len(data)
    return rows


@pytest.fixture
def out(tmp_path):
    return tmp_path / "dataset"


def test_tagged_crawl_fills_folders_and_manifest(out, capsys):
    records = make_records("graphic_map", 15) + make_records("stamp", 15, start=100, confidence=0.8)
    with NdlEmulator(records) as emulator:
        assert run_cli(emulator, out, "--tag", "graphic_map", "--tag", "stamp", "--per-class", "6") == 0
        api_paths = [path for service, path in emulator.requests if service == "api"]
        iiif_paths = [path for service, path in emulator.requests if service == "iiif"]
    rows = assert_consistent(out)
    assert sorted(os.listdir(out)) == ["graphic_map", "manifest.csv", "stamp"]
    assert len(os.listdir(out / "graphic_map")) == 6 and len(os.listdir(out / "stamp")) == 6
    assert all("f-graphictags.tagname=" in path and "size=20" in path for path in api_paths)
    assert iiif_paths and all(IIIF_PATH.fullmatch(path) for path in iiif_paths)
    by_id = {record["id"]: record for record in records}
    for row in rows:
        record = by_id[row["id"]]
        assert row["folder"] == record["graphictags"][0]["tagname"]
        assert float(row["confidence"]) == record["graphictags"][0]["confidence"]
        assert (row["pid"], int(row["page"]), row["title"]) == (record["pid"], record["page"], record["title"])
        assert row["source_url"].startswith(emulator.iiif_base + "/" + record["pid"] + "/R")
        with Image.open(out / row["folder"] / (row["id"] + ".jpg")) as image:
            assert image.format == "JPEG" and image.height == 256
    summary = capsys.readouterr().out
    assert re.search(r"graphic_map\s+6\s+\d+\s+0\s+0\s+0\s+0\s+6\s+full", summary)


def test_resume_adds_nothing_twice(out):
    with NdlEmulator(make_records("stamp", 12)) as emulator:
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "5") == 0
        first = read_manifest(out)
        requests_before = len(emulator.requests)
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "5") == 0
        assert len(emulator.requests) == requests_before  # already full: no call at all
        assert read_manifest(out) == first
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "9") == 0
    rows = assert_consistent(out)
    assert len(rows) == 9 and rows[:5] == first


def test_start_reconciles_after_a_crash(out):
    with NdlEmulator(make_records("stamp", 12)) as emulator:
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "4") == 0
        rows = read_manifest(out)
        os.remove(out / "stamp" / (rows[0]["id"] + ".jpg"))       # row without file
        for leftover in (out / "stamp" / "1_1_0.jpg", out / manifest.MANIFEST_NAME):  # killed mid-write
            with open(files.temporary_path(leftover), "wb") as handle:
                handle.write(b"partial")
        os.replace(out / "stamp" / (rows[1]["id"] + ".jpg"), out / "stamp" / "5_5_0.jpg")  # file without row
        with open(out / manifest.MANIFEST_NAME, "a", encoding="utf-8") as handle:
            handle.write("9_9_0,9,9,1.0")                         # torn last line
        summary = tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=4)
    rows_after = assert_consistent(out)
    assert len(rows_after) == 4 and summary.folders["stamp"].total == 4
    adopted = [row for row in rows_after if row["id"] == "5_5_0"]
    assert adopted and adopted[0]["source_url"] == "" and (adopted[0]["pid"], adopted[0]["page"]) == ("5", "5")
    assert {rows[2]["id"], rows[3]["id"]} <= {row["id"] for row in rows_after}
    assert summary.folders["stamp"].saved == 1  # 2 kept + 1 adopted + 1 new


def test_a_reconciliation_is_written_even_when_nothing_new_is_saved(out):
    with NdlEmulator(make_records("stamp", 6)) as emulator:
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "3") == 0
        lines = (out / manifest.MANIFEST_NAME).read_text(encoding="utf-8").splitlines(keepends=True)
        (out / manifest.MANIFEST_NAME).write_text("".join(lines[:-1]), encoding="utf-8")  # the last row lost
        requests_before = len(emulator.requests)
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "3") == 0
        assert len(emulator.requests) == requests_before  # full with the adopted file: nothing fetched
    assert len(assert_consistent(out)) == 3


def test_a_manifest_that_cannot_be_written_is_one_sentence(out, monkeypatch, capsys):
    def disk_full(self, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest.Manifest, "_rewrite", disk_full)
    with NdlEmulator(make_records("stamp", 3)) as emulator:
        assert run_cli(emulator, out, "--tag", "stamp", "--per-class", "2") == EXIT_ERROR
    err = capsys.readouterr().err
    assert last_line(err) == (f"error: cannot write {out / manifest.MANIFEST_NAME}: {os.strerror(errno.ENOSPC)}; "
                              f"check free space and permissions of --out")
    assert "Traceback" not in err


def test_files_are_written_with_the_shared_atomic_helper(out, monkeypatch):
    written = []
    shared = files.write_atomic

    def spy(path, data):
        written.append(os.path.relpath(path, out))
        return shared(path, data)

    monkeypatch.setattr(files, "write_atomic", spy)
    with NdlEmulator(make_records("stamp", 6)) as emulator:
        tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=3)
    rows = assert_consistent(out)
    assert written.count(manifest.MANIFEST_NAME) == 1  # a new manifest is written whole, atomically
    assert sorted(set(written) - {manifest.MANIFEST_NAME}) == sorted(os.path.join("stamp", row["id"] + ".jpg")
                                                                    for row in rows)


def write_index(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(INDEX_HEADER)
        for name, label, pid, page, box in rows:
            url = f"https://www.dl.ndl.go.jp/api/iiif/{pid}/R{page:07d}/pct:{box}/full/0/default.jpg"
            writer.writerow([name, label, f"{label}\\{name}", "題名, 第1巻",
                             f"https://dl.ndl.go.jp/info:ndljp/pid/{pid}", url])


def test_rebuild_from_metadata(out, tmp_path):
    index = tmp_path / "metadata.csv"
    write_index(index, [
        ("1017141_454_0.jpg", "graphic_graph", "1017141", 454, "15.0,20.1,28.5,66.7"),
        ("1017141_455_0.jpg", "graphic_graph", "1017141", 455, "50.6,27.2,27.2,60.3"),
        ("1032125_21_0.jpg", "graphic_graph", "1032125", 21, "23.4,31.6,20.1,17.6"),
        ("808179_7_0.jpg", "stamp", "808179", 7, "0.0,0.0,100.0,100.0"),
        ("825268_2_0.jpg", "stamp", "825268", 2, "5,5,10,10"),
        ("900_1_0.jpg", "picture_indoor", "900", 1, "1,1,50,50"),
        ("../../evil.jpg", "stamp", "1", 1, "1,1,5,5"),
        ("ok_1_0.jpg", "../escape", "1", 1, "1,1,5,5"),
        ("bad_1_0.jpg", "stamp", "..", 1, "1,1,5,5"),
    ])
    with NdlEmulator() as emulator:
        summary = rebuild.rebuild_from_metadata(options(emulator, out), str(index), labels=["graphic_graph", "stamp"],
                                                limit=2)
        iiif_paths = [path for service, path in emulator.requests if service == "iiif"]
        assert run_cli(emulator, out, "--from-metadata", str(index), "--label", "graphic_graph", "--label", "stamp",
                       "--limit", "2") == 0
        assert len(emulator.requests) == len(iiif_paths)  # the re-run fetched nothing
    rows = assert_consistent(out)
    assert sorted((row["folder"], row["id"]) for row in rows) == [
        ("graphic_graph", "1017141_454_0"), ("graphic_graph", "1017141_455_0"),
        ("stamp", "808179_7_0"), ("stamp", "825268_2_0")]
    assert sorted(iiif_paths) == sorted([
        "/api/iiif/1017141/R0000454/pct:15.0,20.1,28.5,66.7/,256/0/default.jpg",
        "/api/iiif/1017141/R0000455/pct:50.6,27.2,27.2,60.3/,256/0/default.jpg",
        "/api/iiif/808179/R0000007/pct:0.0,0.0,100.0,100.0/,256/0/default.jpg",
        "/api/iiif/825268/R0000002/pct:5.0,5.0,10.0,10.0/,256/0/default.jpg"])
    assert summary.folders["stamp"].rejected == 2 and summary.folders["-"].rejected == 1
    assert all(row["title"] == "題名, 第1巻" and row["confidence"] == "" for row in rows)
    assert not os.path.exists(tmp_path / "evil.jpg") and not os.path.exists(tmp_path / "escape")


def test_rebuild_names_an_unknown_label(out, tmp_path, capsys):
    index = tmp_path / "metadata.csv"
    write_index(index, [("1_1_0.jpg", "stamp", "1", 1, "1,1,5,5")])
    with NdlEmulator() as emulator:
        assert run_cli(emulator, out, "--from-metadata", str(index), "--label", "stmp") == EXIT_ERROR
    assert "'stmp' is not in" in last_line(capsys.readouterr().err)


@pytest.mark.skipif(not os.path.isfile(SHARED_METADATA), reason="../shared/data is absent (only in the dev checkout)")
def test_the_real_index_parses_completely():
    rows, rejected = rebuild.read_index(SHARED_METADATA)
    assert len(rows) == 6405 and not rejected
    assert rows[0] == rebuild.IndexRow("1017141_454_0", "graphic_graph", "1017141", 454, (15.0, 20.1, 28.5, 66.7),
                                       "経済学全集")


@pytest.mark.parametrize("fault, params", [
    ("status", {"status": 503}), ("status", {"status": 500}), ("status", {"status": 429, "retry_after": "0"}),
    ("cut", {}), ("stall", {"seconds": 3.0}),
])
def test_transient_image_faults_are_retried(out, fault, params):
    with NdlEmulator(make_records("stamp", 3)) as emulator:
        emulator.fail(fault, times=2, **params)
        summary = tagged.crawl_tagged(options(emulator, out, timeout=0.3), ["stamp"], per_class=3)
        assert emulator.pending_faults() == 0
    assert summary.folders["stamp"].saved == 3 and summary.folders["stamp"].failed == 0
    assert len(assert_consistent(out)) == 3


def test_image_given_up_after_retries_is_counted_and_the_crawl_goes_on(out):
    records = make_records("stamp", 4)
    with NdlEmulator(records) as emulator:
        emulator.fail("status", times=3, match=f"/{records[0]['pid']}/", status=502)
        summary = tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=3)
    stats = summary.folders["stamp"]
    assert stats.failed == 1 and stats.saved == 3
    assert records[0]["id"] not in {row["id"] for row in assert_consistent(out)}


@pytest.mark.parametrize("fault", ["truncated_jpeg", "html200"])
def test_a_200_that_is_not_an_image_is_not_saved(out, fault):
    records = make_records("stamp", 4)
    with NdlEmulator(records) as emulator:
        emulator.fail(fault, match=f"/{records[0]['pid']}/")
        summary = tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=3)
    assert summary.folders["stamp"].failed == 1
    assert records[0]["id"] not in {row["id"] for row in assert_consistent(out)}


@pytest.mark.parametrize("content_length", [False, True])
def test_oversize_image_is_dropped_without_reading_it_whole(out, content_length):
    records = make_records("stamp", 3)
    size = 64 * 1024 * 1024
    with NdlEmulator(records) as emulator:
        emulator.fail("oversize", match=f"/{records[0]['pid']}/", size=size, content_length=content_length)
        summary = tagged.crawl_tagged(options(emulator, out, max_bytes=1024 * 1024), ["stamp"], per_class=2)
        deadline = time.monotonic() + 5
        while not emulator.oversize_sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emulator.oversize_sent and emulator.oversize_sent[0] < size
    assert summary.folders["stamp"].failed == 1 and summary.folders["stamp"].saved == 2
    assert records[0]["id"] not in {row["id"] for row in assert_consistent(out)}


def test_retry_after_is_honoured_and_capped(out):
    with NdlEmulator(make_records("stamp", 2)) as emulator:
        emulator.fail("status", service="api", status=429, retry_after="1")
        started = time.monotonic()
        tagged.crawl_tagged(options(emulator, out, max_wait=5.0), ["stamp"], per_class=1)
        assert time.monotonic() - started >= 1.0
        emulator.fail("status", service="api", status=503, retry_after="3600")
        started = time.monotonic()
        summary = tagged.crawl_tagged(options(emulator, out, max_wait=0.2), ["stamp"], per_class=2)
        assert time.monotonic() - started < 5
    assert summary.folders["stamp"].saved == 1


@pytest.mark.parametrize("fault", ["invalid_json", "non_list"])
def test_bad_api_answers_are_skipped_with_a_warning(out, fault, caplog):
    with NdlEmulator(make_records("stamp", 5)) as emulator:
        emulator.fail(fault, service="api", times=2)
        summary = tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=3)
    assert summary.folders["stamp"].api_errors == 2 and summary.folders["stamp"].saved == 3
    assert "API answer skipped" in caplog.text


def test_hostile_and_incomplete_records_are_rejected(out, tmp_path):
    good = make_records("stamp", 2)
    template = dict(good[0], pid="1", page=1)
    hostile = [dict(template, id=bad) for bad in ("../../evil", "..", "a/b", "x" * 65, "a\0b", "/abs")]
    hostile += [dict(template, id="1_1_0", pid="../up"), {k: v for k, v in template.items() if k != "x"}, "nonsense"]
    with NdlEmulator(good + hostile) as emulator:
        summary = tagged.crawl_tagged(options(emulator, out, max_idle=5), ["stamp"], per_class=3)
        iiif_paths = [path for service, path in emulator.requests if service == "iiif"]
    stats = summary.folders["stamp"]
    assert stats.saved == 2 and stats.rejected > 0 and stats.status.startswith("ran dry")
    assert all(path.startswith(("/api/iiif/1000000/", "/api/iiif/1000001/")) for path in iiif_paths)
    assert sorted(os.listdir(tmp_path)) == ["dataset"] and sorted(os.listdir(out)) == ["manifest.csv", "stamp"]
    assert len(assert_consistent(out)) == 2


def test_a_hostile_record_drawn_again_and_again_is_warned_about_once(out, caplog):
    good = make_records("stamp", 2)
    hostile = dict(good[0], id="../../evil", pid="1", page=1)
    with NdlEmulator(good + [hostile]) as emulator:
        summary = tagged.crawl_tagged(options(emulator, out, max_idle=3), ["stamp"], per_class=3)
    warnings = [record.getMessage() for record in caplog.records if "record rejected" in record.getMessage()]
    assert warnings == ["tag stamp: record rejected: id '../../evil' is not [0-9A-Za-z_-]{1,64}"]
    assert summary.folders["stamp"].rejected > 3  # each draw is counted: 4 calls of 20 draws from 3 records


def test_without_a_terminal_progress_is_logged_every_n_images_and_at_the_end(out, caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY", 2)
    caplog.set_level(logging.INFO, logger=progress.__name__)
    with NdlEmulator(make_records("stamp", 5) + make_records("graphic_map", 3, start=100)) as emulator:
        tagged.crawl_tagged(options(emulator, out, max_idle=2), ["stamp", "graphic_map"], per_class=5)
    lines = [record.getMessage() for record in caplog.records if record.name == progress.__name__]
    assert lines == ["stamp: 2/5 images", "stamp: 4/5 images", "stamp: 5/5 images; finished",
                     "graphic_map: 2/5 images", "graphic_map: 3/5 images; finished"]


def test_on_a_terminal_the_bar_alone_shows_progress(out, caplog, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(progress, "LOG_EVERY", 1)
    caplog.set_level(logging.INFO, logger=progress.__name__)
    with NdlEmulator(make_records("stamp", 3)) as emulator:
        tagged.crawl_tagged(options(emulator, out), ["stamp"], per_class=3)
    assert not [record for record in caplog.records if record.name == progress.__name__]
    assert "stamp: 100%" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_min_confidence_keeps_only_confident_records(out):
    records = make_records("picture_person", 6, confidence=0.3) + make_records("picture_person", 6, start=50,
                                                                              confidence=0.9)
    with NdlEmulator(records) as emulator:
        summary = tagged.crawl_tagged(options(emulator, out), ["picture_person"], per_class=4, min_confidence=0.5)
    rows = assert_consistent(out)
    assert len(rows) == 4 and all(float(row["confidence"]) == 0.9 for row in rows)
    assert summary.folders["picture_person"].skipped > 0


def test_records_without_tags_go_to_unknown(out):
    untagged = [dict(record, graphictags=[]) for record in make_records("stamp", 3, start=200)]
    with NdlEmulator(make_records("stamp", 3) + untagged, filter_tags=False) as emulator:
        summary = tagged.crawl_tagged(options(emulator, out, max_idle=4), ["stamp"], per_class=3)
    rows = assert_consistent(out)
    assert {row["folder"] for row in rows} == {"stamp", tagged.UNKNOWN_FOLDER}
    assert all(row["confidence"] == "" for row in rows if row["folder"] == tagged.UNKNOWN_FOLDER)
    assert summary.folders["stamp"].saved == 3


# Tags whose label sets strictly contain the key's (tagestimate.labels.TAG_LABELS), written out by hand.
MORE_SPECIFIC = {
    "graphic": {"graphic_graph", "graphic_map", "graphic_illustcolor"},
    "picture": {"picture_indoor", "picture_object", "picture_person", "picture_outdoor", "picture_landmark"},
    "picture_outdoor": {"picture_landmark"},
}


def test_more_specific_tags_and_order():
    assert {tag: set(tagged.more_specific_tags(tag)) for tag in LABELS if tagged.more_specific_tags(tag)} == \
        MORE_SPECIFIC
    assert tagged.more_specific_tags("graphic_illust") == tagged.more_specific_tags("graphic")
    assert tagged.more_specific_tags("no_such_tag") == frozenset()
    assert tagged.most_specific_first(["stamp", "picture", "picture_outdoor", "picture_landmark", "graphic_map"]) == \
        ["picture_landmark", "picture_outdoor", "graphic_map", "stamp", "picture"]


def test_a_parent_tag_leaves_records_with_a_more_specific_tag_to_that_tag(out):
    parent_only = make_records("graphic", 5)
    maps = make_records("graphic", 5, start=100, extra_tags=("graphic_map",))
    outdoor_only = make_records("picture", 5, start=200, extra_tags=("picture_outdoor",))
    landmarks = make_records("picture", 5, start=300, extra_tags=("picture_outdoor", "picture_landmark"))
    records = parent_only + maps + outdoor_only + landmarks
    with NdlEmulator(records) as emulator:  # parents first, the order that used to misfile them
        summary = tagged.crawl_tagged(options(emulator, out, max_idle=4),
                                      ["graphic", "picture", "picture_outdoor", "graphic_map", "picture_landmark"],
                                      per_class=5)
    folders = {}
    for row in assert_consistent(out):
        folders.setdefault(row["folder"], set()).add(row["id"])
    assert folders == {"graphic": {r["id"] for r in parent_only}, "graphic_map": {r["id"] for r in maps},
                       "picture_outdoor": {r["id"] for r in outdoor_only},
                       "picture_landmark": {r["id"] for r in landmarks}}
    assert summary.folders["graphic"].skipped > 0 and summary.folders["picture_outdoor"].skipped > 0
    assert summary.folders["picture"].saved == 0 and summary.folders["picture"].status.startswith("ran dry")
    assert [summary.folders[tag].status for tag in ("graphic", "picture_outdoor", "graphic_map", "picture_landmark")] \
        == ["full"] * 4


def test_without_tag_the_most_specific_tags_are_crawled_first(out):
    records = []
    for number, tag in enumerate(LABELS):
        records += make_records(tag, 1, start=100 * number)
    with NdlEmulator(records) as emulator:
        assert run_cli(emulator, out, "--per-class", "1") == 0
        order = [re.search(r"f-graphictags\.tagname=(\w+)", path)[1]
                 for service, path in emulator.requests if service == "api"]
    assert order == ["picture_landmark", "graphic_graph", "graphic_map", "graphic_illustcolor", "picture_indoor",
                     "picture_object", "picture_person", "picture_outdoor", "graphic", "picture", "stamp"]
    assert len(assert_consistent(out)) == len(LABELS)


def test_a_tag_that_runs_dry_is_reported(out, caplog):
    with NdlEmulator(make_records("graphic_map", 3)) as emulator:
        summary = tagged.crawl_tagged(options(emulator, out, max_idle=3), ["graphic_map"], per_class=10)
    assert summary.folders["graphic_map"].total == 3
    assert summary.folders["graphic_map"].status == "ran dry: 3 calls in a row brought nothing new"
    assert "graphic_map ran dry" in caplog.text


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("out_exists", [False, True])
def test_api_unreachable_at_start_is_one_sentence_and_creates_nothing(out, capsys, out_exists):
    if out_exists:
        out.mkdir()
    base = f"http://127.0.0.1:{_closed_port()}/dl/api"
    assert newdataclawer.main(["--out", str(out), "--api-base", base, "--tag", "stamp", *FAST]) == EXIT_ERROR
    err = capsys.readouterr().err
    # The last line starts the message: a message of several lines would end on another line.
    assert last_line(err).startswith(f"error: cannot reach the NDL API at {base}")
    assert "Traceback" not in err
    assert (os.listdir(out) == []) if out_exists else not out.exists()


def test_an_unusable_out_is_refused_before_any_request(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    with NdlEmulator(make_records("stamp", 3)) as emulator:
        assert run_cli(emulator, tmp_path / "file" / "dataset", "--tag", "stamp", "--per-class", "2") == EXIT_ERROR
        assert emulator.requests == []
    message = last_line(capsys.readouterr().err)
    assert message.startswith("error: cannot use ") and "check --out" in message


def test_iiif_unreachable_at_start_is_one_sentence(out, tmp_path, capsys):
    index = tmp_path / "metadata.csv"
    write_index(index, [("1_1_0.jpg", "stamp", "1", 1, "1,1,5,5"), ("2_1_0.jpg", "stamp", "2", 1, "1,1,5,5")])
    base = f"http://127.0.0.1:{_closed_port()}/iiif"
    assert newdataclawer.main(["--out", str(out), "--from-metadata", str(index), "--iiif-base", base,
                               *FAST]) == EXIT_ERROR
    assert last_line(capsys.readouterr().err).startswith(f"error: cannot reach the IIIF server at {base}")
    assert not out.exists()


def test_ctrl_c_leaves_no_partial_file(out, python_sigint_handler):
    seen = []

    def interrupt_mid_download(service, path):
        seen.append(service)
        if seen.count("iiif") == 6:  # downloads 5 and 6 are in flight (0.1 s each)
            _thread.interrupt_main()

    with NdlEmulator(make_records("stamp", 40), latency=0.1, on_request=interrupt_mid_download) as emulator:
        code = run_cli(emulator, out, "--tag", "stamp", "--per-class", "40")
        requested = emulator.count("iiif")
    assert code == 130
    rows = assert_consistent(out)
    assert 2 <= len(rows) < requested


def test_ctrl_c_of_the_script_exits_130_with_the_summary_and_no_traceback(out):
    with NdlEmulator(make_records("stamp", 40), latency=0.1) as emulator:
        # pytest may run as a background job, with SIGINT ignored; the child needs Python's handler.
        child = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "newdataclawer.py"), "--out", str(out), "--api-base", emulator.api_base,
             "--iiif-base", emulator.iiif_base, *FAST, "--tag", "stamp", "--per-class", "40"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_default_sigint)
        deadline = time.monotonic() + 30
        while emulator.count("iiif") < 6 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stdout.splitlines()[-1].endswith("; interrupted: run the same command again to resume")
    assert re.search(r"^stamp\s+(\d+)\s.*\sinterrupted$", stdout, re.MULTILINE)
    assert 0 < len(assert_consistent(out)) < 40


def test_ctrl_c_before_the_crawl_starts_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rebuild, "read_index", interrupted)
    assert newdataclawer.main(["--out", str(tmp_path / "out"), "--from-metadata", "metadata.csv"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("interrupted: ") and "run the same command again to resume" in captured.err


def test_help_answers_without_importing_tensorflow():
    probe = ("import runpy, sys\n"
             "sys.argv = ['newdataclawer.py', '--help']\n"
             "try:\n    runpy.run_path('newdataclawer.py', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'openvino', 'cv2'}))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--per-class" in result.stdout, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


# docs/crawling.md's flag table is the contract: flag -> (default as parsed, the table's default cell).
DOCUMENTED_DEFAULTS = {
    "--tag": (None, "all known tags, most specific first"),
    "--per-class": (500, "500"),
    "--min-confidence": (0.0, "0.0"),
    "--max-idle": (20, "20"),
    "--batch": (20, "20"),
    "--delay": (1.0, "1"),
    "--api-base": ("https://lab.ndl.go.jp/dl/api", "`https://lab.ndl.go.jp/dl/api`"),
    "--from-metadata": (None, "–"),
    "--label": (None, "all"),
    "--limit": (None, "all"),
    "--pid": (None, "–"),
    "--iiif-manifest": (None, "–"),
    "--from-corrections": (None, "–"),
    "--out": (None, "`datasetpdm`; `input` with `--pid` or `--iiif-manifest`"),  # None: chosen by the mode
    "--iiif-base": ("https://www.dl.ndl.go.jp/api/iiif", "`https://www.dl.ndl.go.jp/api/iiif`"),
    "--size": (",256", "`,256`"),
    "--workers": (4, "4"),
    "--timeout": (30.0, "30"),
    "--retries": (5, "5"),
    "--backoff": (1.0, "1"),
    "--max-wait": (60.0, "60"),
    "--max-bytes": (20 * 1024 * 1024, "`20MB`"),
}


def readme_crawler_defaults():
    """{flag: default cell} from the flags table of docs/crawling.md (the crawler's page)."""
    return docs_flag_table("crawling.md")


def test_cli_defaults_are_the_documented_ones():
    parser = newdataclawer.build_parser()
    parsed = vars(parser.parse_args([]))
    flags = {action.option_strings[-1]: action.dest for action in parser._actions if action.dest != "help"}
    assert set(flags) == set(DOCUMENTED_DEFAULTS)
    assert {flag: parsed[dest] for flag, dest in flags.items()} == \
        {flag: default for flag, (default, _) in DOCUMENTED_DEFAULTS.items()}
    # The README may name a renamed flag by its new or its old name (--parallel-downloads / --workers).
    readme = {parser._option_string_actions[flag].dest: cell for flag, cell in readme_crawler_defaults().items()}
    assert readme == {flags[flag]: cell for flag, (_, cell) in DOCUMENTED_DEFAULTS.items()}
    library = settings.CrawlOptions()  # what a caller of crawl.crawl_tagged gets
    assert (library.out, library.api_base, library.iiif_base, library.size, library.batch, library.workers,
            library.delay, library.timeout, library.retries, library.backoff, library.max_wait, library.max_bytes,
            library.max_idle) == ("datasetpdm", "https://lab.ndl.go.jp/dl/api", "https://www.dl.ndl.go.jp/api/iiif",
                                  ",256", 20, 4, 1.0, 30.0, 5, 1.0, 60.0, 20 * 1024 * 1024, 20)
    help_text = " ".join(parser.format_help().split())
    assert "default: ,256" in help_text and "instead of the index's full size" in help_text
    assert "records that also carry a more specific tag are left for that tag's folder" in help_text


@pytest.mark.parametrize("argv", [["--tag", "stmp"], ["--batch", "101"], ["--workers", "0"], ["--size", "256"],
                                  ["--api-batch", "101"], ["--parallel-downloads", "65"], ["--timeout", "0"],
                                  ["--min-confidence", "1.5"], ["--max-bytes", "lots"], ["--api-base", "lab.ndl"],
                                  ["--from-metadata", "m.csv", "--tag", "stamp"], ["--limit", "3"]])
def test_cli_rejects_bad_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        newdataclawer.main(argv)
    assert exit_info.value.code == 2


def test_the_cli_defaults_are_the_crawl_defaults():
    args = newdataclawer.build_parser().parse_args([])
    assert newdataclawer.crawl_options(args) == settings.CrawlOptions()
    assert (args.per_class, args.min_confidence) == (settings.PER_CLASS, settings.MIN_CONFIDENCE)
    assert settings.CrawlOptions().max_bytes == 20 * 1024 * 1024


def test_cli_tag_choices_are_the_known_labels():
    assert newdataclawer.build_parser().parse_args(["--tag", LABELS[-1]]).tag == [LABELS[-1]]
    assert newdataclawer.byte_size("500KB") == 500 * 1024 and newdataclawer.byte_size("7") == 7


def test_renamed_flags_keep_their_old_names_as_aliases():
    parser = newdataclawer.build_parser()
    new = parser.parse_args(["--parallel-downloads", "7", "--api-batch", "9"])
    old = parser.parse_args(["--workers", "7", "--batch", "9"])
    assert (new.workers, new.batch) == (old.workers, old.batch) == (7, 9)
    usage = " ".join(parser.format_usage().split())
    assert "[--parallel-downloads N]" in usage and "[--api-batch N]" in usage  # the preferred names
    assert "--workers" not in usage and "--batch " not in usage
    text = " ".join(parser.format_help().split())
    assert "--parallel-downloads N, --workers N images downloaded at once" in text
    assert "--api-batch N, --batch N records asked for per API call" in text


@pytest.mark.parametrize("argv, words", [
    (["--pid", "1054192", "--per-class", "5"], "--per-class applies to tagged mode only"),
    (["--iiif-manifest", "m.json", "--min-confidence", "0.5"], "--min-confidence applies to tagged mode only"),
    (["--from-metadata", "m.csv", "--per-class", "5"], "not to --from-metadata"),
])
def test_tagged_mode_flags_are_refused_in_the_other_modes(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        newdataclawer.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert words in error and error.endswith("leave it out")


def test_tagged_mode_flags_pass_in_tagged_mode():
    from tagestimate.commands import crawl as command

    parser = newdataclawer.build_parser()
    for argv in (["--tag", "stamp", "--per-class", "5"], ["--per-class", "5", "--min-confidence", "0.5"]):
        command.check_modes(parser, parser.parse_args(argv), {"per_class", "min_confidence"})  # no exit
    assert cli_given(["--pid", "1", "--per-class", "500"]) == {"pid", "per_class"}  # given, even at the default


def cli_given(argv):
    from tagestimate import cli

    return cli.given_flags(newdataclawer.build_parser, argv)


@pytest.mark.parametrize("url, words", [
    ("ftp://lab.ndl.go.jp/dl/api", "is a ftp: URL; use http or https"),
    ("https://lab.ndl.go.jp/dl/my api", "contains a space"),
    ("lab.ndl.go.jp/dl/api", "is not an absolute URL"),
])
def test_base_urls_must_be_http_and_say_what_is_wrong(url, words, capsys):
    for flag in ("--api-base", "--iiif-base"):
        with pytest.raises(SystemExit) as exit_info:
            newdataclawer.main([flag, url])
        assert exit_info.value.code == 2
        assert f"argument {flag}: {url!r} {words}" in capsys.readouterr().err
    assert newdataclawer.build_parser().parse_args(["--api-base", "HTTP://example.org/api/"]).api_base == \
        "HTTP://example.org/api"
