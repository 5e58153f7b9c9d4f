"""Docs that cannot drift: README.md keeps the two commands, every relative link in README.md and
docs/*.md resolves, and every `sh runnable` block in docs/ runs (docs/testing.md, "Runnable
examples", states the convention)."""

import glob
import os
import re
import shutil
import subprocess
import sys
import unicodedata

import pytest

from conftest import ROOT, SHARED_DATA
from tests.ndl_emulator import NdlEmulator

DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
RUN_COMMAND = "pip install -r requirements.txt && python multiinference.py"
TEST_COMMAND = "pip install -r requirements-dev.txt && python -m pytest"
REPLICA = os.path.join(SHARED_DATA, "legacy-weights", "replica_ndllabelimage.hdf5")
FENCE = re.compile(r"^(```+|~~~+)(.*)$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
PROMISE = "# -> "
PRINTS = "# prints: "
CRAWLER = "newdataclawer.py"
# What a runnable block's temporary project holds, besides input/ and the replica weights.
PROJECT_FILES = ["multiinference.py", "multitrain_efficientnet.py", "newdataclawer.py", "labelmap.py"]
BLOCK_TIMEOUT = 300  # seconds; each block takes 10-40 s alone, more on a loaded machine


def doc_files():
    return [README] + sorted(glob.glob(os.path.join(DOCS, "*.md")))


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def fenced_blocks(text):
    """[(line number of the opening fence, info string, body)] of every fenced code block."""
    blocks, lines, index = [], text.split("\n"), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, info, start = opening[1], opening[2].strip(), index
        index += 1
        body = []
        while index < len(lines) and not (lines[index].startswith(fence[0] * len(fence))
                                          and not lines[index].strip(fence[0]).strip()):
            body.append(lines[index])
            index += 1
        blocks.append((start + 1, info, "\n".join(body)))
        index += 1
    return blocks


def prose(text):
    """The text with fenced code blocks blanked out (their lines kept, so line numbers hold)."""
    lines, inside = text.split("\n"), None
    for number, line in enumerate(lines):
        opening = FENCE.match(line)
        if inside is None and opening:
            inside = opening[1]
            lines[number] = ""
        elif inside is not None:
            if line.startswith(inside[0] * len(inside)) and not line.strip(inside[0]).strip():
                inside = None
            lines[number] = ""
    return "\n".join(lines)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text):
    """Every heading anchor of a Markdown text, with GitHub's -1, -2 suffixes for repeats."""
    found, seen = set(), {}
    for line in prose(text).split("\n"):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path):
    """['file:line: target (why)'] for every relative link of `path` that does not resolve."""
    text, wrong = read(path), []
    for number, line in enumerate(prose(text).split("\n"), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check
                continue
            file_part, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            where = f"{os.path.relpath(path, ROOT)}:{number}: {target}"
            if not os.path.exists(resolved):
                wrong.append(f"{where} (no such file)")
            elif anchor and (not resolved.endswith(".md") or anchor not in anchors(read(resolved))):
                wrong.append(f"{where} (no heading with anchor #{anchor})")
    return wrong


def runnable_blocks():
    """[(id, body)] of every `sh runnable` block in docs/ and README.md."""
    found = []
    for path in doc_files():
        for line, info, body in fenced_blocks(read(path)):
            if info.split() == ["sh", "runnable"]:
                found.append((f"{os.path.relpath(path, ROOT)}:{line}", body))
    return found


def promises(body):
    """(file patterns, texts) that a runnable block promises: `# -> PATH` and `# prints: TEXT` lines."""
    lines = [line.strip() for line in body.split("\n")]
    return ([line[len(PROMISE):].strip() for line in lines if line.startswith(PROMISE)],
            [line[len(PRINTS):].strip() for line in lines if line.startswith(PRINTS)])


# -- fast: the README's commands, links, the examples' shape ------------------------------------

def test_readme_keeps_the_two_commands_verbatim():
    text = read(README)
    assert f"\n    {RUN_COMMAND}\n" in text and f"\n    {TEST_COMMAND}\n" in text
    ci = read(os.path.join(ROOT, ".ci", "run")).strip().split("\n")
    assert ci[-1] == TEST_COMMAND  # CI runs the README's test command, as written there


def test_readme_is_a_front_page():
    text = read(README)
    assert len(text.split("\n")) <= 200
    linked = {os.path.normpath(target.partition("#")[0]) for target in LINK.findall(prose(text))}
    pages = {os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(DOCS, "*.md"))}
    assert pages and pages <= linked, f"not linked from README.md: {sorted(pages - linked)}"


