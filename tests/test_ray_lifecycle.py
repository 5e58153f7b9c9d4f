"""A Ray run's driver stopped from outside (issue 19.12): Ctrl-C's summary counts the outputs that are
on disk, and after kill -9 nothing of the local Ray it started lives on. Each test runs a driver in a
session of its own (start_new_session), so its Ray processes are told from any other program's."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import ROOT, restore_default_sigint
from modelfiles import write_trained_weights

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # each test starts a local Ray and model-holding actors

# A driver as multiinference.py --engine ray runs it, with an item hook that holds two items: book3's
# output is written, then its worker waits (its row cannot come back before the driver is stopped);
# book5's worker waits before writing anything. The hook is pickled by value (defined in __main__).
DRIVER = '''
import os, sys, time
sys.path.insert(0, {root!r})
from tagestimate.commands.tag import report
from tagestimate.tag import ray_engine
from tagestimate.tag.inference import find_items, write_item
from tagestimate.tag.settings import InferenceSettings, ModelBundle

def hold(output_dir, name, records, config):
    if name == "book3":
        write_item(output_dir, name, records, config)
        time.sleep(600)
    if name == "book5":
        open(os.path.join({marks!r}, name), "w").close()
        time.sleep(600)

source, out, weights = sys.argv[1:4]
settings = InferenceSettings(input_dir=source, output_dir=out, backend="tensorflow", progress=False, report=False,
                             engine="ray", actors=2, batch_size=1)
items, problems = find_items(source)
summary = ray_engine.run(settings, ModelBundle.load(weights), items, problems, on_item=hold)
sys.exit(report(summary, out))
'''


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_trained_weights(str(tmp_path_factory.mktemp("weights")))[0]


def start_driver(tmp_path, weights):
    """The driver on six one-image items (book3 also holds a broken file), in a session of its own."""
    source, marks = tmp_path / "input", tmp_path / "marks"
    marks.mkdir()
    for number in range(1, 7):
        (source / f"book{number}").mkdir(parents=True)
        Image.new("RGB", (40, 30), (30 * number, 90, 120)).save(source / f"book{number}" / "p1.jpg")
    (source / "book3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=ROOT, marks=str(marks)))
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, str(script), str(source), str(out), weights], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=restore_default_sigint)  # a background job's children ignore SIGINT
    return driver, out, marks


def wait_until(condition, seconds, driver):
    deadline = time.monotonic() + seconds
    while not condition():
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            pytest.fail(f"the driver did not get there: {driver.communicate(timeout=30)[1][-3000:]}")
        time.sleep(0.2)


def session_processes(session):
    """pids of the live (not zombie) processes in session `session`."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()  # after "pid (name)": the name may hold spaces
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != b"Z":
            found.add(int(pid))
    return found


def outputs(out):
    return sorted(name for name in os.listdir(out) if name.startswith("book") and name.endswith(".json"))


def test_ctrl_c_counts_the_outputs_on_disk_even_those_whose_rows_never_came_back(tmp_path, weights):
    driver, out, marks = start_driver(tmp_path, weights)
    try:
        wait_until(lambda: (out / "book3.json").exists() and (marks / "book5").exists(), 300, driver)
        time.sleep(3)  # the rows of the items finished so far reach the driver
        driver.send_signal(signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 130, stderr
    written = outputs(out)
    assert "book3.json" in written and "book5.json" not in written  # book3's row never came back
    images = len(written)  # one readable image per item
    assert (f"interrupted: {len(written)} of 6 items finished ({images} image{'s' * (images != 1)} tagged) in "
            f"{out} (see {out / 'errors.json'}); run the same command again to tag the rest") in stderr
    # book3's errors, which only its pending file held, are in errors.json now, and the file is gone
    assert [(e["item"], os.path.basename(e["path"])) for e in json.loads((out / "errors.json").read_text())] == [
        ("book3", "broken.jpg")]
    assert not (out / ".pending-errors").exists()


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path, weights):
    driver, out, marks = start_driver(tmp_path, weights)
    try:
        wait_until(lambda: (out / "book3.json").exists(), 300, driver)  # Ray, its agents and actors are up
        assert len(session_processes(driver.pid)) > 5  # the driver, gcs_server, raylet, agents, workers...
        driver.kill()  # SIGKILL: no clean-up of its own
        driver.wait(timeout=30)
        deadline = time.monotonic() + 20  # Ray's agents alone linger a minute or more
        while session_processes(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not session_processes(driver.pid)
    finally:
        driver.kill()
        driver.communicate(timeout=30)
