"""Label Studio tasks from a tagging output or a training run's suspect list, and the labelling config.

    python -m tagestimate labelstudio export OUTPUT_OR_RUN --out tasks.json   # tasks with pre-annotations
    python -m tagestimate labelstudio config [OUTPUT_OR_RUN | model.json]     # the labelling config (XML)

Each task's `data` says where its image is for Label Studio (`image`: a local-files URL or a URL
under --target-base) and for us (`path`, `item`, `key`), which tags the model gave (`predicted`,
also the task's pre-annotation, a `predictions` entry) and which tags are valid (`labels`), so
that `labelstudio import` (labelstudio_import.py) maps an annotation back without guessing.
"""

import collections
import csv
import io
import json
import logging
import os
import urllib.parse
from xml.sax.saxutils import quoteattr

from tagestimate import modelconfig, storage
from tagestimate.errors import UserError
from tagestimate.files import printable_path, sha256_file, write_atomic
from tagestimate.labels import LABELS
from tagestimate.records import natural_key
from tagestimate.review import report

log = logging.getLogger(__name__)

FROM_NAME, TO_NAME = "tags", "image"  # the config's <Choices name> and <Image name>
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL form for files under its document root
CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "labelstudio_config.xml")
ISSUES_NAME = "label_issues.csv"  # a training run's suspect list (written by the trainer)
BEST_WEIGHTS = "best.weights.h5"
VERSION_CHARS = 12  # model_version: this many hex digits of the weight file's SHA-256
UNKNOWN_VERSION = "unknown"
MAX_JSON_BYTES = 512 << 20  # a tasks or export file over this is refused (about a million tasks)

Entry = collections.namedtuple("Entry", "item key path tags score note")  # tags: [(tag, confidence)]


class LabelStudioError(UserError, ValueError):
    """A source, flag or file that Label Studio work cannot use; the message says what to do."""


# ---------------------------------------------------------------- the labelling config

def config_xml(choices):
    """The multi-label config: the image, a note line, and one checkbox per tag (in `choices` order)."""
    # Two columns: the image, and beside it the note and the tags, so no tag is below the fold.
    lines = ["<View>",
             '  <View style="display: flex; gap: 1em">',
             '    <View style="flex: 3">',
             f'      <Image name="{TO_NAME}" value="$image" zoomControl="true"/>',
             "    </View>",
             '    <View style="flex: 1">',
             '      <Text name="note" value="$note"/>',
             f'      <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false">']
    lines += [f"        <Choice value={quoteattr(choice)}/>" for choice in choices]
    lines += ["      </Choices>", "    </View>", "  </View>", "</View>"]
    return "\n".join(lines) + "\n"


def default_config():
    """The config kept in the repo: NDL's labels (tests check it equals config_xml(LABELS))."""
    with open(CONFIG_FILE, encoding="utf-8") as handle:
        return handle.read()


def source_choices(source):
    """The tags a config offers for `source`: an output folder, a training run folder or a model.json."""
    if os.path.isfile(source):
        return _model_choices(os.path.dirname(os.path.abspath(source)))
    if os.path.isdir(source) and os.path.exists(os.path.join(source, modelconfig.CONFIG_NAME)):
        return _model_choices(source)
    if os.path.isdir(source):
        labels = report.read_run_info(source).get("labels")
        if isinstance(labels, list) and labels:
            return [str(label) for label in labels]
        raise LabelStudioError(f"{printable_path(source)} has no html/run.json naming its labels; tag it again "
                               "with the report on, or pass the model.json of its weights")
    raise LabelStudioError(f"{printable_path(source)} is neither a folder nor a model.json; pass a tagging output, "
                           "a training run folder or a model.json")


def _model_choices(folder):
    """A model's labels, then the data set's folder tags that are not labels (e.g. graphic_illust)."""
    config = modelconfig.read_config(folder)  # a WeightsError (a UserError) names the file
    tags = sorted((config.labelmap or {}).get("tags", {}))
    return list(config.labels) + [tag for tag in tags if tag not in config.labels]


# ---------------------------------------------------------------- reading the sources

def model_version(weights):
    """The first VERSION_CHARS hex digits of the weight file's SHA-256; UNKNOWN_VERSION when it is gone."""
    if weights and os.path.isfile(weights):
        return sha256_file(weights)[:VERSION_CHARS]
    log.warning("the weight file %s is gone, so the tasks' model_version is %r",
                printable_path(weights or "(none named)"), UNKNOWN_VERSION)
    return UNKNOWN_VERSION