def test_every_relative_link_resolves():
    wrong = [problem for path in doc_files() for problem in broken_links(path)]
    assert not wrong, "\n".join(wrong)


def test_the_link_checker_catches_a_broken_file_and_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Title: `x.py` and more\n\n## Same\n\n## Same\n\n```sh\n# not-a-heading\n```\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#title-xpy-and-more) [ok](a.md#same-1) [ok](#top) [web](https://example.org/x)\n\n"
                    "# Top\n\n[bad](missing.md) [bad](a.md#nope) [bad](a.md#not-a-heading)\n")
    assert [problem.split(": ", 1)[1] for problem in broken_links(str(page))] == [
        "missing.md (no such file)", "a.md#nope (no heading with anchor #nope)",
        "a.md#not-a-heading (no heading with anchor #not-a-heading)"]


def test_runnable_examples_are_found_and_each_promises_something():
    blocks = runnable_blocks()
    assert 6 <= len(blocks) <= 10, [name for name, _ in blocks]
    assert not [name for name, body in blocks if promises(body) == ([], [])]
    covered = " ".join(body for _, body in blocks)
    for needed in ("--format csv", "--format iiif", "tagestimate.review.report", "labelmap.py",
                   "newdataclawer.py --tag", "newdataclawer.py --pid"):
        assert needed in covered, needed


# -- slow: run every runnable example ------------------------------------------------------------

def crawl_records():
    """Records for the crawl examples: 20 per tag for two tags, and 12 crops of book 1054192."""
    records = []
    for offset, tag in ((0, "graphic_map"), (100, "stamp")):
        for n in range(offset, offset + 20):
            pid = str(2000000 + n)
            records.append({"id": f"{pid}_{n % 9 + 1}_0", "pid": pid, "page": n % 9 + 1, "title": f"book {n}",
                            "x": 10.0, "y": 12.5, "w": 40.0, "h": 30.0,
                            "graphictags": [{"tagname": tag, "confidence": 0.9}]})
    for page in range(1, 13):
        records.append({"id": f"1054192_{page}_9", "pid": "1054192", "page": page, "title": "demo book",
                        "x": 5.0, "y": 7.5, "w": 50.0, "h": 40.0,
                        "graphictags": [{"tagname": "picture", "confidence": 0.8}]})
    return records


def make_project(folder):
    """A copy of what a user's checkout needs for the examples, with the replica as NDL's file."""
    for name in PROJECT_FILES:
        shutil.copy(os.path.join(ROOT, name), folder / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.join(ROOT, "tagestimate"), folder / "tagestimate", ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "input"), folder / "input", ignore=ignore)
    shutil.copy(REPLICA, folder / "weights_ndllabelimage.hdf5")


def through_emulator(body, emulator):
    """The block with every crawler call pointed at the emulator (the block's own flags come later, and win)."""
    flags = f"{CRAWLER} --api-base {emulator.api_base} --iiif-base {emulator.iiif_base} --delay 0"
    return body.replace(CRAWLER, flags)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("openvino-cache"))  # the replica is converted once for all blocks


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REPLICA), reason=f"needs the replica weight file {REPLICA}")
@pytest.mark.parametrize("name, body", runnable_blocks(), ids=[name for name, _ in runnable_blocks()])
def test_runnable_example(name, body, tmp_path, model_cache):
    project = tmp_path / "project"
    project.mkdir()
    make_project(project)
    bin_folder = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bin_folder + os.pathsep + os.environ.get("PATH", ""), TAGESTIMATE_CACHE=model_cache,
               TAGESTIMATE_WEIGHTS_URL="http://127.0.0.1:9/nothing-here", KERAS_HOME=str(tmp_path / "keras"),
               PYTHONDONTWRITEBYTECODE="1")
    script = body
    emulator = NdlEmulator(crawl_records()).start() if CRAWLER in body else None
    try:
        if emulator:
            script = through_emulator(body, emulator)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=project, env=env,
                                capture_output=True, text=True, timeout=BLOCK_TIMEOUT)
    finally:
        if emulator:
            emulator.stop()
    assert result.returncode == 0, f"{name} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if emulator:
        assert emulator.count("api") and emulator.count("iiif")  # the crawl went to the emulator, not NDL
    files, texts = promises(body)
    missing = [pattern for pattern in files if not glob.glob(str(project / pattern))]
    assert not missing, f"{name} promised {missing}; the project holds {sorted(os.listdir(project))}"
    absent = [text for text in texts if text not in result.stdout]
    assert not absent, f"{name} promised to print {absent}\n{result.stdout[-3000:]}"
