"""The first OpenVINO run with a freshly trained model (issue 19.12): it converts the model, prints no
TensorFlow line ("Assets written to .../.staging-..."), and its summary says the rate counts tagging only
and how long the conversion took, so a rate far above what the wall time allows is explained."""

import os
import re
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import ROOT
from modelfiles import write_trained_weights

pytest.importorskip("openvino")
pytestmark = pytest.mark.slow  # a model conversion: tens of seconds

SUMMARY = re.compile(r"2 images tagged in 1 item, 0 files skipped, 0 items already done; ([\d.]+) images/s"
                     r"(?: \(tagging only; converting the model for OpenVINO took ([\d.]+) s, once per weight file\))?$")


def tag(source, out, weights, cache):
    """multiinference.py as a user runs it (no --quiet): (stdout, stderr, wall seconds)."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "multiinference.py"), "--inputpath", source,
                           "--outputpath", out, "--weights", weights, "--backend", "openvino", "--no-report"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, TAGESTIMATE_CACHE=cache))
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr, time.monotonic() - started


def test_the_first_run_prints_no_assets_line_and_names_the_conversion_time(tmp_path):
    weights, _ = write_trained_weights(str(tmp_path / "model"))
    source = tmp_path / "input"
    (source / "book").mkdir(parents=True)
    for page in range(2):
        Image.new("RGB", (60, 50), (20, 80 * page, 140)).save(source / "book" / f"p{page}.jpg")
    cache = str(tmp_path / "cache")
    stdout, stderr, wall = tag(str(source), str(tmp_path / "out1"), weights, cache)
    assert "Assets written" not in stdout + stderr
    assert "converting the model for OpenVINO" in stderr  # the one line that says what the wait is
    rate, conversion = SUMMARY.fullmatch(stdout.splitlines()[0]).groups()
    assert conversion is not None and 0 < float(conversion) < wall
    assert 2 / float(rate) + float(conversion) < wall  # what the summary accounts for fits in the run
    stdout, stderr, _ = tag(str(source), str(tmp_path / "out2"), weights, cache)  # cached now: nothing to explain
    assert SUMMARY.fullmatch(stdout.splitlines()[0]).group(2) is None
    assert "converting" not in stderr
