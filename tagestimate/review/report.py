"""The review report of a tagging run: output/index.html, one page per item, thumbnails.

    output/index.html                      overview: items, images per tag, skipped files, weights
    output/html/{item}.html (.p2.html ...)  a gallery per item, at most PAGE_SIZE images a page
    output/html/thumbs/{item}/{key}.jpg     thumbnails (written once, kept while current)
    output/html/cam/{item}/{key}.{label}.jpg Grad-CAM overlays (--explain)
    output/html/data/{item}.json           the item's full probabilities (the JSON output
                                            holds only tags above threshold)
    output/html/run.json                   weights and thresholds of the latest run

The report is rebuilt from every {item}.json (or .csv) in the output folder plus
errors.json, so a resumed run shows the items of earlier runs too. Pages work from disk
without a network: inline CSS and a little inline JavaScript. All names are escaped, and
file names come from thumbs.safe_name.

    python -m tagestimate.review.report OUTPUT [--inputpath input]   # rebuild an inference report
    python -m tagestimate.review.report RUN                          # rebuild a trainer's report.html
"""

import argparse
import collections
import csv
import datetime
import html
import json
import logging
import os
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from tagestimate.errors import UserError
from tagestimate.files import printable_path, write_atomic
from tagestimate.tag.inference import ERRORS_NAME
from tagestimate.formats import natural_key
from tagestimate.review.thumbs import ensure_thumbnail, is_current, safe_name, write_jpeg

log = logging.getLogger(__name__)

INDEX = "index.html"
PAGES = "html"
THUMBS = "thumbs"
CAMS = "cam"
DATA = "data"
RUN_INFO = "run.json"
PAGE_SIZE = 2000  # thumbnails per page: a big item is split so that every page opens fast
BORDER = 0.1  # "borderline": within this of a label's threshold
MAX_ERRORS_SHOWN = 1000


def esc(text):
    return html.escape(str(text), quote=True)


def href(path):
    """A relative file path as a URL (each part quoted)."""
    # surrogateescape: a folder name that is not UTF-8 keeps its bytes (%83), as the disk has them
    return "/".join(urllib.parse.quote(part, errors="surrogateescape") for part in path.replace(os.sep, "/").split("/"))


# ---------------------------------------------------------------- during the run

def sidecar_path(output_dir, item_name):
    return os.path.join(output_dir, PAGES, DATA, safe_name(item_name) + ".json")


