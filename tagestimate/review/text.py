"""How the review report prints the values it shows: links, JSON for data-* attributes, tag names.
Shared by the page templates (pages.py registers them as filters) and the cards (cards.py)."""

import contextvars
import functools
import json
import os
import urllib.parse

from tagestimate import labels


@functools.lru_cache(maxsize=1 << 16)  # a report links each thumbnail and page several times (cards, tags)
def href(path):
    """A relative file path as a URL, each part percent-encoded."""
    # surrogateescape: a folder name that is not UTF-8 keeps its bytes (%83), as the disk has them
    return "/".join(urllib.parse.quote(part, errors="surrogateescape")
                    for part in str(path).replace(os.sep, "/").split("/"))


def json_text(value):
    """JSON for a data-* attribute; autoescape then escapes it like any other text."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# (language, {tag: {language: name}}) while a report is built with --lang en or ja; None: machine tags
NAMING = contextvars.ContextVar("report_naming", default=None)


def tag_name(tag):
    """The name a page shows for a tag: its English or Japanese name under --lang, else the tag itself."""
    naming = NAMING.get()
    if naming is None:
        return tag
    language, names = naming
    return names.get(tag, {}).get(language) or labels.tag_name(tag, language)
