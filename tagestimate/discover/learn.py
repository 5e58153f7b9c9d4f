"""learn-tag: a new tag from a few examples, as a linear classifier on the collection's vectors.

scikit-learn's LogisticRegression (class_weight="balanced": a few positives against many
negatives weigh as much) is fitted on the positives and the negatives; without --negative, the
negatives are NEGATIVES_PER_POSITIVE random images of the collection per positive (at least
MIN_NEGATIVES, at most all the others; fixed seed, positives excluded). Every image is then
ranked by its confidence, sigmoid(coef . vector + intercept), the same confidence extratags.py
gives when multiinference.py --extra-tags applies the saved tag.

    OUTPUT/learned/NAME.csv    rank,score,item,key,path,example  (every image, best first)
    OUTPUT/learned/NAME.html   the top N with thumbnails (the report's, else the image files)
"""

import io
import os
import urllib.parse

import numpy as np

from tagestimate import extratags, files, storage
from tagestimate.discover import nearest, where
from tagestimate.discover.index import SearchError
from tagestimate.files import CsvWriter, count, printable_path

FOLDER = "learned"
NEGATIVES_PER_POSITIVE = 20
MIN_NEGATIVES = 200
SEED = 0
C = 10.0  # weak regularisation: unit vectors give small dot products, and C=1 flattens every confidence
THRESHOLD = 0.5  # the saved tag's cut: a balanced fit puts the boundary between the classes at 0.5
CSV_COLUMNS = ("rank", "score", "item", "key", "path", "example")


def random_negatives(size, exclude, wanted, seed=SEED):
    """`wanted` distinct rows of range(size) not in `exclude`, drawn with a fixed seed."""
    pool = np.setdiff1d(np.arange(size), np.asarray(sorted(exclude), dtype=np.int64))
    wanted = min(wanted, len(pool))
    return np.sort(np.random.default_rng(seed).choice(pool, size=wanted, replace=False)) if wanted else pool[:0]


def fit(positives, negatives, name, layer, weights_sha256, seed=SEED):
    """An extratags.ExtraTag fitted on (n, dim) positive and negative vectors."""
    from sklearn.linear_model import LogisticRegression

    if not len(positives) or not len(negatives):
        raise SearchError("learn-tag needs at least one positive and one negative example; the collection "
                          "has no image besides the positives, so give --negative examples")
    features = np.concatenate([positives, negatives]).astype(np.float64)
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    model = LogisticRegression(class_weight="balanced", C=C, max_iter=1000, random_state=seed)
    model.fit(features, labels)
    return extratags.ExtraTag(extratags.check_name(name), model.coef_[0].astype(np.float64),
                              float(model.intercept_[0]), THRESHOLD, layer, weights_sha256,
                              len(positives), len(negatives))


def confidences(index, tag):
    """The tag's confidence for every row of the index (blocked: a million rows in about a second)."""
    logits = nearest.scores(index.vectors, tag.coef) + np.float32(tag.intercept)
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def learn(index, name, positives, positive_rows=(), negatives=None, negative_rows=()):
    """(tag, confidences, rank order, {row: "positive"|"negative"}): fitted on (n, dim) example vectors;
    negatives None: random images of the collection, the positives' rows excluded."""
    if negatives is None or not len(negatives):
        wanted = max(MIN_NEGATIVES, NEGATIVES_PER_POSITIVE * len(positives))
        negative_rows = random_negatives(len(index), set(positive_rows), wanted).tolist()
        negatives = np.asarray(index.vectors[negative_rows], dtype=np.float32)
        roles = {}  # random negatives are not marked: they are no one's choice
    else:
        roles = {int(row): "negative" for row in negative_rows}
    tag = fit(positives, negatives, name, index.layer, index.weights_sha256)
    values = confidences(index, tag)
    order = np.lexsort((np.arange(len(values)), -values))
    roles.update({int(row): "positive" for row in positive_rows})
    return tag, values, order, roles


def write_csv(index, name, values, order, roles):
    """OUTPUT/learned/NAME.csv, atomically; its path."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(CSV_COLUMNS)
    described = index.describe(order)
    for rank, (row, (item, key, path, _)) in enumerate(zip(order, described), start=1):
        writer.writerow([rank, f"{values[row]:.6f}", item, key, printable_path(path) if path else "",
                         roles.get(int(row), "")])
    path = _path(index, f"{name}.csv")
    storage.write_atomic(path, buffer.getvalue())
    return path


def write_html(index, name, values, order, roles, top, tag):
    """OUTPUT/learned/NAME.html: the top `top` images as a gallery, autoescaped, no network; its path."""
    import jinja2

    page = _path(index, f"{name}.html")
    cards = []
    for row, (item, key, path, target) in zip(order[:top], index.describe(order[:top])):
        cards.append({"rank": len(cards) + 1, "score": f"{values[row]:.3f}", "item": item, "key": key,
                      "src": _image_url(index.output_dir, page, where.thumbnail(index.output_dir, item, key) or path),
                      "target": target if files.is_web_url(target) else "", "role": roles.get(int(row), "")})
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    text = environment.from_string(PAGE).render(
        name=name, cards=cards, total=count(len(index), "image"), shown=len(cards), tag=tag,
        above=int((values > tag.threshold).sum()), chosen="negative" in roles.values())
    storage.write_atomic(page, text)
    return page


def _path(index, name):
    folder = storage.join(index.output_dir, FOLDER)
    storage.makedirs(folder)
    return storage.join(folder, name)


def _image_url(output_dir, page, path):
    """A URL the page can show `path` by: relative to the page for a local file, else as it is."""
    if not path:
        return ""
    if storage.on_disk(path) and storage.on_disk(page):
        relative = os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(page)))
        return urllib.parse.quote(relative.replace(os.sep, "/"))
    return path if files.is_web_url(path) else ""


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>learned tag {{ name }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
figure { margin: 0; padding: 6px; border: 1px solid #ddd; border-radius: 4px; }
figure.positive { border: 2px solid #2a7; } figure.negative { border: 2px solid #c44; }
figure img { width: 160px; height: 160px; object-fit: contain; background: #f4f4f4; display: block; margin: auto; }
figcaption { font-size: 12px; word-break: break-all; } .none { width: 160px; height: 160px; background: #eee; }
</style></head><body>
<h1>Learned tag <code>{{ name }}</code></h1>
<p>Top {{ shown }} of {{ total }}, most confident first. Learned from {{ tag.positives }} positive examples (framed green) and
{{ tag.negatives }} {% if chosen %}negative examples (framed red){% else %}random images of the collection as
negatives{% endif %}; {{ above }} images are above the threshold {{ tag.threshold }}. The full ranking is in <a href="{{ name }}.csv">{{ name }}.csv</a>.</p>
<div class="grid">
{% for card in cards %}<figure class="{{ card.role }}">
{% if card.src %}<img src="{{ card.src }}" alt="{{ card.item }}/{{ card.key }}" loading="lazy">{% else %}<div class="none"></div>{% endif %}
<figcaption>#{{ card.rank }} · {{ card.score }}{% if card.role %} · {{ card.role }}{% endif %}<br>{{ card.item }}/{{ card.key }}
{% if card.target %}<br><a href="{{ card.target }}">IIIF</a>{% endif %}</figcaption></figure>
{% endfor %}</div></body></html>
"""
