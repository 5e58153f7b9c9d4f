"""Whole books into {out}/{folder}/: by NDL pid (--pid) and by IIIF manifest (--iiif-manifest),
against the loopback emulator (tests/ndl_emulator.py)."""

import csv
import hashlib
import json
import os

import pytest
from PIL import Image

import newdataclawer
from tagestimate import httpclient, iiif, manifest, ndl
from tests.ndl_emulator import NdlEmulator, v2_manifest, v3_manifest

FAST = ["--delay", "0", "--timeout", "1", "--retries", "1", "--backoff", "0.01", "--max-wait", "0.2"]


def book_records(pid, pages, per_page=2, tags=("picture",)):
    """The API's records of one book: `per_page` illustrations on each page."""
    records = []
    for page in pages:
        for n in range(per_page):
            records.append({"id": f"{pid}_{page}_{n}", "pid": pid, "page": page, "title": f"本 {pid}",
                            "x": 10.0 + 40 * n, "y": 20.5, "w": 35.0, "h": 50.25,
                            "graphictags": [{"tagname": tag, "confidence": 0.9 - 0.1 * i}
                                            for i, tag in enumerate(tags)]})
    return records


def read_rows(out):
    with open(os.path.join(out, manifest.MANIFEST_NAME), encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == manifest.EXTENDED_FIELDS
        return list(reader)


def files_under(out):
    """{(folder, name)} of every file below `out`'s sub-folders."""
    return {(os.path.basename(folder), name) for folder, _, names in os.walk(out) if folder != str(out)
            for name in names}


def crawl(emulator, out, *args):
    return newdataclawer.main(["--out", str(out), "--api-base", emulator.api_base, "--iiif-base", emulator.iiif_base,
                               *FAST, *args])


def test_pid_crawl_fetches_exactly_that_books_illustrations(tmp_path, capsys):
    wanted = book_records("1054192", range(1, 9), tags=("picture", "picture_indoor"))
    other = book_records("2000001", range(1, 5))
    out = tmp_path / "input"
    with NdlEmulator(wanted + other) as emulator:
        assert crawl(emulator, out, "--pid", "1054192", "--max-idle", "3") == 0
        api_paths = [path for service, path in emulator.requests if service == "api"]
    assert all("f-pid=1054192" in path and "f-graphictags" not in path for path in api_paths)
    assert files_under(out) == {("1054192", record["id"] + ".jpg") for record in wanted}
    rows = read_rows(out)
    by_id = {record["id"]: record for record in wanted}
    assert sorted(row["id"] for row in rows) == sorted(by_id)
    for row in rows:
        record = by_id[row["id"]]
        assert (row["folder"], row["pid"], int(row["page"])) == ("1054192", "1054192", record["page"])
        assert [float(row[k]) for k in "xywh"] == [record[k] for k in "xywh"]
        assert json.loads(row["tags"]) == {"picture": 0.9, "picture_indoor": 0.8}
        assert row["source_url"] == ndl.iiif_url(emulator.iiif_base, "1054192", record["page"],
                                                 ndl.pct_region(*(record[k] for k in "xywh")), ",256")
        data = (out / "1054192" / (row["id"] + ".jpg")).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert "1054192" in capsys.readouterr().out


def test_pid_crawl_resumes_and_rejects_other_books_and_hostile_ids(tmp_path):
    wanted = book_records("1054192", range(1, 4))
    hostile = dict(wanted[0], id="../../etc/passwd")
    stray = dict(book_records("2000001", [1])[0])
    out = tmp_path / "input"
    with NdlEmulator(wanted + [hostile], filter_tags=False) as emulator:
        emulator.records.append(stray)
        emulator.draw = lambda size, tags, pids=(): [hostile, stray] + wanted  # a server ignoring f-pid
        assert crawl(emulator, out, "--pid", "1054192", "--max-idle", "2") == 0
        first = read_rows(out)
        images = emulator.count("iiif")
        assert crawl(emulator, out, "--pid", "1054192", "--max-idle", "2") == 0
        assert emulator.count("iiif") == images  # nothing fetched twice
    assert read_rows(out) == first
    assert files_under(out) == {("1054192", record["id"] + ".jpg") for record in wanted}
    assert not os.path.exists(tmp_path / "etc")


def test_manifest_crawl_v2_and_v3(tmp_path):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["book2/manifest.json"] = v2_manifest(emulator, "book2/manifest.json", "1054192", [3, 5, 7])
        emulator.documents["book3.json"] = v3_manifest(emulator, "book3.json", 2)
        local = tmp_path / "local.json"
        local.write_text(json.dumps(v3_manifest(emulator, "elsewhere/xyz-1.json", 1)))
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("book2/manifest.json"),
                     "--iiif-manifest", emulator.doc_url("book3.json"), "--iiif-manifest", str(local)) == 0
        iiif3 = [path for service, path in emulator.requests if service == "iiif3"]
    assert files_under(out) == {("book2", "0001.jpg"), ("book2", "0002.jpg"), ("book2", "0003.jpg"),
                                ("book3", "0001.jpg"), ("book3", "0002.jpg"), ("xyz-1", "0001.jpg")}
    # each manifest as read, beside manifest.csv (tagging's annotated copy for a viewer starts from it)
    assert sorted(os.listdir(out)) == ["book2", "book2.manifest.json", "book3", "book3.manifest.json", "manifest.csv",
                                       "xyz-1", "xyz-1.manifest.json"]
    assert json.loads((out / "book2.manifest.json").read_text()) == emulator.documents["book2/manifest.json"]
    assert (out / "xyz-1.manifest.json").read_bytes() == local.read_bytes()
    assert iiif3 and all("/full/,256/0/default.jpg" in path for path in iiif3)
    rows = {(row["folder"], row["id"]): row for row in read_rows(out)}
    row = rows[("book2", "0002")]
    assert row["manifest"] == emulator.doc_url("book2/manifest.json")
    assert row["canvas"] == emulator.doc_url("book2/manifest.json") + "/canvas/5"
    assert (row["label"], row["title"], row["page"]) == ("p. 5", "本 1054192", "2")
    assert row["service"] == f"{emulator.iiif_base}/1054192/R0000005"
    assert row["source_url"] == row["service"] + "/full/,256/0/default.jpg"
    assert rows[("book3", "0002")]["label"] == "page 2"
    with Image.open(out / "book3" / "0001.jpg") as image:
        assert image.height == 256


