"""The report's ways across a whole collection: a page per tag, "similar" links on each card, a map.

    output/html/tag-{label}-{hash}.html (.p2.html ...)  every image with that tag, most confident first
    output/html/map.html                                 every image placed by its embedding (layout.py)
    output/html/explore.npz                              cache: neighbours and layout, keyed by a digest
                                                         of the embeddings (a rebuild without changes
                                                         computes neither again)

Similar links and the map need each item's {item}.emb.npz (tagestimate/embeddings.py); items
without one (tagged with --no-embeddings or by an older version) are shown as before, and the
index says once why they have no links. Neighbours are computed when the report is built
(neighbours.py), so the static pages work offline from disk. Tag pages need no embeddings.
"""

import collections
import hashlib
import io
import logging
import os
import threading
import types

import numpy as np

from tagestimate import embeddings
from tagestimate.files import write_atomic
from tagestimate.review import layout, neighbours
from tagestimate.review.thumbs import safe_name

log = logging.getLogger(__name__)

CACHE = "explore.npz"
MAP = "map.html"
CACHE_VERSION = 2  # 2: neighbours on centred vectors


def anchor(key):
    """The id of an image's card on its item page (safe_name: only [A-Za-z0-9._-])."""
    return "c-" + safe_name(key)


def tag_page_names(label, count, page_size):
    """File names (in html/) of a tag's pages: tag-{safe}.html, tag-{safe}.p2.html, ..."""
    stem = "tag-" + safe_name(label)
    pages = max(1, -(-count // page_size))
    return [f"{stem}.html" if n == 0 else f"{stem}.p{n + 1}.html" for n in range(pages)]


class Collection:
    """Every embedded image of an output folder: vectors, where each one's card is, its neighbours
    and map position. Built before the item pages are written (they carry the similar links)."""

    def __init__(self, page_size):
        self.page_size = page_size
        self.items = []  # item names, in the report's order
        self.item_index = {}
        self.owner = []  # per image: index in self.items
        self.keys = []  # per image: its key
        self.position = []  # per image: its index on its item's gallery (natural order)
        self.row = {}  # (item name, key) -> image index
        self.vectors = np.zeros((0, 0), np.float16)
        self.version = None  # (layer, weights_sha256) of the vectors used
        self.notes = []  # sentences for the index: why some or all images have no similar links
        self.neighbours = None  # (indices, scores), (n, k)
        self.points = None  # (n, 2) map coordinates of the images self.shown lists
        self.shown = None
        self._layout = None  # the map layout's thread while it runs (compute, wait)

    def __len__(self):
        return len(self.keys)

    # ---------------------------------------------------------------- loading

    def load(self, output_dir, files, keys_of):
        """Read the {item}.emb.npz of each item in `files` ({name: output path}); keys_of(name, path)
        gives the keys the item's page shows, in its order. Vectors of another model than the most
        common one, or of keys the page does not show, are left out with a note."""
        found, missing, damaged = {}, 0, []
        for name in files:
            path = os.path.join(output_dir, embeddings.file_name(name))
            try:
                with open(path, "rb") as handle:
                    found[name] = embeddings.from_bytes(handle.read(), path)
            except FileNotFoundError:
                missing += 1
            except (OSError, embeddings.EmbeddingsError) as error:
                damaged.append(str(error))
        if not found:
            if files:
                self.notes.append("No similar links and no map: no item of this folder has embeddings "
                                  f"({embeddings.file_name('{item}')}); tag it again with a version that writes "
                                  "them, without --no-embeddings.")
            self.notes += damaged[:3]
            return self
        versions = collections.Counter((e.layer, e.weights_sha256, e.dim) for e in found.values())
        self.version = versions.most_common(1)[0][0]
        other = [name for name, e in found.items() if (e.layer, e.weights_sha256, e.dim) != self.version]
        if missing:
            self.notes.append(f"{missing:,} of {len(files):,} items have no embeddings (tagged with --no-embeddings "
                              "or by an older version): they have no similar links and are not on the map.")
        if other:
            self.notes.append(f"{len(other):,} items have embeddings of another model or layer than the rest "
                              f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); they are left out: "
                              "tag them again with the same weights.")
        for sentence in damaged[:3]:
            self.notes.append(sentence)
        chunks = []
        for name in files:
            entry = found.get(name)
            if entry is None or name in other:
                continue
            try:
                order = {key: n for n, key in enumerate(keys_of(name, files[name]))}
            except (OSError, ValueError, KeyError, TypeError):
                continue  # an unreadable output: build_report lists it among the outputs not shown
            use = [n for n, key in enumerate(entry.keys) if key in order]
            if not use:
                continue
            self.item_index[name] = len(self.items)
            self.items.append(name)
            for n in use:
                key = entry.keys[n]
                self.row[(name, key)] = len(self.keys)
                self.owner.append(self.item_index[name])
                self.keys.append(key)
                self.position.append(order[key])
            chunks.append(entry.vectors[use])
        self.vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.version[2]), np.float16)
        return self

    # ---------------------------------------------------------------- neighbours and layout, cached

    def digest(self):
        """What the neighbours and layout depend on: the images, their vectors, the code's limits."""
        h = hashlib.sha256(repr((CACHE_VERSION, self.version, neighbours.K, neighbours.EXACT_LIMIT,
                                 layout.METHOD, layout.MAP_LIMIT)).encode())
        for name, key in zip((self.items[i] for i in self.owner), self.keys):
            h.update(f"{len(name)}:{name}{len(key)}:{key}".encode("utf-8", "surrogatepass"))
        h.update(np.ascontiguousarray(self.vectors).tobytes())
        return h.hexdigest()

    def compute(self, pages_dir, progress=True):
        """Neighbours and map layout, from html/explore.npz when it was made from the same vectors."""
        if not len(self):
            return self
        digest, cache = self.digest(), os.path.join(pages_dir, CACHE)
        try:
            with np.load(cache, allow_pickle=False) as saved:
                if str(saved["digest"]) == digest:
                    self.neighbours = (saved["indices"], saved["scores"])
                    self.shown, self.points = saved["shown"], saved["points"]
                    return self
        except (OSError, KeyError, ValueError):
            pass  # absent or damaged: computed again below
        from tqdm import tqdm
        import sys

        with tqdm(total=len(self), unit="img", desc="neighbours", disable=not progress, file=sys.stderr) as bar:
            self.neighbours = neighbours.nearest(self.vectors, limit=neighbours.EXACT_LIMIT, progress=bar.update,
                                                 centre=True)
        self.shown = layout.sample(len(self), layout.MAP_LIMIT)
        # The map is drawn last, after every item page: its layout (numpy, which leaves the GIL for the
        # eigenvectors) runs on another core while those pages render in Python on one. wait() joins it.
        self._layout = _Background(lambda: self._lay_out(digest, cache))
        return self

    def _lay_out(self, digest, cache):
        self.points = layout.pca_2d(self.vectors[self.shown])
        buffer = io.BytesIO()
        np.savez(buffer, digest=np.array(digest), indices=self.neighbours[0], scores=self.neighbours[1],
                 shown=self.shown, points=self.points)
        write_atomic(cache, buffer.getvalue())

    def wait(self):
        """The collection once compute's map layout is done (and cached); its error, if any, raised here."""
        running, self._layout = self._layout, None
        if running is not None:
            running.result()
        return self

    # ---------------------------------------------------------------- what the pages show

    def similar(self, item_name, key, link, thumb):
        """[namespace(href, anchor, thumb, item, key, score)] of an image's neighbours; [] when it has none.

        link(item, position) is the href of the item page that shows the card at `position`,
        thumb(item, key) its thumbnail's href."""
        image = self.row.get((item_name, key))
        if image is None or self.neighbours is None:
            return []
        indices, scores = self.neighbours
        found = []
        for other, score in zip(indices[image], scores[image]):
            if other < 0:
                continue
            name, other_key = self.items[self.owner[other]], self.keys[other]
            found.append(types.SimpleNamespace(href=link(name, self.position[other]), anchor=anchor(other_key),
                                               thumb=thumb(name, other_key), item=name, key=other_key,
                                               score=float(score)))  # attributes: see pages.Fields
        return found


class _Background(threading.Thread):
    """`work()` in a thread of its own, started at once; result() joins it and raises what it raised."""

    def __init__(self, work):
        super().__init__(name="report-map", daemon=True)
        self.work, self.error = work, None
        self.start()

    def run(self):
        try:
            self.work()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            self.error = error

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error


def tag_entries(entries, item_name, item_index, tags, keys):
    """Append (-confidence, item order, position, item, key) to entries[tag] for each tag of an item's
    images; keys: the item's keys in page order (position = index in it)."""
    for position, key in enumerate(keys):
        for tag, confidence in tags[key]:
            entries[tag].append((-float(confidence), item_index, position, item_name, key))
