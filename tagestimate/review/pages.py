"""HTML of the review reports: Jinja2 templates in templates/ (autoescaped, all on one page shell,
base.html), CSS and JavaScript in static/, inlined at render time so that each page is one file
that works from disk, offline.

Every value a template prints is escaped unless it is one of our own static files, so item
names, image keys, labels and tags (hostile text from folder names, model.json and output
files) show as text wherever they appear: element text, attributes, data-* attributes (JSON
encoded, then escaped), links (percent-encoded by `href`, then escaped).

To add a section: compute its data in Python, pass it to `render`, print it in the template.
"""

import functools
import json
import os
import types
import urllib.parse

import jinja2
from markupsafe import Markup, escape

from tagestimate import storage
from tagestimate.files import printable_path
from tagestimate.formats import natural_key
from tagestimate.review.cards import gallery, item_card
from tagestimate.review.explore import anchor
from tagestimate.review.text import NAMING, href, json_text, tag_name  # noqa: F401 (NAMING: report.py's)
from tagestimate.tag.inference import ERRORS_NAME

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")


def quote_all(text):
    """A value for a URL fragment (#tag=...): '&', '=' and '/' encoded too."""
    return urllib.parse.quote(str(text), safe="", errors="surrogateescape")


def breakable(text):
    """Escaped text that may wrap after each "_" (long labels in narrow table headers)."""
    return Markup("_<wbr>").join(escape(part) for part in str(text).split("_"))


def script_json(value):
    """JSON to print inside a <script type="application/json"> element, whose text the browser
    never unescapes: '<', '>' and '&' as \\u escapes, so a label "</script>" cannot end it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def review_image(path):
    """The image path a reviewer's corrections.csv names: absolute on disk, a URL (s3://) as it is."""
    if not path:
        return None
    return printable_path(os.path.abspath(path) if storage.on_disk(path) else path)


@functools.lru_cache(maxsize=None)
def static(name):
    """One of our own static files, to inline as it is (trusted, so not escaped)."""
    with open(os.path.join(STATIC, name), encoding="utf-8") as handle:
        text = handle.read()
    if "</" in text:  # would end the <style> or <script> element early
        raise ValueError(f"static/{name} must not contain '</'")
    return Markup(text)


@functools.lru_cache(maxsize=None)
def environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(href=href, quote=quote_all, tojson_text=json_text, breakable=breakable, thousands="{:,}".format,
                       script_json=script_json)
    env.filters.update(tagname=tag_name)
    env.globals.update(static=static, body_class="", body_data=(), scripts=())
    return env


def render(template, **context):
    """The page `template` (in templates/) filled with `context`, as a string."""
    return environment().get_template(template).render(**context)


# ---------------------------------------------------------------- the inference report's pages

INFERENCE_STYLES = ("base.css", "inference.css")
ITEM_SCRIPTS = ("item.js", "explore.js", "review.js")  # review.js: confirm, reject, add tags; export corrections.csv
MAX_ERRORS_SHOWN = 1000


# What a template shows of one card, chip or link: attributes, not dict keys, because Jinja looks an
# attribute up first and a dict's miss raises and catches an exception, for each field of thousands of
# cards (a tenth of a report's build).
Fields = types.SimpleNamespace


def card(item, key, thresholds, border, thumb, cams):
    """What an item page shows of one image: thumbnail, tags, borderline labels below threshold.

    thumb: the thumbnail's href or None; cams: {tag: (href, flat)} of its Grad-CAM overlays.
    """
    tags = item.tags[key]
    full = item.probabilities.get(key)
    kept = {tag for tag, _ in tags}
    chips = []
    for tag, confidence in tags:
        cam, flat = cams.get(tag, (None, False))
        near = tag in thresholds and abs(round(confidence, 3) - thresholds[tag]) <= border
        chips.append(Fields(tag=tag, confidence=confidence, cam=cam, flat=flat, near=near,
                            threshold=thresholds.get(tag, 0.0)))
    # Known only with the sidecar's full probabilities: labels just below their threshold.
    below = [Fields(tag=label, value=value, threshold=thresholds[label])
             for label, value in (full or {}).items()
             if label not in kept and label in thresholds and abs(round(value, 3) - thresholds[label]) <= border]
    probabilities = full or {tag: confidence for tag, confidence in tags}
    return Fields(key=key, thumb=thumb, chips=chips, below=below, tags=[tag for tag, _ in tags],
                  probabilities={label: round(value, 3) for label, value in probabilities.items()})


