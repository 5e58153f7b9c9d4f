"""HTML of the report's collection-wide pages (explore.py gathers their data): a page per tag and
the map. Templates tag.html and map.html; the map's points travel as JSON inside the page (no
second file, no network), escaped so that no label or key can end the <script> element."""

import collections
import json
import os

from markupsafe import Markup, escape

from tagestimate.review import explore, layout
from tagestimate.review import pages as views
from tagestimate.review.cards import tag_card, tag_card_body
from tagestimate.review.paths import THUMBS
from tagestimate.review.thumbs import safe_name

# Colours of the map's points by top tag: a qualitative palette (then generated hues), grey for none.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#393b79", "#ad494a", "#637939")
NO_TAG = "#b0b0b0"


def colour(n):
    if n < len(PALETTE):
        return PALETTE[n]
    return f"hsl({(n * 137.5) % 360:.0f},65%,45%)"  # golden-angle hues: neighbours stay apart


def script_json(value):
    """JSON safe inside a <script> element: '<', '>' and '&' as \\u escapes (a label may be '</script>')."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                  .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def tag_pages(label, entries, page_size, card_body, threshold):
    """[(file name, html)] of a tag's pages; entries sorted (explore.tag_entries); card_body(item, key,
    position): what each card shows of its image (cards.tag_card_body)."""
    names = explore.tag_page_names(label, len(entries), page_size)
    shown = escape(views.tag_name(label))
    out = []
    for number, name in enumerate(names):
        cards = Markup("".join(tag_card(-negative, card_body(item, key, position), shown)
                               for negative, _, position, item, key in entries[number * page_size:(number + 1) * page_size]))
        out.append((name, views.render("tag.html", title=f"{label} - all images", styles=views.INFERENCE_STYLES,
                                       scripts=("explore.js",), label=label, count=len(entries), number=number,
                                       names=names, cards=cards, threshold=threshold, page_size=page_size)))
    return out


def map_page(collection, labels, top_tags, link_stem, has_thumb):
    """html/map.html: every shown image's point, coloured by its top tag.

    top_tags[image]: its most confident tag or None; link_stem(item) the safe stem of its pages;
    has_thumb(item, key) whether its thumbnail exists."""
    tag_index = {label: n for n, label in enumerate(labels)}
    shown = collection.shown
    items = [[name, link_stem(name)] for name in collection.items]
    points = {"x": [], "y": [], "t": [], "i": [], "p": [], "k": [], "s": [], "h": []}
    counts = [0] * len(labels)
    untagged = 0
    for (x, y), image in zip(collection.points.tolist(), shown.tolist()):
        owner, key = collection.owner[image], collection.keys[image]
        tag = top_tags[image]
        n = tag_index.get(tag, -1)
        if n >= 0:
            counts[n] += 1
        else:
            untagged += 1
        points["x"].append(round(x, 5))
        points["y"].append(round(y, 5))
        points["t"].append(n)
        points["i"].append(owner)
        points["p"].append(collection.position[image] // collection.page_size)
        points["k"].append(key)
        points["s"].append(safe_name(key))
        points["h"].append(1 if has_thumb(collection.items[owner], key) else 0)
    legend = [{"label": label, "colour": colour(n), "count": counts[n]} for n, label in enumerate(labels) if counts[n]]
    data = {"items": items, "colours": [colour(n) for n in range(len(labels))], "none": NO_TAG,
            "labels": list(labels), **points}
    return views.render("map.html", title="Map of the collection", styles=views.INFERENCE_STYLES + ("map.css",),
                        scripts=("map.js",), total=len(collection), shown=len(shown), legend=legend,
                        untagged=untagged, no_tag=NO_TAG, method=layout.METHOD, limit=layout.MAP_LIMIT,
                        data=script_json(data), exact_limit=explore.neighbours.EXACT_LIMIT)


class Explorer:
    """The report build's side of explore.py: loads and computes before the item pages (which carry
    the similar links), gathers each item's tags while they are written, then writes the tag pages
    and the map. page_names(item, count) and thumb_path(item, key) are report.py's."""

    def __init__(self, output_dir, pages_dir, files, page_size, page_names, thumb_path, keys_of, progress=True):
        self.pages_dir, self.page_size, self.page_names = pages_dir, page_size, page_names
        self.thumb_path = lambda item, key: thumb_path(output_dir, item, key)
        self.collection = explore.Collection(page_size).load(output_dir, files, keys_of).compute(pages_dir, progress)
        self.entries = collections.defaultdict(list)  # tag -> explore.tag_entries tuples
        self.tops = [None] * len(self.collection)  # per embedded image: its most confident tag
        self.count = 0
        self.stems = {}  # item -> safe_name(item)

    def link(self, item, position):
        """The page (in html/) that shows an item's card number `position`."""
        return self.page_names(item, position + 1)[-1]

    def thumb(self, item, key):
        """A thumbnail's href from html/ (report.thumb_path's layout, without its path arithmetic:
        a report of 100k images asks for half a million of these)."""
        stem = self.stems.get(item)
        if stem is None:
            stem = self.stems[item] = safe_name(item)
        return f"{THUMBS}/{stem}/{safe_name(key)}.jpg"

    def similar(self, item_name):
        """similar(key) for an item's cards (thumbnails of items not yet reached may not exist yet:
        explore.js shows the key where one fails to load)."""
        return lambda key: self.collection.similar(item_name, key, self.link, self.thumb)

    def add(self, item, keys):
        """An item whose pages were just written: keys in page order."""
        explore.tag_entries(self.entries, item.name, self.count, item.tags, keys)
        self.count += 1
        for key in keys:
            image = self.collection.row.get((item.name, key))
            if image is not None and item.tags[key]:
                self.tops[image] = max(item.tags[key], key=lambda pair: pair[1])[0]

    def finish(self, labels, thresholds, write):
        """Write the tag pages and the map; returns what index_page shows of them."""
        bodies = {}

        def card_body(item, key, position):  # each image is on the page of each of its tags: made once
            made = bodies.get((item, key))
            if made is None:
                thumb = self.thumb(item, key) if os.path.exists(self.thumb_path(item, key)) else None
                made = bodies[item, key] = tag_card_body(item, key, thumb, self.link(item, position),
                                                         explore.anchor(key))
            return made

        first = {}
        for label, entries in self.entries.items():
            entries.sort()
            pages = tag_pages(label, entries, self.page_size, card_body, thresholds.get(label))
            write_pages(pages, self.pages_dir, write)
            first[label] = pages[0][0]
        map_name = None
        if len(self.collection):
            text = map_page(self.collection.wait(), labels, self.tops, safe_name,
                            lambda item, key: os.path.exists(self.thumb_path(item, key)))
            write(os.path.join(self.pages_dir, explore.MAP), text)
            map_name = explore.MAP
        return {"tag_pages": first, "map": map_name, "notes": self.collection.notes}


def write_pages(pages, pages_dir, write):
    for name, text in pages:
        write(os.path.join(pages_dir, name), text)
