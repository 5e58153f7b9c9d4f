"""`python -m tagestimate COMMAND` and the `tagestimate` console command (pyproject.toml): one entry
to every command line, each with the flags, messages and exit statuses of its script (where it has one).

    tagestimate crawl ...     = python newdataclawer.py ...
    tagestimate train ...     = python multitrain_efficientnet.py ...
    tagestimate tag ...       = python multiinference.py ...
    tagestimate report ...    = python -m tagestimate.review.report ...
    tagestimate labels ...    = python labelmap.py ...
    tagestimate labelstudio ... = python -m tagestimate.commands.labelstudio ...
    tagestimate search ...    find images like an image or a key (no script of its own)
    tagestimate learn-tag ... learn a tag from a few examples (no script of its own)
"""

import argparse
import sys

PROG = "tagestimate"
# name -> (what it does, for the command list; the script it stands for, None for a command without one)
COMMANDS = {
    "crawl": ("download NDL illustrations into one folder per tag, or whole books to tag", "newdataclawer.py"),
    "train": ("train the multi-label tagger on per-tag image folders", "multitrain_efficientnet.py"),
    "tag": ("tag every image under an input folder, one output file per item", "multiinference.py"),
    "report": ("rebuild the review report of a tagging output or a training run",
               "python -m tagestimate.review.report"),
    "labels": ("print the tag -> labels table, or check a data set folder against it", "labelmap.py"),
    "labelstudio": ("export tasks to Label Studio, import its annotations as corrections.csv",
                    "python -m tagestimate.commands.labelstudio"),
    "search": ("find the images of a tagged output most like an image or a key", None),
    "learn-tag": ("learn a tag from a few examples and rank every image of a tagged output", None),
}


def command_main(name):
    """The main(argv, prog) of command `name`, imported only when it runs: --help stays fast."""
    if name == "crawl":
        from tagestimate.commands.crawl import main
    elif name == "train":
        from tagestimate.commands.train import main
    elif name == "tag":
        from tagestimate.commands.tag import main
    elif name == "report":
        from tagestimate.review.report import main
    elif name == "labelstudio":
        from tagestimate.commands.labelstudio import main
    elif name == "search":
        from tagestimate.commands.search import main
    elif name == "learn-tag":
        from tagestimate.commands.learntag import main
    else:
        from tagestimate.commands.labels import main
    return main


def build_parser():
    """The top level: the command list for --help, and exit 2 for a missing or unknown command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="The NDL illustration tagger's commands; `tagestimate COMMAND --help` shows "
                               "a command's flags.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, script) in COMMANDS.items():
        commands.add_parser(name, help=f"{summary} (= {script})" if script else summary, add_help=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:  # the command parses the rest itself, under the name "tagestimate NAME"
        return command_main(argv[0])(argv[1:], prog=f"{PROG} {argv[0]}")
    build_parser().parse_args(argv)  # --help, or no or an unknown command: argparse answers and exits
    return 2  # not reached: parse_args exits whenever the first word is not a command


if __name__ == "__main__":
    sys.exit(main())
