"""Labels: NDL's fixed output order, the default tag -> labels table, and user label maps.

A folder named after a tag trains that tag and all its parents, e.g. `picture_landmark`
trains picture, picture_outdoor and picture_landmark.

Two orders live here and must not be confused:
  NDL_LABELS  what the 11 outputs of NDL's published weight file mean, in that file's order.
              Fixed forever; model.py reads NDL's file with it.
  LABELS      the outputs of a model trained with the default map (multitrain_efficientnet.py
              without --labelmap). It starts as NDL's order; new labels go at its end.

To add a label to the default map: append it to LABELS and, unless it is a top-level label,
give it its parent in PARENTS (an alias or an extra folder goes in ALIASES / EXTRA_TAGS).
`python labelmap.py` prints the resulting table. NDL's file keeps loading (NDL_LABELS).
"""

import json

from tagestimate.errors import UserError

# NDL's output order (shared/docs/ndl-weights-format.md). Never derive it from a listing.
NDL_LABELS = (
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

# The default map's outputs, in output order: NDL's, then any added here (append new labels).
LABELS = (*NDL_LABELS,)

# label -> its parent label: an image of a label trains the label and all its ancestors.
PARENTS = {
    "graphic_graph": "graphic",
    "graphic_map": "graphic",
    "graphic_illustcolor": "graphic",
    "picture_indoor": "picture",
    "picture_object": "picture",
    "picture_person": "picture",
    "picture_outdoor": "picture",
    "picture_landmark": "picture_outdoor",
}

# Folders that are not labels themselves: graphic_illust has no output of its own and trains
# `graphic` alone.
EXTRA_TAGS = {
    "graphic_illust": ("graphic",),
}

# Names used in NDL's paper and data set releases for the same folders.
ALIASES = {
    "graphic_illustration": "graphic_illust",
    "graphic_illustrator": "graphic_illustcolor",
}

# Every tag's name in each of LANGUAGES, for people (IIIF labels and bodies, the catalogue CSV, the
# report with --lang): the tag itself stays the machine name. The Japanese names follow the
# descriptions in NDL-ImageTag's readme (ndl-lab/imagetagdataset: e.g. graphic_map "地図の描かれた
# 図版", stamp "印影"); its readme gives no short name, so the wording of each is ours, as are the
# English ones and the names of the parents (graphic, picture) and of picture_person, which it
# does not describe. A label map's "names" adds or overrides names for custom tags.
LANGUAGES = ("en", "ja")
NAMES = {
    "graphic": {"en": "figure or illustration", "ja": "図・イラスト"},
    "picture": {"en": "photograph", "ja": "写真"},
    "graphic_graph": {"en": "graph", "ja": "グラフ"},
    "graphic_map": {"en": "map", "ja": "地図"},
    "graphic_illustcolor": {"en": "colour illustration", "ja": "カラーイラスト"},
    "graphic_illust": {"en": "illustration", "ja": "イラスト"},
    "picture_indoor": {"en": "indoor photograph", "ja": "屋内写真"},
    "picture_object": {"en": "object photograph", "ja": "物品写真"},
    "picture_person": {"en": "person", "ja": "人物写真"},
    "picture_outdoor": {"en": "outdoor photograph", "ja": "屋外写真"},
    "picture_landmark": {"en": "landmark", "ja": "ランドマーク写真"},
    "stamp": {"en": "seal stamp", "ja": "印影"},
}

# The crawler files records that carry no tag at all here; it is never trained (a user
# looks at these images and moves them into a tag folder, or deletes them).
UNTAGGED_FOLDER = "unknown"


class LabelMapError(UserError, ValueError):
    """A label map that cannot be used; the message says what to fix."""


class LabelMap:
    """Output labels plus the folder -> labels table (with aliases)."""

    def __init__(self, labels, tag_labels, aliases=None, names=None):
        self.labels = tuple(labels)
        self.names = {tag: dict(value) for tag, value in (names or {}).items()}  # the map's own "names"
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
            **({"names": {tag: dict(value) for tag, value in sorted(self.names.items())}} if self.names else {}),
        }

    def name(self, tag, language):
        """tag_name() with this map's own names first."""
        return tag_name(tag, language, self.names)


def tag_name(tag, language, names=None):
    """A tag's name in `language` ("en" or "ja"): from `names` ({tag: {language: name}}, e.g. a
    label map's), else NAMES; a tag without one keeps its machine name."""
    for table in (names or {}, NAMES):
        found = table.get(tag, {}).get(language)
        if found:
            return found
    return tag


def config_names(config):
    """{tag: {language: name}} that a model adds to NAMES: its model.json's labelmap "names"."""
    labelmap = getattr(config, "labelmap", None) or {}
    return {tag: dict(value) for tag, value in dict(labelmap.get("names") or {}).items()}


def tag_names(tag, names=None):
    """{language: name} of a tag in every language of LANGUAGES (a IIIF language map's values)."""
    return {language: tag_name(tag, language, names) for language in LANGUAGES}


def default_map_dict():
    """The default map in the JSON form `from_dict` reads (the "parents" form)."""
    return {
        "labels": list(LABELS),
        "parents": dict(PARENTS),
        "tags": {tag: list(values) for tag, values in EXTRA_TAGS.items()},
        "aliases": dict(ALIASES),
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
    return LabelMap(labels, tags, aliases, _names(data.get("names", {}), set(tags) | known, source))


def _names(names, tags, source):
    """A label map's "names": {tag: {"en": name, "ja": name}}, checked."""
    if not isinstance(names, dict):
        raise LabelMapError(f"{source}: 'names' must map a tag to its names, e.g. "
                            '{"my_tag": {"en": "my tag", "ja": "私のタグ"}}')
    for tag, value in names.items():
        if tag not in tags:
            raise LabelMapError(f"{source}: 'names' names {tag!r}, which is not a label or folder of the map")
        if not isinstance(value, dict) or not value or any(
                language not in LANGUAGES or not isinstance(name, str) or not name.strip()
                for language, name in value.items()):
            raise LabelMapError(f"{source}: the names of {tag!r} must map {' or '.join(LANGUAGES)} "
                                "to a non-empty name")
    return names


def _expanded(table):
    """{folder: the labels it trains, in output order} of a LabelMap."""
    return {tag: table.labels_for(tag) for tag in table.tag_labels}


# Folder (tag) name -> the labels an image in that folder trains, in output order; derived
# (and checked, on import) from LABELS, PARENTS, EXTRA_TAGS and ALIASES above: edit those.
TAG_LABELS = _expanded(from_dict(default_map_dict(), source="tagestimate/labels.py"))


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
