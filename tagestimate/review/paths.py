"""Where the review report keeps its files in an output folder (report.py lists them all): the names
both the run (recorder.py) and the report's build (report.py) use. Every name is made by safe_name."""

import os

from tagestimate.files import safe_name

INDEX = "index.html"
PAGES = "html"
THUMBS = "thumbs"
CAMS = "cam"
DATA = "data"
RUN_INFO = "run.json"


def sidecar_path(output_dir, item_name):
    return os.path.join(output_dir, PAGES, DATA, safe_name(item_name) + ".json")


def thumb_path(output_dir, item_name, key):
    return os.path.join(output_dir, PAGES, thumb_href(item_name, key))


def thumb_href(item_name, key):
    """A thumbnail's path from html/, where the pages are."""
    return os.path.join(THUMBS, safe_name(item_name), safe_name(key) + ".jpg")


def cam_path(output_dir, item_name, key, label):
    return os.path.join(output_dir, PAGES, CAMS, safe_name(item_name), f"{safe_name(key)}.{safe_name(label)}.jpg")


def flat_marker(cam):
    """An empty file beside an overlay whose heat map is flat: the page says so (the overlay is all blue)."""
    return cam[:-len(".jpg")] + ".flat"
