"""One command for everything: `python -m tagestimate COMMAND` (and the `tagestimate` console command
that pyproject.toml installs) answers as the scripts do; the shared wrapper, logging and value types."""

import argparse
import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

import labelmap
import multiinference
import multitrain_efficientnet
import newdataclawer
from conftest import ROOT
from tagestimate import __main__ as entry
from tagestimate import cli
from tagestimate.errors import UserError
from tagestimate.review import report

# subcommand -> (the script's main, the script's name as its usage line shows it)
SCRIPTS = {"tag": (multiinference.main, "multiinference.py"),
           "train": (multitrain_efficientnet.main, "multitrain_efficientnet.py"),
           "crawl": (newdataclawer.main, "newdataclawer.py"),
           "labels": (labelmap.main, "labelmap.py"),
           "report": (report.main, "python -m tagestimate.review.report")}


def answer(main, argv):
    """(exit status, stdout, stderr) of an in-process main(argv), whether it returns or exits."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as stop:
            status = stop.code
    return status, out.getvalue(), err.getvalue()


def words(text):
    return " ".join(text.split())


def test_the_top_level_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "tagestimate", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tagestimate ")
    listed = re.findall(r"^    ([\w-]+)(?: |$)", done.stdout, re.MULTILINE)  # a long name stands on its own line
    assert listed == ["crawl", "train", "tag", "report", "labels", "labelstudio", "search", "learn-tag"]
    for name, (_, script) in SCRIPTS.items():
        assert f"(= {script})" in words(done.stdout), name


@pytest.mark.parametrize("argv", [[], ["tagg"], ["--tag"]])
def test_no_or_an_unknown_command_exits_2(argv):
    status, out, err = answer(entry.main, argv)
    assert status == 2 and out == ""
    assert err.startswith("usage: tagestimate ") and "tagestimate: error: " in err


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_command_s_help_is_its_script_s_under_its_own_name(name, monkeypatch):
    script_main, script = SCRIPTS[name]
    monkeypatch.setattr(sys, "argv", [script])  # argparse names a script after sys.argv[0]
    status, script_help, _ = answer(script_main, ["--help"])
    assert status == 0
    status, command_help, _ = answer(entry.main, [name, "--help"])
    assert status == 0
    assert command_help.startswith(f"usage: tagestimate {name} ")
    # the same text; only the name differs (and so where argparse wraps the usage lines)
    assert words(command_help.replace(f"tagestimate {name}", "PROG")) == words(script_help.replace(script, "PROG"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_bad_flag_exits_2_as_with_the_script(name, monkeypatch):
    script_main, script = SCRIPTS[name]
    monkeypatch.setattr(sys, "argv", [script])
    argv = ["out", "--no-such-flag"] if name == "report" else ["--no-such-flag"]  # report needs its folder
    script_status, _, script_err = answer(script_main, argv)
    status, _, err = answer(entry.main, [name, *argv])
    assert status == script_status == 2
    assert f"tagestimate {name}: error: unrecognized arguments: --no-such-flag" in err
    assert err.replace(f"tagestimate {name}", "PROG").splitlines()[-1] == \
        script_err.replace(script, "PROG").splitlines()[-1]


def test_a_user_error_exits_1_as_with_the_script(tmp_path, monkeypatch):
    # labels: a missing --check folder; tag: weights that cannot be found (no model is loaded)
    argv = ["--check", str(tmp_path / "nowhere")]
    assert answer(entry.main, ["labels", *argv]) == answer(labelmap.main, argv) == \
        (1, "", f"error: {tmp_path / 'nowhere'} is not a folder; pass the data set folder, e.g. --check datasetpdm\n")
    from tagestimate.commands import tag as tag_command

    def refuse(*args, **kwargs):
        raise UserError("the weight store /w is offline; pass --weights a local file")

    monkeypatch.setattr(tag_command, "resolve_weights", refuse)
    (tmp_path / "in" / "item").mkdir(parents=True)
    (tmp_path / "in" / "item" / "a.jpg").write_bytes(b"not read before the weights")
    argv = ["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"), "--quiet", "--no-report"]
    assert answer(entry.main, ["tag", *argv]) == answer(multiinference.main, argv) == \
        (1, "", "error: the weight store /w is offline; pass --weights a local file\n")


@pytest.mark.slow
def test_python_dash_m_runs_a_command_with_its_exit_status(tmp_path):
    """The real process: `python -m tagestimate labels` prints and exits as `python labelmap.py`."""
    def run(*argv):
        done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    assert run("-m", "tagestimate", "labels") == run("labelmap.py")
    missing = ["--check", str(tmp_path / "nowhere")]
    assert run("-m", "tagestimate", "labels", *missing) == run("labelmap.py", *missing)
    assert run("-m", "tagestimate", "labels", *missing)[0] == 1


# ---------------------------------------------------------------- the shared pieces

def test_run_turns_user_errors_and_ctrl_c_into_one_line_and_a_status(capsys):
    def fails():
        raise UserError("the folder x is missing; pass --out")

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(lambda: 7, interrupted="never shown") == 7
    assert cli.run(fails, interrupted="never shown") == 1
    assert capsys.readouterr().err == "error: the folder x is missing; pass --out\n"
    assert cli.run(interrupted, interrupted="interrupted: run it again") == 130
    assert capsys.readouterr().err == "interrupted: run it again\n"
    assert cli.run(interrupted, interrupted=lambda: "worked out when it happens") == 130
    assert capsys.readouterr().err == "worked out when it happens\n"
    with pytest.raises(ValueError):  # a bug keeps its traceback
        cli.run(lambda: int("x"), interrupted="")


def test_log_lines_are_bare_information_and_prefixed_warnings():
    formatter = cli._Formatter()

    def line(level, message):
        return formatter.format(logging.LogRecord("tagestimate", level, __file__, 1, message, None, None))

    assert line(logging.INFO, "512 images") == "512 images"
    assert line(logging.WARNING, "folder x has no images") == "warning: folder x has no images"
    assert line(logging.DEBUG, "detail") == "debug: detail"


def test_bounded_numbers_name_the_range():
    def error(kind, text, *bounds, **openness):
        with pytest.raises(argparse.ArgumentTypeError) as raised:
            cli.bounded(kind, *bounds, **openness)(text)
        return str(raised.value)

    assert cli.bounded(int, 1, 64)("64") == 64 and cli.bounded(float, 0.0, low_open=True)("0.5") == 0.5
    assert error(int, "0", 1) == "must be at least 1, not 0"
    assert error(int, "65", 1, 64) == "must be at most 64, not 65 (the range is [1, 64])"
    assert error(float, "0", 0.0, low_open=True) == "must be over 0.0, not 0"
    assert error(float, "1", 0.0, 1.0, high_open=True) == "must be under 1.0, not 1 (the range is [0.0, 1.0))"
    assert error(int, "2.5", 1) == "'2.5' is not an integer"
    assert error(float, "nan", 0.0) == "'nan' is not a number"


@pytest.mark.parametrize("url, problem", [
    ("https://example.org/tags", None), ("http://127.0.0.1:8080", None), ("HTTPS://Example.org", None),
    ("ftp://example.org/tags", "is a ftp: URL; use http or https"),
    ("file:///srv/tags", "is not an absolute URL (such as https://example.org/path)"),
    ("https://example.org/my tags", "contains a space; write a space in a URL as %20"),
    ("https://example.org/tags\t", "contains a space; write a space in a URL as %20"),
    ("example.org/tags", "is not an absolute URL (such as https://example.org/path)"),
    ("https:///tags", "is not an absolute URL (such as https://example.org/path)"),
])
def test_url_problems_are_named(url, problem):
    assert cli.url_problem(url) == problem


def test_counts_are_singular_for_one():
    assert [cli.count(n, "file") for n in (0, 1, 2, 1500)] == ["0 files", "1 file", "2 files", "1,500 files"]
    assert cli.count(1, "replica") == "1 replica" and cli.count(3, "copy", "copies") == "3 copies"


# ---------------------------------------------------------------- the package

def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)


def requirement_lines(name):
    """The requirement specifiers of a requirements file (no comments, no -r includes)."""
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return [line for line in lines if line and not line.startswith("-")]


def test_pyproject_names_the_command_the_packages_and_the_requirements():
    project = pyproject()
    assert project["project"]["scripts"] == {"tagestimate": "tagestimate.__main__:main"}
    assert project["project"]["dynamic"] == ["dependencies"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert project["project"]["optional-dependencies"]["scale"] == requirement_lines("requirements-scale.txt")
    assert project["project"]["optional-dependencies"]["iiif"] == requirement_lines("requirements-iiif.txt")
    assert project["tool"]["setuptools"]["package-data"] == {"tagestimate.review": ["templates/*", "static/*"]}


def package_folders():
    """Every package of the source tree, as a path inside a wheel ('tagestimate/review')."""
    return sorted(os.path.relpath(folder, ROOT).replace(os.sep, "/")
                  for folder, _, files in os.walk(os.path.join(ROOT, "tagestimate")) if "__init__.py" in files)


@pytest.mark.slow
def test_the_wheel_holds_every_package_the_command_and_the_report_files(tmp_path):
    """`pip wheel .` (offline: no build isolation, no dependencies) from a copy of the tree."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, "tagestimate"), source / "tagestimate",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    review = source / "tagestimate" / "review"
    for folder, name in (("templates", "probe.html"), ("static", "probe.css")):  # present whatever the tree holds
        (review / folder).mkdir(exist_ok=True)
        (review / folder / name).write_text("probe")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel, = (tmp_path / "dist").glob("tagestimate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert [folder for folder in package_folders() if f"{folder}/__init__.py" not in names] == []
    assert "tagestimate/__main__.py" in names and "tagestimate/cli.py" in names
    assert "tagestimate/review/templates/probe.html" in names and "tagestimate/review/static/probe.css" in names
    for folder in ("templates", "static"):  # and whatever the tree itself holds there
        for file in os.listdir(os.path.join(ROOT, "tagestimate", "review", folder)) \
                if os.path.isdir(os.path.join(ROOT, "tagestimate", "review", folder)) else []:
            assert f"tagestimate/review/{folder}/{file}" in names
    assert re.search(r"^\[console_scripts\]\ntagestimate = tagestimate\.__main__:main$", entry_points, re.MULTILINE)
    required = [line[len("Requires-Dist: "):] for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line]
    assert [re.split(r"[<>=!~\[;]", line)[0] for line in required] == \
        [re.split(r"[<>=!~\[;]", line)[0] for line in requirement_lines("requirements.txt")]
    assert not any(name.startswith(("tests/", "bench/")) or name.endswith("multiinference.py") for name in names)


@pytest.mark.slow
def test_command_help_loads_no_model_library():
    """`tagestimate COMMAND --help` answers at once, as the scripts' --help do (no TensorFlow, Ray...)."""
    code = ("import sys, contextlib, io\n"
            "from tagestimate.__main__ import main\n"
            "for name in ('crawl', 'train', 'tag', 'report', 'labels'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main([name, '--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'openvino', 'ray'}))\n"
            "print('tagestimate.commands.train' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stderr
