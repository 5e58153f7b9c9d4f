"""`labelstudio export / import / config` without a server: tasks from a tagging output and from a run's
label_issues.csv, corrections from hand-made Label Studio exports (tests/test_labelstudio_server.py
runs a real Label Studio)."""

import copy
import hashlib
import http.server
import json
import os
import threading
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from modelfiles import trained_config
from tagestimate import __main__ as entry
from tagestimate import corrections
from tagestimate.formats import Record
from tagestimate.labels import LABELS
from tagestimate.modelconfig import ModelConfig, write_config
from tagestimate.review import labelstudio, report
from tagestimate.review import labelstudio_import as importer
from tagestimate.tag.inference import write_item


def image(path, color=(200, 30, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)
    return str(path)


def vector(**values):
    return [values.get(label, 0.05) for label in LABELS]


@pytest.fixture
def tagged(tmp_path):
    """An output of two items tagged from tmp/in, run.json naming the input and a weight file."""
    config = trained_config()
    output, source = tmp_path / "out", tmp_path / "in"
    items = {"book1": [("p1", image(source / "book1" / "p1.jpg"), vector(graphic_map=0.9, graphic=0.8)),
                       ("p2", image(source / "book1" / "p 2.jpg", (9, 9, 9)), vector(picture=0.45)),
                       ("p3", image(source / "book1" / "p3.jpg", (1, 2, 3)), vector())],
             "book2": [("s1", image(source / "book2" / "s1.png"), vector(stamp=0.7))]}
    for name, rows in items.items():
        records = [Record(key, path, (10, 10), np.asarray(values, np.float32)) for key, path, values in rows]
        os.makedirs(output, exist_ok=True)
        report.write_sidecar(str(output), name, records, config)
        write_item(str(output), name, records, config)
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"weights A")
    report.write_run_info(str(output), str(weights), "keras-weights", "openvino", config, False, str(source))
    return output, source, hashlib.sha256(b"weights A").hexdigest()[:12]