def test_v3_service_gets_max_for_full_size(tmp_path):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["m.json"] = v3_manifest(emulator, "m.json", 1)
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("m.json"), "--size", "full") == 0
        paths = [path for service, path in emulator.requests if service == "iiif3"]
    assert paths == ["/iiif3/m-json-1/full/max/0/default.jpg"]
    assert read_rows(out)[0]["source_url"].endswith("/full/max/0/default.jpg")


def test_collection_is_followed_up_to_limit_and_broken_documents_are_counted(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        for name in ("a.json", "b.json", "c.json"):
            emulator.documents[name] = v3_manifest(emulator, name, 1)
        emulator.documents["broken.json"] = b'{"id": "http://x/broken", "type": "Manifest", "items": [{'
        emulator.documents["collection.json"] = {
            "@context": "http://iiif.io/api/presentation/3/context.json", "id": emulator.doc_url("collection.json"),
            "type": "Collection", "label": {"en": ["all"]},
            "items": [{"id": emulator.doc_url(name), "type": "Manifest"}
                      for name in ("broken.json", "a.json", "b.json", "c.json")]}
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("collection.json"), "--limit", "2") == 0
    assert {folder for folder, _ in files_under(out)} == {"a", "b"}
    summary = capsys.readouterr().out
    assert [line.split()[4] for line in summary.splitlines() if line.startswith("-")] == ["1"]  # skipped: broken


def test_canvases_without_an_image_service_are_skipped_and_counted(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        sound = {"id": "http://x/m/canvas/9", "type": "Canvas", "items": [{"type": "AnnotationPage", "items": [
            {"type": "Annotation", "motivation": "painting", "body": {"id": "http://x/a.mp3", "type": "Sound"}}]}]}
        bare = {"id": "http://x/m/canvas/10", "type": "Canvas", "items": [{"type": "AnnotationPage", "items": [
            {"type": "Annotation", "motivation": "painting", "body": {"id": "http://x/a.jpg", "type": "Image"}}]}]}
        emulator.documents["m.json"] = v3_manifest(emulator, "m.json", 2, extra_canvases=[sound, bare, "junk"])
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("m.json")) == 0
    assert files_under(out) == {("m", "0001.jpg"), ("m", "0002.jpg")}
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("m ")][0]
    assert row.split()[1:5] == ["2", "0", "0", "3"]  # saved, duplicates, rejected, skipped