def write_sidecar(output_dir, item_name, records, config):
    """html/data/{item}.json: each image's path and every label's probability (4 decimals)
    and the thresholds applied, so the report can show borderline cases and filter by
    confidence without touching the item's NDL-format output."""
    data = {"item": item_name, "labels": list(config.labels), "thresholds": config.cutoffs(),
            "images": [[record.key, os.path.abspath(record.path), [round(float(p), 4) for p in record.probabilities]]
                       for record in records]}
    path = sidecar_path(output_dir, item_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # ASCII: a path that is not UTF-8 is kept as \udcXX escapes, which json.load gives back as they were.
    write_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")


class ReportRecorder:
    """The item hook (tag/run.py) of a run with the report: writes each item's probabilities
    (html/data/{item}.json) before its output, and remembers which (item, key, path, kept label
    indices) --explain should explain. Picklable: Ray workers call it too."""

    def __init__(self, explain=False):
        self.explain = explain
        self.explained = []

    def __call__(self, output_dir, item_name, records, config):
        write_sidecar(output_dir, item_name, records, config)
        if self.explain:
            thresholds = config.cutoffs()
            self.explained += [(item_name, record.key, record.path,
                                [j for j, (p, t) in enumerate(zip(record.probabilities, thresholds)) if p > t])
                               for record in records]


def write_run_info(output_dir, weights, kind, backend, config, explain):
    path = os.path.join(output_dir, PAGES, RUN_INFO)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = {"weights": printable_path(os.path.abspath(weights)), "kind": kind, "backend": backend,
            "labels": list(config.labels), "thresholds": config.cutoffs(), "explain": bool(explain),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_atomic(path, json.dumps(info, ensure_ascii=False, indent=1) + "\n")


def cam_path(output_dir, item_name, key, label):
    return os.path.join(output_dir, PAGES, CAMS, safe_name(item_name), f"{safe_name(key)}.{safe_name(label)}.jpg")


def thumb_path(output_dir, item_name, key):
    return os.path.join(output_dir, PAGES, THUMBS, safe_name(item_name), safe_name(key) + ".jpg")


def write_explanations(output_dir, entries, explainer, weights=None, progress=True):
    """Grad-CAM overlays for (item, key, path, [label indices]) entries; returns how many were
    written. Overlays newer than their image and the weight file are kept."""
    from tqdm import tqdm

    from tagestimate.review.explain import overlay
    from tagestimate.review.thumbs import make_thumbnail

    labels = explainer.config.labels
    todo = [entry for entry in entries if entry[3] and not all(
        is_current(cam_path(output_dir, entry[0], entry[1], labels[j]), entry[2], *([weights] if weights else []))
        for j in entry[3])]
    written = 0
    with tqdm(total=len(todo), unit="img", desc="grad-cam", disable=not progress, file=sys.stderr) as bar:
        for (name, key, path, _), maps in explainer.explain(todo):
            bar.update(1)
            if not maps:
                continue
            try:
                base = make_thumbnail(path)
            except Exception:  # noqa: BLE001 (gone or changed since it was tagged: no overlay)
                continue
            for label, heat in maps.items():
                write_jpeg(cam_path(output_dir, name, key, labels[label]), overlay(base, heat))
                written += 1
    return written


# ---------------------------------------------------------------- reading a finished output folder

ItemData = collections.namedtuple("ItemData", "name tags probabilities paths labels thresholds")


# Item output files by extension, in the order the report prefers them when an item has
# several: NDL's JSON, then CSV, then the IIIF page (it has no entry for untagged images).
ITEM_EXTENSIONS = (".json", ".csv", ".iiif.json")


def list_item_files(output_dir):
    """{item name: its output file} for every {item}.json / .csv / .iiif.json (in that preference)."""
    found = {}
    for entry in os.scandir(output_dir):
        if entry.name.startswith(".") or not entry.is_file() or entry.name == ERRORS_NAME:
            continue
        # The longest match: "a.iiif.json" is item "a", not "a.iiif".
        extension = max((ext for ext in ITEM_EXTENSIONS if entry.name.endswith(ext)), key=len, default=None)
        if extension is None:
            continue
        stem, rank = entry.name[:-len(extension)], ITEM_EXTENSIONS.index(extension)
        if stem not in found or rank < found[stem][0]:
            found[stem] = (rank, entry.path)
    return {name: found[name][1] for name in sorted(found, key=natural_key)}


def read_tags(path):
    """{key: [(tag, confidence)]} from an item's JSON, CSV or IIIF output; ValueError if malformed."""
    if path.endswith(".csv"):
        tags = collections.defaultdict(list)
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                key = row.get("image")
                if key is None:
                    raise ValueError("no 'image' column")
                tags[key]
                if row.get("tag"):
                    tags[key].append((row["tag"], float(row["confidence"])))
        return dict(tags)
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if path.endswith(".iiif.json"):
        return _annotation_tags(data)
    tags = {}
    for key, values in data.items():
        if not isinstance(values, list):
            raise ValueError(f"the value of {key!r} is not a list")
        tags[key] = [(str(value["tag"]), float(value["confidence"])) for value in values]
    return tags


def _annotation_tags(page):
    """{key: [(tag, confidence)]} of an AnnotationPage written by --format iiif.

    Each annotation's id ends in "#{key}/{tag}", both percent-encoded (annotations.py);
    images without a tag have no annotation, so the sidecar adds them.
    """
    if page.get("type") != "AnnotationPage" or not isinstance(page.get("items"), list):
        raise ValueError("not an AnnotationPage")
    tags = collections.defaultdict(list)
    for annotation in page["items"]:
        fragment = str(annotation["id"]).rpartition("#")[2]
        key, _, tag = fragment.rpartition("/")
        tags[urllib.parse.unquote(key)].append((urllib.parse.unquote(tag), float(annotation["confidence"])))
    return dict(tags)


def read_sidecar(output_dir, item_name):
    """(labels, thresholds, {key: (path, [probabilities])}) or None when absent or unusable."""
    try:
        with open(sidecar_path(output_dir, item_name), encoding="utf-8") as handle:
            data = json.load(handle)
        labels, thresholds = list(data["labels"]), [float(t) for t in data["thresholds"]]
        images = {str(key): (str(path), [float(p) for p in values]) for key, path, values in data["images"]}
        if data.get("item") != item_name or len(thresholds) != len(labels):
            return None
        return labels, thresholds, images
    except (OSError, ValueError, KeyError, TypeError):
        return None


def agrees(tags, values, labels, thresholds):
    """Whether rounded probabilities give the tags an output file holds (a sidecar left by a
    run that --no-report --overwrite replaced does not); rounding may flip values at the threshold."""
    kept = {tag for tag, _ in tags}
    return all((label in kept) == (value > threshold) or abs(value - threshold) <= 0.001
               for label, value, threshold in zip(labels, values, thresholds)) and kept <= set(labels)


def read_item(output_dir, item_name, path, sources, default_labels, default_thresholds):
    """An ItemData; `sources` maps keys to image paths for items without a sidecar."""
    tags = read_tags(path)
    side = read_sidecar(output_dir, item_name)
    probabilities, paths = {}, dict(sources)
    labels, thresholds = list(default_labels), list(default_thresholds)
    if side is not None:
        labels, thresholds, images = side
        if path.endswith(".iiif.json"):  # an AnnotationPage holds no image without a tag
            for key in images:
                tags.setdefault(key, [])
        for key, (image_path, values) in images.items():
            if key in tags and len(values) == len(labels):
                # The output file decides what is kept; a sidecar from another run is ignored.
                if agrees(tags[key], values, labels, thresholds):
                    probabilities[key] = dict(zip(labels, values))
                paths[key] = image_path
    return ItemData(item_name, tags, probabilities, paths, labels, thresholds)


def read_errors(output_dir):
    try:
        with open(os.path.join(output_dir, ERRORS_NAME), encoding="utf-8") as handle:
            entries = json.load(handle)
        return [entry for entry in entries if isinstance(entry, dict)]
    except (OSError, ValueError, TypeError):
        return []


def read_run_info(output_dir):
    try:
        with open(os.path.join(output_dir, PAGES, RUN_INFO), encoding="utf-8") as handle:
            info = json.load(handle)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- HTML

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 2em;color:#222;background:#fafafa}
h1{font-size:1.5em;margin:.8em 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#eee}
.controls{position:sticky;top:0;background:#fafafa;padding:.5em 0;border-bottom:1px solid #ddd;z-index:2}
.controls label{margin-right:1em}.gallery{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
.card{width:176px;background:#fff;border:1px solid #ccc;border-radius:4px;padding:4px;margin:0}
.card.border{border-color:#e69500;box-shadow:0 0 0 2px #ffd27f}
.card .pic{display:block;height:160px;text-align:center}.card img{max-width:160px;max-height:160px}
.card figcaption{font-size:12px;word-break:break-all}.key{color:#555}
.tag{display:inline-block;background:#e3eefc;border-radius:3px;padding:0 4px;margin:1px;cursor:default}
.tag.cam{background:#fde2c8;cursor:pointer}.tag.pinned{outline:2px solid #d35400}
.missing{display:inline-block;width:150px;height:150px;background:#eee;color:#888;line-height:150px}
.none{color:#999}.note{color:#666}nav a{margin-right:.6em}.hidden{display:none}
"""

SCRIPT = r"""
(function(){
var th=JSON.parse(document.body.dataset.thresholds||'{}'),B=parseFloat(document.body.dataset.border||'0.1');
var g=document.querySelector('.gallery');if(!g)return;
var cards=Array.prototype.slice.call(g.querySelectorAll('.card'));
cards.forEach(function(c,i){c._i=i;c._p=JSON.parse(c.dataset.p||'{}');c._t=c.dataset.t?c.dataset.t.split(' '):[];
 var im=c.querySelector('img');if(im){c._img=im;c._src=im.getAttribute('src');}});
var $=function(id){return document.getElementById(id);};
function near(p,l){return (l in p)&&(l in th)&&Math.abs(p[l]-th[l])<=B;}
function value(c,tag){var p=c._p;if(tag&&tag!=='-none-')return (tag in p)?p[tag]:0;
 var m=0;(c._t.length?c._t:Object.keys(p)).forEach(function(l){if(p[l]>m)m=p[l];});return m;}
function apply(){var tag=$('tag').value,lo=parseFloat($('lo').value)||0,hi=parseFloat($('hi').value);
 if(isNaN(hi))hi=1;var bord=$('border').checked,sort=$('sort').value,shown=0;
 cards.forEach(function(c){var p=c._p,ok;
  if(tag==='-none-')ok=c._t.length===0;else if(tag)ok=bord?near(p,tag):c._t.indexOf(tag)>=0;else ok=true;
  if(bord&&!(tag&&tag!=='-none-'))ok=ok&&Object.keys(p).some(function(l){return near(p,l);});
  var v=value(c,tag);c._v=v;if(v<lo-1e-9||v>hi+1e-9)ok=false;
  c.classList.toggle('hidden',!ok);c.classList.toggle('border',Object.keys(p).some(function(l){return near(p,l);}));
  if(ok)shown++;});
 var order=cards.slice();if(sort!=='page')order.sort(function(a,b){return sort==='desc'?b._v-a._v:a._v-b._v;});
 order.forEach(function(c){g.appendChild(c);});$('count').textContent=shown+' of '+cards.length+' images shown';}
function cams(on){cards.forEach(function(c){var t=c.querySelector('.tag.cam');if(!c._img)return;
 c._img.setAttribute('src',on&&t?t.dataset.cam:c._src);});}
g.addEventListener('mouseover',function(e){var t=e.target.closest('.tag.cam');if(!t)return;var c=t.closest('.card');
 if(c._img)c._img.setAttribute('src',t.dataset.cam);});
g.addEventListener('mouseout',function(e){var t=e.target.closest('.tag.cam');if(!t)return;var c=t.closest('.card');
 var pin=c.querySelector('.tag.pinned');if(c._img)c._img.setAttribute('src',pin?pin.dataset.cam:c._src);});
g.addEventListener('click',function(e){var t=e.target.closest('.tag.cam');if(!t)return;var c=t.closest('.card');
 var was=t.classList.contains('pinned');c.querySelectorAll('.tag.pinned').forEach(function(x){x.classList.remove('pinned');});
 if(!was)t.classList.add('pinned');if(c._img)c._img.setAttribute('src',was?c._src:t.dataset.cam);});
['tag','lo','hi','border','sort'].forEach(function(id){$(id).addEventListener('input',apply);$(id).addEventListener('change',apply);});
var cb=$('cams');if(cb)cb.addEventListener('change',function(){cams(cb.checked);});
var h=decodeURIComponent(location.hash.slice(1)).split('&');h.forEach(function(kv){var a=kv.split('=');
 if(a[0]==='tag')$('tag').value=a[1]||'';if(a[0]==='border')$('border').checked=a[1]==='1';});
apply();})();
"""


def page_html(title, body, data_attributes="", script=False):
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body{data_attributes}>\n{body}\n"
            + (f"<script>{SCRIPT}</script>\n" if script else "") + "</body></html>\n")


def page_names(item_name, count):
    """File names (in html/) of an item's pages: {safe}.html, {safe}.p2.html, ..."""
    stem = safe_name(item_name)
    pages = max(1, -(-count // PAGE_SIZE))
    return [f"{stem}.html" if n == 0 else f"{stem}.p{n + 1}.html" for n in range(pages)]


def card_html(output_dir, item, key, cams_for):
    tags = item.tags[key]
    probabilities = item.probabilities.get(key) or {tag: confidence for tag, confidence in tags}
    thumb = thumb_path(output_dir, item.name, key)
    pages_dir = os.path.join(output_dir, PAGES)
    if os.path.exists(thumb):
        picture = f"<img src=\"{href(os.path.relpath(thumb, pages_dir))}\" alt=\"{esc(key)}\" loading=\"lazy\">"
    else:
        picture = "<span class=\"missing\">no preview</span>"
    source = item.paths.get(key)
    if source:
        picture = f"<a href=\"{href(os.path.relpath(source, pages_dir))}\">{picture}</a>"
    chips = []
    for tag, confidence in tags:
        cam = cams_for(key, tag)
        if cam:
            chips.append(f"<span class=\"tag cam\" title=\"hover or click: what the model looked at for {esc(tag)}\" "
                         f"data-cam=\"{href(os.path.relpath(cam, pages_dir))}\">{esc(tag)} {confidence:.3f}</span>")
        else:
            chips.append(f"<span class=\"tag\">{esc(tag)} {confidence:.3f}</span>")
    chips = "".join(chips) or "<span class=\"none\">no tag</span>"
    data_p = esc(json.dumps({label: round(value, 3) for label, value in probabilities.items()}, ensure_ascii=False))
    data_t = esc(" ".join(tag for tag, _ in tags))
    return (f"<figure class=\"card\" data-t=\"{data_t}\" data-p=\"{data_p}\"><span class=\"pic\">{picture}</span>"
            f"<figcaption><div class=\"key\">{esc(key)}</div>{chips}</figcaption></figure>")


def item_pages(output_dir, item, labels, run_info):
    """[(file name, html)] of an item's gallery pages."""
    keys = sorted(item.tags, key=natural_key)
    names = page_names(item.name, len(keys))
    cam_dir = os.path.join(output_dir, PAGES, CAMS, safe_name(item.name))
    has_cams = os.path.isdir(cam_dir)

    def cams_for(key, tag):
        path = cam_path(output_dir, item.name, key, tag)
        return path if has_cams and os.path.exists(path) else None

    options = "".join(f"<option value=\"{esc(label)}\">{esc(label)}</option>" for label in labels)
    thresholds = json.dumps(dict(zip(item.labels, item.thresholds)), ensure_ascii=False)
    full = len(item.probabilities) == len(keys)
    pages = []
    for number, name in enumerate(names):
        chunk = keys[number * PAGE_SIZE:(number + 1) * PAGE_SIZE]
        nav = ""
        if len(names) > 1:
            nav = "<nav>pages: " + "".join(
                f"<a href=\"{href(other)}\">{index + 1}</a>" if index != number else f"<b>{index + 1}</b>"
                for index, other in enumerate(names)) + "</nav>"
        note = "" if full else ("<p class=\"note\">Some images of this item were tagged without the report (an "
                                "earlier run or --no-report): only their tags above the threshold are known, so "
                                "they are not shown as borderline.</p>")
        cards = "\n".join(card_html(output_dir, item, key, cams_for) for key in chunk)
        body = (f"<p><a href=\"../{INDEX}\">&larr; all items</a></p>"
                f"<h1>{esc(item.name)}</h1><p>{len(keys)} images"
                + (f", page {number + 1} of {len(names)} (filters apply to this page)" if len(names) > 1 else "")
                + f"</p>{nav}{note}<div class=\"controls\">"
                f"<label>tag <select id=\"tag\"><option value=\"\">any</option>{options}"
                f"<option value=\"-none-\">no tag</option></select></label>"
                f"<label>confidence <input id=\"lo\" type=\"number\" min=\"0\" max=\"1\" step=\"0.05\" value=\"0\" "
                f"style=\"width:4.5em\"> to <input id=\"hi\" type=\"number\" min=\"0\" max=\"1\" step=\"0.05\" "
                f"value=\"1\" style=\"width:4.5em\"></label>"
                f"<label><input id=\"border\" type=\"checkbox\"> borderline only (within &plusmn;{BORDER:g} of "
                f"the threshold)</label><label>sort <select id=\"sort\"><option value=\"page\">page order</option>"
                f"<option value=\"desc\">confidence, highest first</option><option value=\"asc\">confidence, "
                f"lowest first</option></select></label>"
                + ("<label><input id=\"cams\" type=\"checkbox\"> show Grad-CAM</label>" if has_cams else "")
                + f"<span id=\"count\"></span></div>\n<div class=\"gallery\">\n{cards}\n</div>{nav}")
        attributes = f" data-thresholds=\"{esc(thresholds)}\" data-border=\"{BORDER}\""
        pages.append((name, page_html(f"{item.name} - tags", body, attributes, script=True)))
    return pages


def index_html(output_dir, rows, labels, totals, errors, run_info, unreadable):
    thresholds = dict(zip(run_info.get("labels", []), run_info.get("thresholds", [])))
    overview = [("items", f"{len(rows):,}"), ("images", f"{totals['images']:,}"),
                ("images with no tag", f"{totals['untagged']:,}"),
                ("files skipped", f"{len(errors):,}" + (f" (see {ERRORS_NAME} and below)" if errors else ""))]
    if run_info:
        overview += [("weights", f"{run_info.get('weights', '?')} ({run_info.get('kind', '?')})"),
                     ("backend", run_info.get("backend", "?")), ("latest run", run_info.get("date", "?")),
                     ("Grad-CAM", "yes (--explain): hover or click a tag on an item page" if run_info.get("explain")
                      else "no (run with --explain)")]
    parts = [f"<h1>Tagging report: {esc(printable_path(os.path.basename(os.path.abspath(output_dir))))}</h1>",
             "<table class=\"overview\">" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in overview)
             + "</table>", "<h2>Tags</h2><table id=\"tags\"><tr><th>tag</th><th>threshold</th><th>images</th>"
             "<th>items</th><th>borderline (&plusmn;0.1)</th></tr>"]
    for label in labels:
        threshold = thresholds.get(label)
        parts.append(f"<tr><td>{esc(label)}</td><td>{'' if threshold is None else f'{threshold:.2f}'}</td>"
                     f"<td>{totals['tags'][label]:,}</td><td>{totals['items'][label]:,}</td>"
                     f"<td>{totals['border'][label]:,}</td></tr>")
    parts.append("</table><p class=\"note\">Borderline: confidence within 0.1 of the label's threshold, above or "
                 "below; counted for images tagged with the report on.</p>")
    parts.append("<h2>Items</h2><table id=\"items\"><tr><th>item</th><th>images</th><th>no tag</th>"
                 + "".join(f"<th>{esc(label)}</th>" for label in labels) + "</tr>")
    for name, page, count, untagged, counts in rows:
        link = href(f"{PAGES}/{page}")
        cells = "".join(f"<td><a href=\"{link}#tag={urllib.parse.quote(label)}\">{counts[label]:,}</a></td>"
                        if counts[label] else "<td>0</td>" for label in labels)
        parts.append(f"<tr><td><a class=\"item\" href=\"{link}\">{esc(name)}</a></td><td>{count:,}</td>"
                     f"<td><a href=\"{link}#tag=-none-\">{untagged:,}</a></td>{cells}</tr>")
    parts.append("</table>")
    if unreadable:
        parts.append("<h2>Output files not shown</h2><ul>" + "".join(
            f"<li>{esc(name)}: {esc(reason)}</li>" for name, reason in unreadable) + "</ul>")
    if errors:
        parts.append(f"<h2>Skipped files ({len(errors):,})</h2><table id=\"errors\"><tr><th>item</th><th>path</th>"
                     "<th>reason</th></tr>")
        parts += [f"<tr><td>{esc(e.get('item', ''))}</td><td>{esc(e.get('path', ''))}</td>"
                  f"<td>{esc(e.get('reason', ''))}</td></tr>" for e in errors[:MAX_ERRORS_SHOWN]]
        parts.append("</table>")
        if len(errors) > MAX_ERRORS_SHOWN:
            parts.append(f"<p class=\"note\">{len(errors) - MAX_ERRORS_SHOWN:,} more in {ERRORS_NAME}.</p>")
    return page_html("Tagging report", "\n".join(parts))


def build_report(output_dir, items=(), progress=True, workers=4):
    """Write output/index.html and the item pages from every item output in `output_dir`.

    `items` (inference.Item, as find_items lists them) give the image paths of items tagged
    without the report; thumbnails are made for every image whose file is found. Returns the
    index's path.
    """
    from tqdm import tqdm

    sources = {item.name: dict(item.images) for item in items}
    run_info = read_run_info(output_dir)
    default_labels = run_info.get("labels", [])
    default_thresholds = run_info.get("thresholds", [0.4] * len(default_labels))
    files = list_item_files(output_dir)
    errors = read_errors(output_dir)
    labels = list(default_labels)
    rows, unreadable = [], []
    totals = {"images": 0, "untagged": 0, "tags": collections.Counter(), "items": collections.Counter(),
              "border": collections.Counter()}
    pages_dir = os.path.join(output_dir, PAGES)
    os.makedirs(pages_dir, exist_ok=True)
    bar = tqdm(total=len(files), unit="item", desc="report", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbs") as pool:
        for name, path in files.items():
            bar.update(1)
            try:
                item = read_item(output_dir, name, path, sources.get(name, {}), default_labels, default_thresholds)
            except (OSError, ValueError, KeyError, TypeError) as error:
                unreadable.append((name, f"cannot read {os.path.basename(path)} ({error})"))
                continue
            for label in item.labels:
                if label not in labels:
                    labels.append(label)
            list(pool.map(lambda key: ensure_thumbnail(item.paths[key], thumb_path(output_dir, name, key)),
                          [key for key in item.tags if key in item.paths]))
            for tag in {tag for tags in item.tags.values() for tag, _ in tags}:
                if tag not in labels:
                    labels.append(tag)
            pages = item_pages(output_dir, item, labels, run_info)
            for page_name, text in pages:
                write_atomic(os.path.join(pages_dir, page_name), text)
            counts = collections.Counter(tag for tags in item.tags.values() for tag, _ in tags)
            untagged = sum(1 for tags in item.tags.values() if not tags)
            thresholds = dict(zip(item.labels, item.thresholds))
            for values in item.probabilities.values():
                for label, value in values.items():
                    if label in thresholds and abs(value - thresholds[label]) <= BORDER:
                        totals["border"][label] += 1
            totals["images"] += len(item.tags)
            totals["untagged"] += untagged
            totals["tags"].update(counts)
            totals["items"].update(counts.keys())
            rows.append((name, pages[0][0], len(item.tags), untagged, counts))
    bar.close()
    index = os.path.join(output_dir, INDEX)
    write_atomic(index, index_html(output_dir, rows, labels, totals, errors, run_info, unreadable))
    return index


def finish_run(output_dir, items, bundle, backend, explain_entries=None, draft=True, progress=True):
    """After a tagging run with the model `bundle` (tag.settings.ModelBundle): run info, Grad-CAM
    overlays (explain_entries), then the report."""
    write_run_info(output_dir, bundle.path, bundle.kind, backend, bundle.output_config, explain_entries is not None)
    try:
        if explain_entries:
            from tagestimate.review.explain import Explainer

            explainer = Explainer.from_bundle(bundle, draft=draft)
            write_explanations(output_dir, explain_entries, explainer, bundle.path, progress)
        return build_report(output_dir, items, progress)
    except OSError as error:
        raise UserError(f"could not write the report in {printable_path(output_dir)} ({error}); the tags are "
                        "written; run python -m tagestimate.review.report on the output folder to retry") from None


# ---------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tagestimate.review.report",
        description="Rebuild a review report: output/index.html for a multiinference.py output folder, or "
                    "report.html for a multitrain_efficientnet.py run folder (one with history.csv).")
    parser.add_argument("folder", help="an inference output folder, or a training run's --out folder")
    parser.add_argument("--inputpath", default=None,
                        help="inference only: the input folder, to find the images of items tagged without the "
                             "report (default: none; those items are shown without thumbnails)")
    parser.add_argument("--data", default=None,
                        help="training only: the data folder, when it moved since training (default: the one "
                             "model.json names)")
    parser.add_argument("--no-explain", action="store_true",
                        help="training only: no Grad-CAM overlays (no TensorFlow needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if not os.path.isdir(args.folder):
        parser.exit(2, f"error: {printable_path(args.folder)} is not a folder; pass an output or run folder\n")
    try:
        if os.path.exists(os.path.join(args.folder, "history.csv")) or os.path.exists(
                os.path.join(args.folder, "report.json")):
            from tagestimate.review.train_report import write_training_report

            path = write_training_report(args.folder, data=args.data, explain=not args.no_explain)
        else:
            items = []
            if args.inputpath:
                from tagestimate.tag.inference import find_items

                items, _ = find_items(args.inputpath)
            path = build_report(args.folder, items, progress=not args.quiet)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