def run_cli(argv, capsys):
    status = entry.main(["labelstudio", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def by_key(tasks):
    return {task["data"]["key"]: task for task in tasks}


# ---------------------------------------------------------------- config

def test_the_repo_config_is_ndl_s_labels_and_the_command_prints_it(capsys, tmp_path):
    assert labelstudio.default_config() == labelstudio.config_xml(LABELS)
    view = ElementTree.fromstring(labelstudio.default_config())
    choices = view.find(".//Choices")
    assert choices.get("choice") == "multiple" and choices.get("toName") == view.find(".//Image").get("name")
    assert [c.get("value") for c in choices] == list(LABELS)
    status, out, _ = run_cli(["config"], capsys)
    assert status == 0 and out == labelstudio.default_config()
    # a run with a custom label set (a hostile label too) and an extra folder tag: generated from model.json
    labels = ("ship", 'a"<b>&c')
    write_config(str(tmp_path), ModelConfig(labels=labels, labelmap={"labels": list(labels), "tags": {
        "ship": ["ship"], 'a"<b>&c': ['a"<b>&c'], "ship_old": ["ship"]}, "aliases": {}}))
    status, out, _ = run_cli(["config", tmp_path], capsys)
    assert status == 0
    assert [c.get("value") for c in ElementTree.fromstring(out).find(".//Choices")] == ["ship", 'a"<b>&c', "ship_old"]


# ---------------------------------------------------------------- export

def test_export_of_an_output_preselects_the_model_s_tags_with_local_file_urls(tagged, tmp_path, capsys):
    output, source, version = tagged
    status, out, err = run_cli(["export", output, "--out", tmp_path / "tasks.json"], capsys)
    assert status == 0, err
    # the document root is the input folder's parent: Label Studio's storage must lie strictly inside it
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path}," in out
    assert f"add a Local Files source storage with the path {source} (do not sync it)" in out
    tasks = by_key(json.loads((tmp_path / "tasks.json").read_text()))
    assert sorted(tasks) == ["p1", "p2", "p3", "s1"]
    p2 = tasks["p2"]
    assert p2["data"]["image"] == "/data/local-files/?d=in/book1/p%202.jpg"
    assert p2["data"]["path"] == str(source / "book1" / "p 2.jpg") and p2["data"]["item"] == "book1"
    assert p2["data"]["predicted"] == ["picture"] and p2["data"]["labels"] == list(LABELS)
    assert tasks["p1"]["data"]["predicted"] == ["graphic", "graphic_map"]
    prediction = tasks["p1"]["predictions"][0]
    assert prediction["model_version"] == version == tasks["p1"]["data"]["model_version"]
    assert prediction["score"] == 0.8  # its least sure tag
    assert prediction["result"] == [{"from_name": "tags", "to_name": "image", "type": "choices",
                                     "value": {"choices": ["graphic", "graphic_map"]}}]
    assert tasks["p3"]["data"]["predicted"] == [] and tasks["p3"]["predictions"][0]["result"] == []
    assert tasks["s1"]["data"]["predicted"] == ["stamp"] and tasks["s1"]["data"]["item"] == "book2"


def test_export_with_a_target_base_a_wider_root_and_a_min_confidence(tagged, tmp_path, capsys):
    output, source, _ = tagged
    status, _, err = run_cli(["export", output, "--out", tmp_path / "t.json", "--target-base",
                              "https://img.example.org/base/", "--min-confidence", "0.75"], capsys)
    assert status == 0, err
    tasks = by_key(json.loads((tmp_path / "t.json").read_text()))
    assert tasks["p2"]["data"]["image"] == "https://img.example.org/base/book1/p%202.jpg"
    assert tasks["p1"]["data"]["predicted"] == ["graphic", "graphic_map"]  # 0.9 and 0.8
    assert tasks["p2"]["data"]["predicted"] == [] and tasks["s1"]["data"]["predicted"] == []  # 0.45, 0.7
    status, out, err = run_cli(["export", output, "--out", tmp_path / "t.json", "--local-files-root", source],
                               capsys)
    assert status == 0, err
    assert by_key(json.loads((tmp_path / "t.json").read_text()))["s1"]["data"]["image"] == \
        "/data/local-files/?d=book2/s1.png"
    assert "a Local Files source storage for each folder of images inside that root" in out


def test_export_leaves_out_gone_images_and_refuses_a_root_that_misses_one(tagged, tmp_path, capsys):
    output, source, _ = tagged
    os.remove(source / "book1" / "p3.jpg")
    status, out, err = run_cli(["export", output, "--out", tmp_path / "t.json"], capsys)
    assert status == 1
    assert f"image {source / 'book1' / 'p3.jpg'} is gone; its task was left out" in err
    assert "the other 3 tasks are in" in err
    assert sorted(by_key(json.loads((tmp_path / "t.json").read_text()))) == ["p1", "p2", "s1"]
    status, _, err = run_cli(["export", output, "--out", tmp_path / "u.json", "--local-files-root",
                              source / "book2"], capsys)
    assert status == 1 and "is not under" in err and "--local-files-root that holds every image" in err
    assert not (tmp_path / "u.json").exists()  # nothing half-written


def test_export_of_a_run_s_suspects_preselects_the_folder_tag(tmp_path, capsys):
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    labelmap = {"labels": list(LABELS), "tags": {label: [label] for label in LABELS}, "aliases": {}}
    labelmap["tags"]["graphic_illust"] = ["graphic"]
    write_config(str(run), ModelConfig(labels=LABELS, labelmap=labelmap, training={"data": str(data)}))
    (run / "best.weights.h5").write_bytes(b"weights R")
    image(data / "stamp" / "a.jpg")
    image(data / "graphic_map" / "b.jpg")
    image(data / "picture" / "c.jpg")
    (run / "label_issues.csv").write_text(
        "path,folder tag,suspected labels,score,source,api_confidence,reviewer\n"
        "stamp/a.jpg,stamp,graphic_map,0.93,crawled,0.61,\n"
        f"{data / 'graphic_map' / 'b.jpg'},graphic_map,picture;picture_outdoor,0.71,ndl-imagelabel,,\n"
        "picture/c.jpg,picture,stamp,0.2,reviewed,,ann\n")
    status, _, err = run_cli(["export", run, "--out", tmp_path / "t.json", "--min-confidence", "0.5"], capsys)
    assert status == 0, err
    tasks = by_key(json.loads((tmp_path / "t.json").read_text()))
    assert sorted(tasks) == sorted(["stamp/a.jpg", str(data / "graphic_map" / "b.jpg")])  # c: score under 0.5
    a = tasks["stamp/a.jpg"]
    assert a["data"]["path"] == str(data / "stamp" / "a.jpg") and a["data"]["predicted"] == ["stamp"]
    assert a["data"]["image"] == "/data/local-files/?d=data/stamp/a.jpg" and a["data"]["item"] == ""
    assert a["data"]["note"] == ("folder tag: stamp (preselected); the model suggests graphic_map (suspect score "
                                 "0.93); source: crawled")
    assert a["predictions"][0]["score"] == 0.93
    assert a["predictions"][0]["model_version"] == hashlib.sha256(b"weights R").hexdigest()[:12]
    assert a["data"]["labels"] == [*LABELS, "graphic_illust"]
    assert "the model suggests picture, picture_outdoor" in tasks[str(data / "graphic_map" / "b.jpg")]["data"]["note"]


def test_export_reads_the_trainer_s_label_issues_columns(tmp_path, capsys):
    """tagestimate/train/label_issues.py's columns: folder, suspected_missing / _wrong as JSON, scope."""
    run, data = tmp_path / "run", tmp_path / "data"
    run.mkdir()
    write_config(str(run), ModelConfig(labels=LABELS, training={"data": str(data)}))
    path = image(data / "graphic_map" / "b.jpg")
    (run / "label_issues.csv").write_text(
        "path,folder,suspected_missing,suspected_wrong,score,source,api_confidence,reviewer,scope\n"
        f'{path},graphic_map,"{{""stamp"": 0.93}}","{{""graphic_map"": 0.04}}",0.88,crawled,0.7,,out-of-fold\n')
    status, _, err = run_cli(["export", run, "--out", tmp_path / "t.json"], capsys)
    assert status == 0, err
    task, = json.loads((tmp_path / "t.json").read_text())
    assert task["data"]["predicted"] == ["graphic_map"] and task["data"]["path"] == path
    assert task["data"]["note"] == ("folder tag: graphic_map (preselected); the model would add stamp (0.93) and "
                                    "disputes graphic_map (0.04) (suspect score 0.88); source: crawled")
    assert task["predictions"][0]["score"] == 0.88


def test_export_names_what_it_cannot_use(tmp_path, capsys):
    status, _, err = run_cli(["export", tmp_path / "none", "--out", tmp_path / "t.json"], capsys)
    assert status == 1 and "is not a folder" in err
    (tmp_path / "run").mkdir()
    write_config(str(tmp_path / "run"), ModelConfig(labels=LABELS))
    status, _, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "t.json"], capsys)
    assert status == 1 and "has no label_issues.csv" in err
    status, _, err = run_cli(["export", tmp_path, "--out", tmp_path / "t.json"], capsys)
    assert status == 1 and "holds no item output" in err
    assert not (tmp_path / "t.json").exists()


