"""The tag -> training-labels table, in one place, and a small CLI to inspect it.

    python labelmap.py                 # print the table
    python labelmap.py --check DIR     # DIR's folders, their labels and image counts
    python labelmap.py --labelmap my_map.json --check DIR

A folder named after a tag trains that tag and all its parents, e.g. `picture_landmark`
trains picture, picture_outdoor and picture_landmark. The order of LABELS is the order of
the model's outputs, and is the order of NDL's published weight file.
"""

import argparse
import json
import os
import sys

from tagestimate.errors import UserError

# NDL's output order (shared/docs/ndl-weights-format.md). Never derive it from a listing.
LABELS = (
    "graphic",
    "picture",
    "graphic_graph",
    "graphic_map",
    "graphic_illustcolor",
    "picture_indoor",
    "picture_object",
    "picture_person",
    "picture_outdoor",
    "picture_landmark",
    "stamp",
)

# Folder (tag) name -> the labels an image in that folder trains, in LABELS order.
# graphic_illust has no output of its own: it trains `graphic` alone.
TAG_LABELS = {
    "graphic": ("graphic",),
    "picture": ("picture",),
    "stamp": ("stamp",),
    "graphic_illust": ("graphic",),
    "graphic_graph": ("graphic", "graphic_graph"),
    "graphic_map": ("graphic", "graphic_map"),
    "graphic_illustcolor": ("graphic", "graphic_illustcolor"),
    "picture_indoor": ("picture", "picture_indoor"),
    "picture_object": ("picture", "picture_object"),
    "picture_person": ("picture", "picture_person"),
    "picture_outdoor": ("picture", "picture_outdoor"),
    "picture_landmark": ("picture", "picture_outdoor", "picture_landmark"),
}

# The crawler files records that carry no tag at all here; it is never trained (a user
# looks at these images and moves them into a tag folder, or deletes them).
UNTAGGED_FOLDER = "unknown"

# Names used in NDL's paper and data set releases for the same folders.
ALIASES = {
    "graphic_illustration": "graphic_illust",
    "graphic_illustrator": "graphic_illustcolor",
}


class LabelMapError(UserError, ValueError):
    """A label map that cannot be used; the message says what to fix."""


class LabelMap:
    """Output labels plus the folder -> labels table (with aliases)."""

    def __init__(self, labels, tag_labels, aliases=None):
        self.labels = tuple(labels)
        self.tag_labels = {tag: tuple(values) for tag, values in tag_labels.items()}
        self.aliases = dict(aliases or {})
        self._index = {label: i for i, label in enumerate(self.labels)}

    def resolve(self, folder):
        """The canonical tag of a folder name, or None when the map does not know it."""
        name = self.aliases.get(folder, folder)
        return name if name in self.tag_labels else None

    def labels_for(self, folder):
        """The labels a folder trains, in output order; LabelMapError if unknown."""
        tag = self.resolve(folder)
        if tag is None:
            raise LabelMapError(
                f"folder {folder!r} is not in the label map; rename it to one of "
                f"{', '.join(sorted(self.tag_labels))} or pass --labelmap with a map that has it"
            )
        return tuple(sorted(self.tag_labels[tag], key=self._index.__getitem__))

    def vector(self, folder):
        """A 0/1 list over self.labels for one folder."""
        wanted = set(self.labels_for(folder))
        return [1 if label in wanted else 0 for label in self.labels]

    def to_dict(self):
        return {
            "labels": list(self.labels),
            "tags": {tag: list(values) for tag, values in sorted(self.tag_labels.items())},
            "aliases": dict(sorted(self.aliases.items())),
        }


def default_labelmap():
    return LabelMap(LABELS, TAG_LABELS, ALIASES)