def output_entries(output_dir, min_confidence=None, inputpath=None):
    """(labels, model version, image root, [Entry], problems) of a tagging output folder."""
    info = report.read_run_info(output_dir)
    labels = [str(label) for label in info.get("labels") or LABELS]
    root = inputpath or info.get("input")
    sources = {}
    if inputpath:
        from tagestimate.tag.inference import find_items

        sources = {item.name: dict(item.images) for item in find_items(inputpath)[0]}
    entries, problems = [], []
    files = report.list_item_files(output_dir)
    if not files:
        raise LabelStudioError(f"{printable_path(output_dir)} holds no item output ({{item}}.json, .csv or "
                               ".iiif.json); pass a tagging output folder or a training run folder")
    for item, path in files.items():
        try:
            tags = report.read_tags(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{printable_path(path)} cannot be read ({error}); its images were left out")
            continue
        side = report.read_sidecar(output_dir, item)
        paths = {key: image for key, (image, _) in side[2].items()} if side else {}
        paths = {**sources.get(item, {}), **paths}
        for key in sorted(tags, key=natural_key):
            if key not in paths:
                problems.append(f"image {key!r} of item {item!r} has no known file (no html/data sidecar); "
                                "pass --inputpath with the folder it was tagged from")
                continue
            kept = [(tag, conf) for tag, conf in tags[key] if min_confidence is None or conf >= min_confidence]
            score = min((conf for _, conf in kept), default=0.0)
            note = f"item {item}, image {key}: the model's tags are preselected"
            entries.append(Entry(item, key, paths[key], kept, round(score, 4), note))
    return labels, model_version(info.get("weights")), root, entries, problems


def run_entries(run_dir, min_score=None):
    """(labels, model version, image root, [Entry], problems) of a training run's label_issues.csv."""
    config = modelconfig.read_config(run_dir)
    data = (config.training or {}).get("data") or ""
    path = os.path.join(run_dir, ISSUES_NAME)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise LabelStudioError(f"{printable_path(run_dir)} has no {ISSUES_NAME}; train with --folds K (or a "
                               "validation split) so the trainer lists its suspect labels") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LabelStudioError(f"cannot read {printable_path(path)} ({error}); train again to rewrite it") from None
    entries, problems = [], []
    for number, row in enumerate(rows, start=2):
        row = {_column(name): (value or "").strip() for name, value in row.items() if name}
        if not row.get("path") or not row.get("folder_tag"):
            problems.append(f"{ISSUES_NAME} line {number} has no path or folder tag; left out")
            continue
        try:
            score = float(row.get("score") or 0)
        except ValueError:
            problems.append(f"{ISSUES_NAME} line {number}: score {row['score']!r} is not a number; left out")
            continue
        if min_score is not None and score < min_score:
            continue
        image = row["path"] if os.path.isabs(row["path"]) else os.path.join(data, row["path"])
        folder_tags = _split(row["folder_tag"])
        note = (f"folder tag: {', '.join(folder_tags)} (preselected); {_suggestion(row)} (suspect score {score:g})"
                + (f"; source: {row['source']}" if row.get("source") else ""))
        entries.append(Entry("", row["path"], os.path.abspath(image), [(tag, 1.0) for tag in folder_tags],
                             round(score, 4), note))
    return _model_choices(run_dir), model_version(os.path.join(run_dir, BEST_WEIGHTS)), data, entries, problems


def _suggestion(row):
    """What the model thinks of a suspect, in words: the trainer's suspected_missing / suspected_wrong
    ({label: probability} as JSON), or a plain suspected_labels list."""
    if "suspected_missing" in row or "suspected_wrong" in row:
        parts = []
        for column, verb in (("suspected_missing", "would add"), ("suspected_wrong", "disputes")):
            try:
                found = json.loads(row.get(column) or "{}")
            except ValueError:
                found = {}
            if isinstance(found, dict) and found:
                parts.append(f"{verb} " + ", ".join(f"{label} ({float(p):.2f})" if isinstance(p, (int, float))
                                                     else str(label) for label, p in found.items()))
        return "the model " + (" and ".join(parts) if parts else "names no label")
    return f"the model suggests {', '.join(_split(row.get('suspected_labels', ''))) or 'no tag'}"


def _column(name):
    """'folder tag', 'Folder_Tag', 'suspected labels' -> folder_tag, suspected_labels; 'suspected' too."""
    name = "_".join(name.strip().lower().replace("-", " ").split())
    return {"suspected": "suspected_labels", "folder": "folder_tag", "tag": "folder_tag"}.get(name, name)


def _split(text):
    """Tags in a cell: separated by ';', '|', ',' or spaces."""
    for separator in ";|,":
        text = text.replace(separator, " ")
    return [tag for tag in text.split() if tag]


# ---------------------------------------------------------------- tasks

def image_url(path, root, target_base=None, local_root=None):
    """What Label Studio opens: target_base + the path under `root`, or a local-files URL under local_root."""
    if target_base:
        relative = _relative(path, root, "--target-base needs it under the input folder")
        return target_base.rstrip("/") + "/" + urllib.parse.quote(relative)
    relative = _relative(path, local_root, "pass a --local-files-root that holds every image")
    return LOCAL_FILES + urllib.parse.quote(relative, safe="/")


def _relative(path, root, remedy):
    if not root:
        raise LabelStudioError(f"the image folder of {printable_path(path)} is unknown; {remedy}")
    if storage.on_disk(path) and storage.on_disk(root):
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    else:  # s3:// and the like: a plain prefix
        prefix = root.rstrip("/") + "/"
        relative = path[len(prefix):] if path.startswith(prefix) else os.pardir
    if relative == os.pardir or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
        raise LabelStudioError(f"image {printable_path(path)} is not under {printable_path(root)}; {remedy}")
    return relative.replace(os.sep, "/")


def make_task(entry, url, labels, version):
    """One Label Studio task: data for both sides, and the predicted tags as a choices pre-annotation."""
    predicted = [tag for tag, _ in entry.tags]
    data = {"image": url, "note": entry.note, "item": entry.item, "key": entry.key,
            "path": printable_path(os.path.abspath(entry.path)) if storage.on_disk(entry.path) else entry.path,
            "model_version": version, "predicted": predicted, "labels": list(labels)}
    result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": predicted}}]
    return {"data": data, "predictions": [{"model_version": version, "score": entry.score,
                                           "result": result if predicted else []}]}


def export(source, out, target_base=None, local_files_root=None, min_confidence=None, inputpath=None):
    """Write Label Studio tasks for `source` to `out`; returns (tasks written, problems, local-files root)."""
    if not os.path.isdir(source):
        raise LabelStudioError(f"{printable_path(source)} is not a folder; pass a tagging output folder or a "
                               "training run folder")
    if os.path.exists(os.path.join(source, modelconfig.CONFIG_NAME)):
        labels, version, root, entries, problems = run_entries(source, min_confidence)
    else:
        labels, version, root, entries, problems = output_entries(source, min_confidence, inputpath)
    local_root = None
    if not target_base:
        if not (local_files_root or root):
            raise LabelStudioError(f"the input folder of {printable_path(source)} is unknown; pass "
                                   "--local-files-root (Label Studio's document root) or --target-base")
        # Label Studio serves files only under a Local Storage strictly inside its document root: by
        # default the root is the input folder's parent, so that the storage can be the input folder.
        local_root = os.path.abspath(local_files_root or os.path.dirname(os.path.abspath(root)))
    tasks = []
    for entry in entries:
        if storage.on_disk(entry.path) and not os.path.isfile(entry.path):
            problems.append(f"image {printable_path(entry.path)} is gone; its task was left out")
            continue
        unknown = [tag for tag, _ in entry.tags if tag not in labels]
        if unknown:
            problems.append(f"image {printable_path(entry.path)} has tags not in the model's labels "
                            f"({', '.join(unknown)}); its task was left out")
            continue
        tasks.append(make_task(entry, image_url(entry.path, root, target_base, local_root), labels, version))
    write_atomic(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
    return len(tasks), problems, local_root and (local_root, storage_folder(tasks, local_root))


def storage_folder(tasks, local_root):
    """The folder a Local Storage should name: the images' common folder, when it is inside local_root
    (Label Studio refuses the document root itself); None when the images lie right in the root."""
    folders = [os.path.dirname(task["data"]["path"]) for task in tasks]
    common = os.path.commonpath(folders) if folders else None
    inside = common and common.startswith(local_root.rstrip(os.sep) + os.sep)
    return common if inside else None


def read_json(path, what):
    """A JSON file's value; LabelStudioError naming `path` when it is unreadable or cut short."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as error:
        raise LabelStudioError(f"cannot read {what} {printable_path(path)} ({error.strerror}); check the path") \
            from None
    if len(data) > MAX_JSON_BYTES:
        raise LabelStudioError(f"{what} {printable_path(path)} is over {MAX_JSON_BYTES:,} bytes; export the project "
                               "in parts (nothing was written)")
    try:
        return json.load(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError) as error:
        raise LabelStudioError(f"{what} {printable_path(path)} is not complete JSON ({error}); download or export "
                               "it again (nothing was written)") from None