# ---------------------------------------------------------------- import

def annotate(task, task_id, choices, who="ann@example.org", when="2026-12-05T03:04:05.123456Z", **extra):
    """`task` as Label Studio's JSON export gives it back, with one annotation choosing `choices`."""
    done = copy.deepcopy(task)
    done["id"] = task_id
    done.setdefault("annotations", []).append({
        "id": 100 + len(done["annotations"]), "completed_by": {"id": 7, "email": who},
        "result": [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": choices}}],
        "was_cancelled": False, "ground_truth": False, "created_at": when, "updated_at": when, **extra})
    return done


@pytest.fixture
def exported(tagged, tmp_path):
    """(tasks file, {key: task}) of the tagged output."""
    labelstudio.export(str(tagged[0]), str(tmp_path / "tasks.json"))
    return tmp_path / "tasks.json", by_key(json.loads((tmp_path / "tasks.json").read_text()))


def rows_of(path):
    rows, problems = corrections.read(path)
    assert problems == []
    return [tuple(row) for _, row in rows]


def test_import_turns_kept_dropped_and_new_choices_into_confirm_reject_add(exported, tmp_path, capsys):
    _, tasks = exported
    p1, p2, s1 = tasks["p1"]["data"]["path"], tasks["p2"]["data"]["path"], tasks["s1"]["data"]["path"]
    export = [annotate(tasks["p1"], 1, ["graphic_map"], "a@x.org", "2026-12-05T01:00:00+09:00"),  # drop graphic
              annotate(tasks["p2"], 2, ["picture", "picture_person"], "b@x.org"),  # keep picture, add person
              annotate(tasks["s1"], 3, ["stamp"], "c@x.org"),  # keep
              copy.deepcopy(tasks["p3"]) | {"id": 4, "annotations": []}]  # not annotated yet
    (tmp_path / "export.json").write_text(json.dumps(export))
    status, out, err = run_cli(["import", tmp_path / "export.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 0, err
    assert "5 corrections from 3 annotated tasks" in out and "1 task not annotated yet" in out
    assert rows_of(tmp_path / "c.csv") == [
        (p1, "book1", "graphic", "reject", "a@x.org", "2026-12-04T16:00:00Z"),
        (p1, "book1", "graphic_map", "confirm", "a@x.org", "2026-12-04T16:00:00Z"),
        (p2, "book1", "picture", "confirm", "b@x.org", "2026-12-05T03:04:05Z"),
        (p2, "book1", "picture_person", "add", "b@x.org", "2026-12-05T03:04:05Z"),
        (s1, "book2", "stamp", "confirm", "c@x.org", "2026-12-05T03:04:05Z")]


def test_import_refuses_truncated_json_and_other_exports_and_writes_nothing(exported, tmp_path, capsys, monkeypatch):
    _, tasks = exported
    text = json.dumps([annotate(tasks["p1"], 1, ["graphic"])])
    (tmp_path / "cut.json").write_text(text[:len(text) // 2])
    (tmp_path / "c.csv").write_text("kept\n")
    status, _, err = run_cli(["import", tmp_path / "cut.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 1 and "is not complete JSON" in err and "nothing was written" in err
    assert (tmp_path / "c.csv").read_text() == "kept\n"
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, "image": "/x.jpg", "tags": {"choices": ["stamp"]}}]))
    status, _, err = run_cli(["import", tmp_path / "min.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 1 and "JSON-MIN or CSV export" in err
    monkeypatch.setattr(labelstudio, "MAX_JSON_BYTES", len(text) - 1)
    (tmp_path / "whole.json").write_text(text)
    status, _, err = run_cli(["import", tmp_path / "whole.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 1 and f"is over {len(text) - 1:,} bytes" in err
    (tmp_path / "obj.json").write_text(json.dumps({"tasks": []}))
    status, _, err = run_cli(["import", tmp_path / "obj.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 1 and "is not a Label Studio JSON export" in err
    assert (tmp_path / "c.csv").read_text() == "kept\n"


def test_import_leaves_out_bad_tasks_and_tags_and_writes_the_rest(exported, tagged, tmp_path, capsys):
    _, tasks = exported
    os.remove(tasks["s1"]["data"]["path"])
    foreign = annotate({"data": {"image": "/data/local-files/?d=x.jpg"}}, 9, ["stamp"])
    export = [annotate(tasks["p1"], 1, ["graphic", "graphic_map", "ship"]),  # ship: not a label
              annotate(tasks["s1"], 3, ["picture"]),  # its image is gone
              foreign]
    (tmp_path / "e.json").write_text(json.dumps(export))
    status, _, err = run_cli(["import", tmp_path / "e.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 1
    assert "task 1 (item 'book1', image 'p1'): tag 'ship' is not among the model's labels; that tag was left out" in err
    assert f"task 3 (item 'book2', image 's1'): its image {tasks['s1']['data']['path']} is gone; left out" in err
    assert "task 9 has no data.item: it was not exported by `tagestimate labelstudio export`; left out" in err
    assert "the other 2 corrections are in" in err
    assert [row[2:4] for row in rows_of(tmp_path / "c.csv")] == [("graphic", "confirm"), ("graphic_map", "confirm")]


def test_import_resolves_several_annotations_of_one_image(exported, tmp_path, capsys):
    _, tasks = exported
    p1 = annotate(tasks["p1"], 1, ["graphic"], "late@x.org", "2026-12-05T04:00:00Z")
    p1 = annotate(p1, 1, ["graphic_map"], "early@x.org", "2026-12-05T02:00:00Z")
    p1 = annotate(p1, 1, ["stamp"], "skipper@x.org", "2026-12-05T05:00:00Z", was_cancelled=True)
    p2 = annotate(tasks["p2"], 2, [], "lead@x.org", "2026-12-05T01:00:00Z", ground_truth=True)
    p2 = annotate(p2, 2, ["picture"], "other@x.org", "2026-12-05T06:00:00Z")
    twice = [annotate(tasks["s1"], 30, ["stamp", "graphic"], "second@x.org", "2026-12-05T02:00:00Z"),
             annotate(tasks["s1"], 3, ["stamp"], "first@x.org", "2026-12-05T01:00:00Z")]  # listed last, older
    (tmp_path / "e.json").write_text(json.dumps([p1, p2, *twice]))
    status, _, err = run_cli(["import", tmp_path / "e.json", "--out", tmp_path / "c.csv"], capsys)
    assert status == 0, err  # rules, not errors: said, and the file is complete
    assert "task 1 (item 'book1', image 'p1') has 2 annotations that disagree; the last updated one, by " \
           "late@x.org, was used" in err
    assert "the ground-truth one, by lead@x.org, was used" in err
    assert "task 3 (item 'book2', image 's1') and task 30 show the same image with different choices" in err
    assert [row[2:5] for row in rows_of(tmp_path / "c.csv")] == [
        ("graphic", "confirm", "late@x.org"), ("graphic_map", "reject", "late@x.org"),
        ("picture", "reject", "lead@x.org"),
        ("stamp", "confirm", "second@x.org"), ("graphic", "add", "second@x.org")]


def test_import_with_the_tasks_file_refuses_another_output_s_or_model_s_tasks(exported, tmp_path, capsys):
    tasks_file, tasks = exported
    other = copy.deepcopy(tasks["p2"])
    other["data"]["model_version"] = "0123456789ab"
    stranger = copy.deepcopy(tasks["p3"])
    stranger["data"]["key"] = "p99"
    edited = copy.deepcopy(tasks["s1"])
    edited["data"]["predicted"] = []  # the tasks file's predicted tags are the ones compared
    export = [annotate(tasks["p1"], 1, ["graphic"]), annotate(other, 2, ["picture"]),
              annotate(stranger, 4, ["stamp"]), annotate(edited, 3, ["stamp"])]
    (tmp_path / "e.json").write_text(json.dumps(export))
    status, _, err = run_cli(["import", tmp_path / "e.json", "--out", tmp_path / "c.csv", "--tasks", tasks_file],
                             capsys)
    assert status == 1
    assert f"task 2 (item 'book1', image 'p2') was exported for model 0123456789ab, {tasks_file} for model " \
           f"{tasks['p2']['data']['model_version']}: another model's tags; left out" in err
    assert f"task 4 (item 'book1', image 'p99') is not in {tasks_file}: it comes from another output" in err
    assert [row[2:4] for row in rows_of(tmp_path / "c.csv")] == [
        ("graphic", "confirm"), ("graphic_map", "reject"), ("stamp", "confirm")]


def test_import_flags_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        entry.main(["labelstudio", "import", "--out", str(tmp_path / "c.csv")])
    assert stop.value.code == 2 and "pass EXPORT.json or --url" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        entry.main(["labelstudio", "import", "--url", "http://127.0.0.1:1", "--out", str(tmp_path / "c.csv")])
    assert stop.value.code == 2 and "needs --project and --token" in capsys.readouterr().err


# ---------------------------------------------------------------- --url: the export API

class ExportServer(http.server.BaseHTTPRequestHandler):
    tasks, token, seen = [], "secret-token", []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Token {self.token}":
            self.send_response(401)
            self.end_headers()
            return
        if self.path == "/api/users":
            body = json.dumps([{"id": 7, "email": "seven@x.org"}]).encode()
        elif not self.path.startswith("/api/projects/5/export?"):
            self.send_response(404)
            self.end_headers()
            return
        else:
            body = json.dumps(self.tasks).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def export_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ExportServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_pulls_the_export_from_a_server_with_the_token(exported, export_server, tmp_path, capsys):
    _, tasks = exported
    ExportServer.tasks = [annotate(tasks["s1"], 3, [], "c@x.org"), annotate(tasks["p2"], 2, ["picture"])]
    ExportServer.tasks[1]["annotations"][0]["completed_by"] = 7  # as Label Studio exports it: a user id
    argv = ["import", "--url", export_server, "--project", "5", "--out", tmp_path / "c.csv"]
    status, _, err = run_cli([*argv, "--token", "secret-token"], capsys)
    assert status == 0, err
    assert ExportServer.seen[0] == ("/api/projects/5/export?exportType=JSON", "Token secret-token")
    assert [row[2:5] for row in rows_of(tmp_path / "c.csv")] == [("stamp", "reject", "c@x.org"),
                                                                 ("picture", "confirm", "seven@x.org")]
    status, _, err = run_cli([*argv, "--token", "wrong", "--out", tmp_path / "d.csv"], capsys)
    assert status == 1 and "HTTP 401" in err and "check --token" in err
    argv[argv.index("5")] = "6"
    status, _, err = run_cli([*argv, "--token", "secret-token", "--out", tmp_path / "d.csv"], capsys)
    assert status == 1 and "HTTP 404" in err and "check --project" in err
    assert not (tmp_path / "d.csv").exists()


def test_export_of_an_output_tagged_without_the_report_needs_its_input_folder(tmp_path, capsys):
    source, output = tmp_path / "in", tmp_path / "out"
    records = [Record("p1", image(source / "book1" / "p1.jpg"), (10, 10), np.asarray(vector(stamp=0.6), np.float32))]
    output.mkdir()
    write_item(str(output), "book1", records, trained_config())  # --no-report: no sidecar, no run.json
    status, _, err = run_cli(["export", output, "--out", tmp_path / "t.json", "--local-files-root", source],
                             capsys)
    assert status == 1 and "image 'p1' of item 'book1' has no known file" in err and "pass --inputpath" in err
    assert "the weight file (none named) is gone, so the tasks' model_version is 'unknown'" in err
    status, _, err = run_cli(["export", output, "--out", tmp_path / "t.json", "--inputpath", source], capsys)
    assert status == 0, err
    task, = json.loads((tmp_path / "t.json").read_text())
    assert task["data"]["path"] == str(source / "book1" / "p1.jpg") and task["data"]["predicted"] == ["stamp"]
    assert task["data"]["image"] == "/data/local-files/?d=in/book1/p1.jpg"
