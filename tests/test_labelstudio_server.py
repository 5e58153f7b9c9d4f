"""A real Label Studio on loopback: our config and exported tasks go in, a reviewer's annotations (made
through its API) come back through `labelstudio import` as the right corrections.

Label Studio pins packages that clash with ours (label-studio-sdk alone would downgrade numpy), so it
lives in its own virtual environment: $TAGESTIMATE_LABELSTUDIO_VENV, by default
~/.cache/tagestimate-test/labelstudio-venv, which .ci/run builds (`python3 -m venv DIR &&
DIR/bin/pip install label-studio`). Without it the test skips, except under CI, where it fails.
"""

import json
import os
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import requests
from PIL import Image

from modelfiles import trained_config
from tagestimate import __main__ as entry
from tagestimate import corrections
from tagestimate.formats import Record
from tagestimate.labels import LABELS
from tagestimate.review import labelstudio, report
from tagestimate.tag.inference import write_item

VENV = os.environ.get("TAGESTIMATE_LABELSTUDIO_VENV") or os.path.expanduser(
    "~/.cache/tagestimate-test/labelstudio-venv")
PROGRAM = os.path.join(VENV, "bin", "label-studio")
START_SECONDS = 600  # its first start migrates a new database: minutes on a busy machine
USER, PASSWORD, TOKEN = "reviewer@example.org", "not-a-secret-1", "tagestimate-test-token-0123"

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """(base URL, image folder) of a Label Studio started for this test, stopped after it; its document
    root is the image folder's parent, as `labelstudio export` tells (a storage must lie inside it)."""
    if not os.path.exists(PROGRAM):
        message = (f"no Label Studio at {PROGRAM}: build it with `python3 -m venv {VENV} && {VENV}/bin/pip install "
                   "label-studio` (.ci/run does), or set TAGESTIMATE_LABELSTUDIO_VENV")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root, data, port = tmp_path / "in", tmp_path / "labelstudio-data", free_port()
    root.mkdir()
    environment = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                   "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path), "LABEL_STUDIO_BASE_DATA_DIR": str(data),
                   "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
                   "FRONTEND_SENTRY_DSN": ""}
    log = open(tmp_path / "labelstudio.log", "wb")
    process = subprocess.Popen(
        [PROGRAM, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir",
         str(data), "--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"],
        env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)  # its own process group: stopping it stops its workers, and nothing else
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, f"label-studio exited: {(tmp_path / 'labelstudio.log').read_text()[-3000:]}"
            try:
                if requests.get(f"{url}/api/projects", headers=auth(), timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"label-studio did not answer within {START_SECONDS} s"
            time.sleep(2)
        yield url, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()


def auth():
    return {"Authorization": f"Token {TOKEN}"}


def call(method, url, **kwargs):
    answer = requests.request(method, url, headers=auth(), timeout=120, **kwargs)
    assert answer.status_code in (200, 201), f"{method} {url}: {answer.status_code} {answer.text[:500]}"
    return answer.json()


def tagged_output(root, output, weights):
    """Three images of item book1 under `root`: A tagged graphic+graphic_map, B picture, C stamp."""
    config = trained_config()
    rows = []
    for key, color, values in (("A", (200, 30, 30), {"graphic": 0.8, "graphic_map": 0.9}),
                               ("B", (30, 200, 30), {"picture": 0.7}), ("C", (30, 30, 200), {"stamp": 0.95})):
        path = root / "book1" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 32), color).save(path)
        rows.append(Record(key, str(path), (48, 32),
                           np.asarray([values.get(label, 0.05) for label in LABELS], np.float32)))
    os.makedirs(output)
    report.write_sidecar(str(output), "book1", rows, config)
    write_item(str(output), "book1", rows, config)
    weights.write_bytes(b"label studio test weights")
    report.write_run_info(str(output), str(weights), "keras-weights", "openvino", config, False, str(root))


def choose(task_id, choices):
    return {"result": [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": choices}}],
            "was_cancelled": False, "ground_truth": False, "lead_time": 3.5, "task": task_id}


def test_a_round_trip_through_a_real_label_studio(server, tmp_path, capsys):
    started = time.monotonic()
    url, root = server
    output = tmp_path / "out"
    tagged_output(root, output, tmp_path / "w.weights.h5")
    assert entry.main(["labelstudio", "export", str(output), "--out", str(tmp_path / "tasks.json")]) == 0
    project = call("POST", f"{url}/api/projects", json={"title": "tagestimate review",
                                                          "label_config": labelstudio.default_config()})["id"]
    # Local files open only under a Local Storage of the project (a folder inside the document root).
    call("POST", f"{url}/api/storages/localfiles", json={"project": project, "path": str(root),
                                                          "title": "images", "use_blob_urls": True})
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    call("POST", f"{url}/api/projects/{project}/import", json=tasks)
    listed = call("GET", f"{url}/api/tasks", params={"project": project, "fields": "all"})
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    ids = {task["data"]["key"]: task["id"] for task in listed}
    assert sorted(ids) == ["A", "B", "C"]
    assert all(task.get("total_predictions", 1) == 1 for task in listed)
    # Label Studio serves our image URL: the bytes of the file the task names
    image = requests.get(url + tasks[0]["data"]["image"], headers=auth(), timeout=60)
    assert image.status_code == 200 and image.content == open(tasks[0]["data"]["path"], "rb").read()
    # The reviewer: drops graphic on A, adds picture_person on B, keeps C's stamp.
    user = call("POST", f"{url}/api/tasks/{ids['A']}/annotations/", json=choose(ids["A"], ["graphic_map"]))[
        "completed_by"]
    call("POST", f"{url}/api/tasks/{ids['B']}/annotations/", json=choose(ids["B"], ["picture", "picture_person"]))
    call("POST", f"{url}/api/tasks/{ids['C']}/annotations/", json=choose(ids["C"], ["stamp"]))
    expected = [(str(root / "book1" / "A.png"), "book1", "graphic", "reject", USER),
                (str(root / "book1" / "A.png"), "book1", "graphic_map", "confirm", USER),
                (str(root / "book1" / "B.png"), "book1", "picture", "confirm", USER),
                (str(root / "book1" / "B.png"), "book1", "picture_person", "add", USER),
                (str(root / "book1" / "C.png"), "book1", "stamp", "confirm", USER)]
    # 1. pulled from the server by the command, with a personal access token (a JWT, as its UI hands out)
    personal = call("POST", f"{url}/api/token/")["token"]
    status = entry.main(["labelstudio", "import", "--url", url, "--token", personal, "--project", str(project),
                         "--out", str(tmp_path / "pulled.csv"), "--tasks", str(tmp_path / "tasks.json")])
    assert status == 0, capsys.readouterr().err
    # 2. from an export file saved from its export API
    export = requests.get(f"{url}/api/projects/{project}/export", params={"exportType": "JSON"}, headers=auth(),
                          timeout=120)
    assert export.status_code == 200
    (tmp_path / "export.json").write_bytes(export.content)
    status = entry.main(["labelstudio", "import", str(tmp_path / "export.json"), "--out", str(tmp_path / "c.csv")])
    assert status == 0, capsys.readouterr().err
    for name, reviewer in (("pulled.csv", USER), ("c.csv", f"user {user}")):  # a file names users by id
        rows, problems = corrections.read(tmp_path / name)
        assert problems == []
        assert sorted(tuple(row)[:5] for _, row in rows) == [(*row[:4], reviewer) for row in expected], name
        assert all(row.time.endswith("Z") and row.time[:4].isdigit() for _, row in rows)
    print(f"round trip after start: {time.monotonic() - started:.1f} s")