def test_parse_document_reads_v2_and_v3_services():
    v2 = {"@id": "https://h/m", "@type": "sc:Manifest", "label": "Book", "sequences": [{"canvases": [
        {"@id": "https://h/c1", "label": "1", "images": [{"resource": {"@type": "dctypes:Image", "service": {
            "@id": "https://h/img/1/", "profile": "http://iiif.io/api/image/2/level2.json"}}}]},
        {"@id": "https://h/c2", "images": [{"resource": {"@type": "dctypes:Image"}}]}]}]}
    parsed = iiif.parse_document(v2, "v2")
    assert parsed.pages == (iiif.Page(1, "https://h/c1", "1", "https://h/img/1", 2),)
    assert [s.reason for s in parsed.skipped] == ["the canvas's image has no IIIF Image API service"]
    sound = {"id": "https://h/m", "type": "Manifest", "items": [{"id": "https://h/c", "type": "Canvas", "items": [
        {"type": "AnnotationPage",
         "items": [{"motivation": "painting", "body": {"id": "https://h/a", "type": "Sound"}}]}]}]}
    assert iiif.parse_document(sound, "v3").skipped == (
        iiif.Skipped(1, "https://h/c", "the canvas paints a Sound, not an image"),)
    with pytest.raises(iiif.DocumentError, match="not a IIIF Manifest or Collection"):
        iiif.parse_document({"id": "https://h/x", "type": "Canvas"}, "x.json")
    assert iiif.image_url("https://h/img/1", 3, "full") == "https://h/img/1/full/max/0/default.jpg"
    assert iiif.image_url("https://h/img/1", 2, "full") == "https://h/img/1/full/full/0/default.jpg"


@pytest.mark.parametrize("manifest_id, expected", [
    ("https://dl.ndl.go.jp/api/iiif/1054192/manifest.json", "1054192"),
    ("https://iiif.example.org/iiif/manifest/e32a277e-91e2.json", "e32a277e-91e2"),
    ("https://example.org/books/../../etc%2Fpasswd/manifest", "etc-passwd"),
    ("https://example.org/b%C3%BCcher:1.json", "b-cher-1"),
    ("https://example.org/iiif/manifest.json", "manifest-" + iiif.short_hash("https://example.org/iiif/manifest.json")),
])
def test_slug_is_a_safe_folder_name(manifest_id, expected):
    assert iiif.slug(manifest_id) == expected and ndl.valid_id(expected)


def test_same_slug_of_another_manifest_gets_a_hash(tmp_path):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["x/book.json"] = v3_manifest(emulator, "x/book.json", 1)
        emulator.documents["y/book.json"] = v3_manifest(emulator, "y/book.json", 1)
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("x/book.json")) == 0
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("y/book.json")) == 0
    folders = {folder for folder, _ in files_under(out)}
    assert folders == {"book", "book-" + iiif.short_hash(emulator.doc_url("y/book.json"))}


def test_unreachable_manifest_server_and_missing_file_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "input"
    assert newdataclawer.main(["--out", str(out), *FAST, "--iiif-manifest", "http://127.0.0.1:9/m.json"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: cannot reach http://127.0.0.1:9/m.json")
    assert newdataclawer.main(["--out", str(out), *FAST, "--iiif-manifest", str(tmp_path / "none.json")]) == 1
    assert "error: cannot read the manifest" in capsys.readouterr().err
    assert not out.exists()


def test_modes_cannot_be_mixed(capsys):
    with pytest.raises(SystemExit) as exit_:
        newdataclawer.main(["--pid", "1", "--tag", "stamp"])
    assert exit_.value.code == 2 and "different modes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        newdataclawer.main(["--pid", "../x"])
    with pytest.raises(SystemExit):
        newdataclawer.main(["--pid", "1", "--limit", "3"])


def test_a_tagged_modes_manifest_gets_the_new_columns_and_keeps_its_rows(tmp_path):
    out = tmp_path / "input"
    (out / "stamp").mkdir(parents=True)
    (out / "stamp" / "1_1_0.jpg").write_bytes(b"kept as it is")
    with open(out / manifest.MANIFEST_NAME, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=manifest.MANIFEST_FIELDS, restval="")
        writer.writeheader()
        writer.writerow({"id": "1_1_0", "folder": "stamp", "title": "old"})
    with NdlEmulator(book_records("1054192", [1])) as emulator:
        assert crawl(emulator, out, "--pid", "1054192", "--max-idle", "2") == 0
    rows = read_rows(out)
    assert [(row["folder"], row["id"], row["title"], row["tags"]) for row in rows][0] == ("stamp", "1_1_0", "old", "")
    assert sorted(row["id"] for row in rows[1:]) == ["1054192_1_0", "1054192_1_1"]


def test_an_oversized_manifest_is_not_read_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(iiif, "MAX_BYTES", 1024 * 1024)
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["m.json"] = v3_manifest(emulator, "m.json", 1)
        emulator.fail("oversize", service="docs", size=8 * 1024 * 1024)
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("m.json"),
                     "--iiif-manifest", emulator.doc_url("m.json") + "?again") == 0
        assert max(emulator.oversize_sent) < 8 * 1024 * 1024
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("- ")][0]
    assert row.split()[6] == "1"  # api_errors: the oversized answer; the second request got the manifest
    assert files_under(out) == {("m", "0001.jpg")}