def from_dict(data, source="label map"):
    """Build and validate a LabelMap from the JSON form.

    Two forms are accepted:
      {"labels": [...], "tags": {"folder": ["label", ...]}, "aliases": {...}}
      {"labels": [...], "parents": {"child": "parent"}, "aliases": {...}}
    In the second form each label trains itself and its ancestors; extra folders may be
    given in "tags" too (e.g. a folder that trains a parent alone).
    """
    if not isinstance(data, dict):
        raise LabelMapError(f"{source}: expected a JSON object with 'labels' and 'tags' or 'parents'")
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise LabelMapError(f"{source}: 'labels' must be a non-empty list of label names")
    if len(set(labels)) != len(labels):
        raise LabelMapError(f"{source}: 'labels' lists a name twice")
    known = set(labels)
    tags = {}
    parents = data.get("parents", {})
    if not isinstance(parents, dict):
        raise LabelMapError(f"{source}: 'parents' must map a label to its parent label")
    for child, parent in parents.items():
        for name in (child, parent):
            if not isinstance(name, str) or name not in known:
                raise LabelMapError(f"{source}: 'parents' names {name!r}, which is not in 'labels'")
    for label in labels:
        chain, node = [label], label
        while node in parents:
            node = parents[node]
            if node in chain:
                raise LabelMapError(f"{source}: 'parents' has a cycle through {node!r}")
            chain.append(node)
        tags[label] = chain
    raw_tags = data.get("tags", {})
    if not isinstance(raw_tags, dict):
        raise LabelMapError(f"{source}: 'tags' must map a folder name to a list of labels")
    for tag, values in raw_tags.items():
        if not isinstance(values, list) or not values:
            raise LabelMapError(f"{source}: folder {tag!r} has an empty or non-list label list")
        unknown = [v for v in values if not isinstance(v, str) or v not in known]
        if unknown:
            raise LabelMapError(f"{source}: folder {tag!r} names unknown label(s) {unknown}; add them to 'labels'")
        tags[tag] = list(values)
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise LabelMapError(f"{source}: 'aliases' must map a name to a folder name")
    for alias, target in aliases.items():
        if alias in tags:
            raise LabelMapError(f"{source}: alias {alias!r} is also a folder name; remove one of them")
        if not isinstance(target, str) or target not in tags:
            raise LabelMapError(f"{source}: alias {alias!r} points to {target!r}, which is not a folder in the map")
    return LabelMap(labels, tags, aliases)


def load_labelmap(path=None):
    """The default table, or the validated JSON map at `path`."""
    if path is None:
        return default_labelmap()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise LabelMapError(f"cannot read label map {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise LabelMapError(f"label map {path} is not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise LabelMapError(f"label map {path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    return from_dict(data, source=str(path))


def check_folder(labelmap, root):
    """Rows (folder, labels or None, image count) for each sub-folder of `root`."""
    from tagestimate.images import list_images  # lazy: keeps `import labelmap` light

    rows = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            tag = labelmap.resolve(entry.name)
            labels = labelmap.labels_for(entry.name) if tag else None
            rows.append((entry.name, labels, len(list_images(entry.path))))
    return rows


def build_parser():
    from tagestimate.files import HelpFormatter

    parser = argparse.ArgumentParser(
        description="Print the tag -> labels table, or check a data set folder against it.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--labelmap", metavar="JSON", default=None,
                        help="a JSON label map to use instead of the built-in NDL table")
    parser.add_argument("--check", metavar="DIR", default=None,
                        help="list DIR's folders with their labels and image counts, and name unknown folders")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        labelmap = load_labelmap(args.labelmap)
    except LabelMapError as error:
        sys.exit(f"error: {error}")
    if args.check is None:
        print("outputs: " + ", ".join(labelmap.labels))
        width = max(len(name) for name in [*labelmap.tag_labels, *labelmap.aliases])
        for tag in sorted(labelmap.tag_labels):
            print(f"{tag:<{width}}  -> {', '.join(labelmap.labels_for(tag))}")
        for alias, target in sorted(labelmap.aliases.items()):
            print(f"{alias:<{width}}  =  {target}")
        return 0
    if not os.path.isdir(args.check):
        sys.exit(f"error: {args.check} is not a folder; pass the data set folder, e.g. --check datasetpdm")
    rows = check_folder(labelmap, args.check)
    unknown = [name for name, labels, _ in rows if labels is None and name != UNTAGGED_FOLDER]
    width = max([len(name) for name, _, _ in rows] + [6])
    for name, labels, count in rows:
        if labels:
            shown = ", ".join(labels)
        elif name == UNTAGGED_FOLDER:
            shown = "not trained (records without tags from the crawler; move them into tag folders)"
        else:
            shown = "UNKNOWN (not in the label map)"
        print(f"{name:<{width}}  {count:>6} images  -> {shown}")
    print(f"{len(rows)} folders, {sum(c for _, _, c in rows)} images")
    if unknown:
        print("unknown folders: " + ", ".join(unknown), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
