"""Print the tag -> training-labels table, or check a data set folder against it.

    python labelmap.py                 # print the table
    python labelmap.py --check DIR     # DIR's folders, their labels and image counts
    python labelmap.py --labelmap my_map.json --check DIR

The table itself lives in tagestimate/labels.py (add a label there), with each tag's English
and Japanese names (labels.NAMES; a label map's "names" adds its own). A folder named after a
tag trains that tag and all its parents, e.g. `picture_landmark` trains picture,
picture_outdoor and picture_landmark.
"""

import argparse
import os
import sys

from tagestimate.errors import UserError

# Re-exported for scripts and users that import them from here; defined in tagestimate.labels.
from tagestimate.labels import (ALIASES, EXTRA_TAGS, LABELS, LANGUAGES, NDL_LABELS, PARENTS, TAG_LABELS,  # noqa: F401
                                UNTAGGED_FOLDER, LabelMap, LabelMapError, default_labelmap, from_dict,
                                load_labelmap)


def check_folder(labelmap, root):
    """Rows (folder, labels or None, image count) for each sub-folder of `root`."""
    from tagestimate.images import list_images  # lazy: keeps `import labelmap` light

    rows = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        # '_' folders are the tools' own, as for the trainer: _rejected/{tag}/ holds images a reviewer took out
        if entry.is_dir() and not entry.name.startswith((".", "_")):
            tag = labelmap.resolve(entry.name)
            labels = labelmap.labels_for(entry.name) if tag else None
            rows.append((entry.name, labels, len(list_images(entry.path))))
    return rows


def build_parser(prog=None):
    from tagestimate.files import HelpFormatter

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Print the tag -> labels table, or check a data set folder against it.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--labelmap", metavar="JSON", default=None,
                        help="a JSON label map to use instead of the built-in NDL table")
    parser.add_argument("--check", metavar="DIR", default=None,
                        help="list DIR's folders with their labels and image counts, and name unknown folders")
    return parser


def main(argv=None, prog=None):
    """The command (`prog`: its name in usage lines, e.g. "tagestimate labels"); returns the exit status."""
    from tagestimate import cli  # lazy, like HelpFormatter: keeps `import labelmap` light

    args = build_parser(prog).parse_args(argv)
    return cli.run(lambda: _labels(args), interrupted="interrupted; labelmap.py only reads, so nothing changed")


def _labels(args):
    from tagestimate.cli import count

    labelmap = load_labelmap(args.labelmap)  # a LabelMapError is a UserError: "error: ...", exit 1
    if args.check is None:
        print("outputs: " + ", ".join(labelmap.labels))
        width = max(len(name) for name in [*labelmap.tag_labels, *labelmap.aliases])
        for tag in sorted(labelmap.tag_labels):
            names = " / ".join(labelmap.name(tag, language) for language in LANGUAGES)
            print(f"{tag:<{width}}  -> {', '.join(labelmap.labels_for(tag))}   ({names})")
        for alias, target in sorted(labelmap.aliases.items()):
            print(f"{alias:<{width}}  =  {target}")
        return 0
    if not os.path.isdir(args.check):
        raise UserError(f"{args.check} is not a folder; pass the data set folder, e.g. --check datasetpdm")
    rows = check_folder(labelmap, args.check)
    unknown = [name for name, labels, _ in rows if labels is None and name != UNTAGGED_FOLDER]
    width = max([len(name) for name, _, _ in rows] + [6])
    for name, labels, images in rows:
        if labels:
            shown = ", ".join(labels)
        elif name == UNTAGGED_FOLDER:
            shown = "not trained (records without tags from the crawler; move them into tag folders)"
        else:
            shown = "UNKNOWN (not in the label map)"
        print(f"{name:<{width}}  {images:>6} {'image ' if images == 1 else 'images'}  -> {shown}")
    print(f"{count(len(rows), 'folder')}, {count(sum(c for _, _, c in rows), 'image')}")
    if unknown:
        print(f"unknown {'folder' if len(unknown) == 1 else 'folders'}: " + ", ".join(unknown), file=sys.stderr)
        return 1
    return 0