def summary_row(stdout, folder):
    """The summary's row of `folder`: [saved, duplicates, rejected, skipped, failed, api_errors, total, status]."""
    line = [line for line in stdout.splitlines() if line.split()[:1] == [folder]][0]
    cells = line.split(maxsplit=8)
    return [int(cell) for cell in cells[1:8]] + [cells[8] if len(cells) > 8 else ""]


@pytest.mark.parametrize("loop_first", [False, True])
def test_a_manifest_that_redirects_to_itself_is_that_manifests_failure(tmp_path, capsys, loop_first):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["good.json"] = v3_manifest(emulator, "good.json", 2)
        sources = [emulator.doc_url("good.json"), emulator.root + "/loop/manifest.json"]
        argv = [arg for source in (sources[::-1] if loop_first else sources) for arg in ("--iiif-manifest", source)]
        assert crawl(emulator, out, *argv) == 0  # as for any manifest that could not be fetched
        assert emulator.count("loop") == httpclient.MAX_REDIRECTS + 1  # followed, given up, not retried
    assert files_under(out) == {("good", "0001.jpg"), ("good", "0002.jpg")}
    captured = capsys.readouterr()
    assert summary_row(captured.out, "good")[:1] == [2]
    saved, _, _, _, failed, api_errors, _, status = summary_row(captured.out, "-")
    assert (saved, failed, api_errors) == (0, 0, 1)
    assert status == f"manifest {emulator.root}/loop/manifest.json not fetched: over 10 redirects (a redirect loop?)"
    assert "Traceback" not in captured.err


def test_an_image_url_that_redirects_to_itself_fails_that_image_alone(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        document = v2_manifest(emulator, "book.json", "1054192", [1, 2, 3])
        document["sequences"][0]["canvases"][1]["images"][0]["resource"]["service"]["@id"] = emulator.root + "/loop/p2"
        emulator.documents["book.json"] = document
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("book.json"), "--workers", "1") == 0
    assert files_under(out) == {("book", "0001.jpg"), ("book", "0003.jpg")}
    captured = capsys.readouterr()
    assert summary_row(captured.out, "book") == [2, 0, 0, 0, 1, 0, 2, "done, with failures: re-run to retry them"]
    assert "0002 not saved: over 10 redirects" in captured.err and "Traceback" not in captured.err


# Network errors of one document or image: each must be that one's failure, never the run's end.
NETWORK_FAULTS = [
    ("reset", {"times": 2}, "connection failed: [Errno 104] Connection reset by peer"),
    ("bad_chunked", {"times": 2}, "the body was cut off or stalled"),
    ("stall", {"times": 2, "seconds": 3.0}, "no answer within 1 s"),
    ("redirect", {"location": "ftp://127.0.0.1/elsewhere"}, "bad URL: No connection adapters were found"),
    ("redirect", {"location": "http://[::1/broken"}, "bad URL: "),
    ("redirect", {"location": "http://a..b/empty-label"}, "bad URL: Failed to parse"),
    ("redirect", {"location": "/caf\xe9"}, "bad URL: 'utf-8' codec can't decode"),  # a Location not in UTF-8
]