def item_pages(item, labels, names, page_size, pages_dir, border, index, thumb, overlay, similar=None):
    """[(file name, html)] of an item's gallery pages: `names`, `page_size` images each.

    thumb(key): a thumbnail's path from pages_dir, or None; overlay(key, tag): (Grad-CAM overlay's path, flat) or None
    (overlay itself None: the item has no overlays); similar(key): the card's neighbours
    (explore.Collection.similar) or None.
    """
    keys = sorted(item.tags, key=natural_key)
    thresholds = dict(zip(item.labels, item.thresholds))
    body_data = (("thresholds", json_text(thresholds)), ("border", f"{border:g}"))

    relative = {}  # folder -> its path from pages_dir: an item's images share a few folders (relpath is slow)

    def source(path):
        folder, name = os.path.split(path)
        if folder not in relative:
            relative[folder] = os.path.relpath(folder or ".", pages_dir)
        return os.path.join(relative[folder], name)

    def one_card(key):
        cams = {}
        for tag, _ in item.tags[key] if overlay else ():
            found = overlay(key, tag)
            if found:
                cams[tag] = (os.path.relpath(found[0], pages_dir), found[1])
        made = card(item, key, thresholds, border, thumb(key), cams)
        made.source = source(item.paths[key]) if item.paths.get(key) else None
        made.image = review_image(item.paths.get(key))  # for review.js: data-review-image
        made.anchor, made.similar = anchor(key), similar(key) if similar else []
        return made

    shown_name, shown_border = escape(item.name), escape(f"{border:g}")
    return [(name, render("item.html", title=f"{item.name} - tags", styles=INFERENCE_STYLES, scripts=ITEM_SCRIPTS,
                          body_data=body_data, item_name=item.name, count=len(keys), number=number, names=names,
                          labels=labels, border=f"{border:g}", has_cams=overlay is not None, index=index,
                          cards=gallery([one_card(key) for key in keys[number * page_size:(number + 1) * page_size]],
                                        item_card, shown_name, shown_border),
                          full=len(item.probabilities) == len(keys)))
            for number, name in enumerate(names)]


def index_page(output_dir, rows, labels, totals, errors, run_info, unreadable, pages_folder, border, explore=None):
    """output/index.html: the run's overview, tags, items, unreadable outputs, skipped files.

    explore: {"tag_pages": {label: page}, "map": page or None, "notes": [...]} (explore_pages.Explorer)."""
    explore = explore or {"tag_pages": {}, "map": None, "notes": []}
    thresholds = dict(zip(run_info.get("labels", []), run_info.get("thresholds", [])))
    overview = [("items", f"{len(rows):,}"), ("images", f"{totals['images']:,}"),
                ("images with no tag", f"{totals['untagged']:,}"),
                ("files skipped", f"{len(errors):,}" + (f" (see {ERRORS_NAME} and below)" if errors else ""))]
    if run_info.get("input"):
        overview.insert(0, ("input folder", run_info["input"]))
    if run_info:
        overview += [("weights", f"{run_info.get('weights', '?')} ({run_info.get('kind', '?')})"),
                     ("backend", run_info.get("backend", "?")), ("latest run", run_info.get("date", "?")),
                     ("Grad-CAM", "yes (--explain): hover or click a tag on an item page" if run_info.get("explain")
                      else "no (run with --explain)")]
    tag_rows = [{"label": label, "threshold": thresholds.get(label), "images": totals["tags"][label],
                 "item_count": totals["items"][label], "border": totals["border"][label],
                 "page": explore["tag_pages"].get(label) and f"{pages_folder}/{explore['tag_pages'][label]}"}
                for label in labels]
    item_rows = [{"name": name, "link": f"{pages_folder}/{page}", "count": count, "untagged": untagged,
                  "counts": counts} for name, page, count, untagged, counts in rows]
    return render("index.html", title="Tagging report", styles=INFERENCE_STYLES,
                  folder=printable_path(os.path.basename(os.path.abspath(output_dir))), overview=overview,
                  tag_rows=tag_rows, item_rows=item_rows, labels=labels, border=f"{border:g}",
                  unreadable=unreadable, errors=errors, max_errors=MAX_ERRORS_SHOWN, errors_name=ERRORS_NAME,
                  map_page=explore["map"] and f"{pages_folder}/{explore['map']}", explore_notes=explore["notes"])


# ---------------------------------------------------------------- the training reports

TRAINING_STYLES = ("base.css", "training.css")


def training_page(**context):
    """report.html of a training run (or one fold of --folds)."""
    return render("training.html", title="Training report", styles=TRAINING_STYLES, body_class="training",
                  **context)


def crossval_page(**context):
    """report.html of a --folds run: every label's mean and std over the folds, links to the folds."""
    return render("crossval.html", title="Cross-validation report", styles=TRAINING_STYLES,
                  body_class="training", **context)
