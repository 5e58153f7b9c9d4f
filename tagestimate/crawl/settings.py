"""The crawl's settings and defaults, which newdataclawer.py's flags take too (no network here)."""

import dataclasses
import re

from tagestimate import httpclient, ndl

# Defaults of tagged mode's own settings (newdataclawer's --per-class and --min-confidence).
PER_CLASS = 500
MIN_CONFIDENCE = 0.0
MAX_BYTES = "20MB"  # --max-bytes, as its help shows it; CrawlOptions.max_bytes is its value in bytes
_BYTE_SIZE = re.compile(r"(\d+)\s*([kmg]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def byte_size(text):
    """Bytes from '20971520', '500KB' or '20MB' (K, M, G are powers of 1024); ValueError otherwise."""
    match = _BYTE_SIZE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a positive size such as 20MB, 500KB or 1048576")
    return int(match[1]) * _UNITS[match[2].lower()]


@dataclasses.dataclass
class CrawlOptions:
    """Settings shared by every mode; the CLI takes its defaults from here."""

    out: str = "datasetpdm"
    api_base: str = ndl.DEFAULT_API_BASE
    iiif_base: str = ndl.DEFAULT_IIIF_BASE
    size: str = ndl.DEFAULT_SIZE
    batch: int = ndl.DEFAULT_BATCH
    workers: int = 4
    delay: float = 1.0
    timeout: float = httpclient.TIMEOUT
    retries: int = httpclient.RETRIES
    backoff: float = httpclient.BACKOFF
    max_wait: float = httpclient.MAX_WAIT
    max_bytes: int = byte_size(MAX_BYTES)
    max_idle: int = 20