@pytest.mark.parametrize("fault, params, reason", NETWORK_FAULTS)
def test_a_network_error_of_one_manifest_is_counted_and_the_run_goes_on(tmp_path, capsys, fault, params, reason):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["good.json"] = v3_manifest(emulator, "good.json", 1)
        emulator.documents["bad.json"] = v3_manifest(emulator, "bad.json", 1)
        emulator.fail(fault, service="docs", match="bad.json", **params)
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("good.json"),
                     "--iiif-manifest", emulator.doc_url("bad.json")) == 0
        assert emulator.pending_faults() == 0
    assert files_under(out) == {("good", "0001.jpg")}
    captured = capsys.readouterr()
    row = summary_row(captured.out, "-")
    assert row[5] == 1 and row[7].startswith(f"manifest {emulator.doc_url('bad.json')} not fetched: {reason}")
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("fault, params, reason", NETWORK_FAULTS)
def test_a_network_error_of_one_image_is_counted_and_the_run_goes_on(tmp_path, capsys, fault, params, reason):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["book.json"] = v2_manifest(emulator, "book.json", "1054192", [1, 2, 3])
        emulator.fail(fault, service="iiif", match="/R0000002/", **params)
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("book.json"), "--workers", "1") == 0
        assert emulator.pending_faults() == 0
    assert files_under(out) == {("book", "0001.jpg"), ("book", "0003.jpg")}
    captured = capsys.readouterr()
    assert summary_row(captured.out, "book")[:5] == [2, 0, 0, 0, 1]
    assert f"0002 not saved: {reason}" in captured.err and "Traceback" not in captured.err


def test_an_https_url_to_a_plain_http_server_is_that_manifests_failure(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["good.json"] = v3_manifest(emulator, "good.json", 1)
        tls = emulator.doc_url("bad.json").replace("http://", "https://")
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("good.json"), "--iiif-manifest", tls) == 0
    assert files_under(out) == {("good", "0001.jpg")}
    assert summary_row(capsys.readouterr().out, "-")[7].startswith(f"manifest {tls} not fetched: TLS failed")


def test_a_manifest_without_canvases_says_so_and_exits_0(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["empty.json"] = v3_manifest(emulator, "empty.json", 0)
        emulator.documents["book.json"] = v3_manifest(emulator, "book.json", 1)
        # 0: an empty manifest is a valid answer that a re-run cannot change, like a tag that ran dry
        assert crawl(emulator, out, "--iiif-manifest", emulator.doc_url("empty.json"),
                     "--iiif-manifest", emulator.doc_url("book.json")) == 0
    assert files_under(out) == {("book", "0001.jpg")}
    captured = capsys.readouterr()
    assert summary_row(captured.out, "empty") == [0, 0, 0, 0, 0, 0, 0, "no canvases: nothing to fetch"]
    assert f"manifest {emulator.doc_url('empty.json')} has no canvases: nothing to fetch" in captured.err


def test_a_collection_that_lists_itself_is_read_once_and_says_so(tmp_path, capsys):
    out = tmp_path / "input"
    with NdlEmulator() as emulator:
        emulator.documents["a.json"] = v3_manifest(emulator, "a.json", 1)
        loop, alone = emulator.doc_url("loop.json"), emulator.doc_url("alone.json")
        emulator.documents["loop.json"] = {
            "@context": "http://iiif.io/api/presentation/3/context.json", "id": loop, "type": "Collection",
            "items": [{"id": loop, "type": "Collection"}, {"id": emulator.doc_url("a.json"), "type": "Manifest"}]}
        emulator.documents["alone.json"] = {  # lists nothing but itself
            "@context": "http://iiif.io/api/presentation/2/context.json", "@id": alone, "@type": "sc:Collection",
            "collections": [{"@id": alone, "@type": "sc:Collection"}]}
        assert crawl(emulator, out, "--iiif-manifest", loop, "--iiif-manifest", alone) == 0
        reads = [path for service, path in emulator.requests if service == "docs"]
    assert sorted(reads) == ["/iiif/docs/a.json", "/iiif/docs/alone.json", "/iiif/docs/loop.json"]
    assert files_under(out) == {("a", "0001.jpg")}
    captured = capsys.readouterr()
    row = summary_row(captured.out, "-")
    assert row[3] == 2 and row[7].startswith(f"collection {loop} lists {loop} again, which this run already read")
    assert f"collection {alone} lists {alone} again" in captured.err


def test_a_bad_record_drawn_again_and_again_is_warned_about_once(tmp_path, caplog):
    wanted = book_records("1054192", range(1, 3))
    hostile = dict(wanted[0], id="../../etc/passwd")
    with NdlEmulator(wanted + [hostile]) as emulator:
        emulator.draw = lambda size, tags, pids=(): [hostile, hostile] + wanted
        assert crawl(emulator, tmp_path / "input", "--pid", "1054192", "--max-idle", "3") == 0
    warnings = [record.getMessage() for record in caplog.records if "record rejected" in record.getMessage()]
    assert warnings == ["pid 1054192: record rejected: id '../../etc/passwd' is not [0-9A-Za-z_-]{1,64}"]
