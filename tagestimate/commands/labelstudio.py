"""Review tags in Label Studio: export tasks with the model's tags preselected, import the annotations
back as corrections.csv, print the labelling config.

    python -m tagestimate labelstudio export OUTPUT_OR_RUN --out tasks.json [--local-files-root DIR | --target-base URL]
    python -m tagestimate labelstudio config [OUTPUT_OR_RUN | model.json] > config.xml
    python -m tagestimate labelstudio import EXPORT.json --out corrections.csv [--tasks tasks.json]
    python -m tagestimate labelstudio import --url http://127.0.0.1:8080 --token T --project 1 --out corrections.csv

The work lives in tagestimate/review/labelstudio.py (export, config) and labelstudio_import.py.
"""

import argparse
import logging
import os
import sys

from tagestimate import cli
from tagestimate.files import HelpFormatter, printable_path

log = logging.getLogger(__name__)


def build_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="Review tags in Label Studio: `export` writes tasks with the model's tags preselected, "
                    "`import` turns the annotations into corrections.csv (for newdataclawer.py "
                    "--from-corrections), `config` prints the labelling config for the project.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    export = actions.add_parser("export", formatter_class=HelpFormatter,
                                help="write Label Studio tasks (JSON) for a tagging output or a training run",
                                description="Write Label Studio tasks for the images of a tagging output folder "
                                            "(their tags preselected) or of a training run's label_issues.csv "
                                            "(their folder tag preselected, the model's suggestion in the note).")
    export.add_argument("source", metavar="OUTPUT_OR_RUN",
                        help="a multiinference.py output folder, or a multitrain_efficientnet.py run folder")
    export.add_argument("--out", required=True, metavar="TASKS.json", help="the tasks file to write")
    where = export.add_mutually_exclusive_group()
    where.add_argument("--local-files-root", metavar="DIR", default=None,
                       help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: image URLs become "
                            "/data/local-files/?d=PATH-UNDER-DIR (default: the parent of the folder the images "
                            "were tagged from, or of the run's data folder)")
    where.add_argument("--target-base", metavar="URL", type=cli.http_url, default=None,
                       help="serve the images yourself: image URLs become URL/PATH-UNDER-THE-INPUT-FOLDER")
    export.add_argument("--min-confidence", metavar="P", type=cli.bounded(float, 0, 1), default=None,
                        help="preselect only tags of at least this confidence (a run: list only suspects of at "
                             "least this score) (default: every tag of the output, every suspect)")
    export.add_argument("--inputpath", metavar="DIR", default=None,
                        help="the folder the output was tagged from, for items tagged with --no-report (no "
                             "sidecar says where their images are) (default: the one html/run.json names)")

    imports = actions.add_parser("import", formatter_class=HelpFormatter,
                                 help="turn a Label Studio JSON export into corrections.csv",
                                 description="Compare each annotation's final choices with the tags the model "
                                             "predicted: kept -> confirm, dropped -> reject, new -> add.")
    imports.add_argument("export", metavar="EXPORT.json", nargs="?", default=None,
                         help="Label Studio's JSON export of the project (not JSON-MIN or CSV); or use --url")
    imports.add_argument("--out", required=True, metavar="CSV", help="the corrections file to write")
    imports.add_argument("--tasks", metavar="TASKS.json", default=None,
                         help="the tasks file `export` wrote: tasks not in it (another output or model) are left "
                              "out, and its predicted tags are the ones compared (default: each task's own data)")
    imports.add_argument("--url", metavar="URL", type=cli.http_url, default=None,
                         help="pull the export from this running Label Studio server instead of a file")
    imports.add_argument("--token", metavar="T", default=None,
                         help="with --url: an access token (Account & Settings; default: $LABEL_STUDIO_API_KEY)")
    imports.add_argument("--project", metavar="ID", type=cli.bounded(int, 1), default=None,
                         help="with --url: the project's number (in its address, /projects/ID/)")

    config = actions.add_parser("config", formatter_class=HelpFormatter,
                                help="print the labelling config (XML) for a Label Studio project",
                                description="Print the labelling config: an image, a note and one checkbox "
                                            "per tag. Without SOURCE, the one kept in the repo (NDL's labels).")
    config.add_argument("source", metavar="SOURCE", nargs="?", default=None,
                        help="a tagging output folder, a training run folder or a model.json: its labels")
    return parser


def main(argv=None, prog=None):
    """The command (`prog`: its name in usage lines); returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.action == "import":
        if (args.export is None) == (args.url is None):
            parser.error("import: pass EXPORT.json or --url (with --token and --project), not both")
        if args.url and (args.project is None or not (args.token or os.environ.get("LABEL_STUDIO_API_KEY"))):
            parser.error("import --url needs --project and --token (or $LABEL_STUDIO_API_KEY)")
    cli.setup_logging()
    work = {"export": _export, "import": _import, "config": _config}[args.action]
    return cli.run(lambda: work(args), interrupted="interrupted; the file being written was not replaced")


def _config(args):
    from tagestimate.review import labelstudio

    text = labelstudio.default_config() if args.source is None else \
        labelstudio.config_xml(labelstudio.source_choices(args.source))
    sys.stdout.write(text)
    return 0


def _export(args):
    from tagestimate.review import labelstudio

    written, problems, local_files = labelstudio.export(args.source, args.out, args.target_base,
                                                       args.local_files_root, args.min_confidence, args.inputpath)
    for problem in problems:
        log.warning("%s", problem)
    print(f"{cli.count(written, 'task')} written to {printable_path(args.out)}")
    if local_files:
        root, folder = local_files
        storage = (f"with the path {printable_path(folder)}" if folder else
                   "for each folder of images inside that root (Label Studio refuses the root itself)")
        print("start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
              f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={printable_path(root)}, and in the project's Cloud Storage "
              f"settings add a Local Files source storage {storage} (do not sync it), so that the images open")
    return _status(problems, written, "task", args.out)


def _import(args):
    from tagestimate.review import labelstudio_import as importer

    if args.url:
        token = args.token or os.environ["LABEL_STUDIO_API_KEY"]
        tasks = importer.pull_export(args.url, token, args.project)
    else:
        tasks = importer.load_export(args.export)
    reference = importer.reference_tasks(args.tasks) if args.tasks else None
    outcome = importer.import_export(tasks, args.out, reference, printable_path(args.tasks or ""))
    for line in outcome.notes + outcome.left_out:
        log.warning("%s", line)
    print(f"{cli.count(len(outcome.rows), 'correction')} from {cli.count(outcome.annotated, 'annotated task')} "
          f"written to {printable_path(args.out)}"
          + (f"; {cli.count(outcome.unannotated, 'task')} not annotated yet" if outcome.unannotated else ""))
    return _status(outcome.left_out, len(outcome.rows), "correction", args.out)


def _status(problems, written, noun, out):
    """1 when something was left out (the warnings say what), after the valid part was written."""
    if problems:
        print(f"error: {cli.count(len(problems), 'problem')} (the warnings above say what was left out); "
              f"the other {cli.count(written, noun)} are in {printable_path(out)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
