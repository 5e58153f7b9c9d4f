"""Finding the weight file inference uses, and fetching NDL's published one.

What a weight file means (its labels, input size, channel order) is read by
tagestimate.model.describe_weights; this module only finds or downloads the file.
"""

import logging
import os

from tagestimate.files import temporary_path
from tagestimate.model import LEGACY, WeightsError, describe_weights

NDL_WEIGHTS_URL = "https://lab.ndl.go.jp/dataset/tagestimatemodel/weights_ndllabelimage.hdf5"
NDL_WEIGHTS_NAME = "weights_ndllabelimage.hdf5"
URL_ENVIRONMENT = "TAGESTIMATE_WEIGHTS_URL"
TRAINED_WEIGHTS = os.path.join("weights_pdm_multi", "best.weights.h5")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024  # NDL's file is ~20 MB; anything far larger is wrong
DOWNLOAD_TIMEOUT = 60  # seconds without an answer from the server before giving up
log = logging.getLogger(__name__)


def keras_cache_dir():
    """Where Keras keeps downloaded weights (~/.keras/models, or $KERAS_HOME/models)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def local_candidates():
    """Files tried, in order, when --weights is not given: NDL's file where the original
    told users to put it (current folder, then the project's), then this project's weights."""
    paths = []
    for relative in (NDL_WEIGHTS_NAME, TRAINED_WEIGHTS):
        for folder in (os.getcwd(), PROJECT_ROOT):
            path = os.path.abspath(os.path.join(folder, relative))
            if path not in paths:
                paths.append(path)
    return paths


def resolve_weights(path=None, url=None, download=True, timeout=DOWNLOAD_TIMEOUT):
    """The weight file to use: `path`, else a local file (local_candidates), else NDL's file in
    the Keras cache, else NDL's file downloaded there once from `url` ($TAGESTIMATE_WEIGHTS_URL,
    else NDL's address); WeightsError when none is found and download is False."""
    if path:
        if not os.path.isfile(path):
            raise WeightsError(f"weight file {path} does not exist; check --weights")
        return path
    for candidate in local_candidates():
        if os.path.isfile(candidate):
            return candidate
    cached = os.path.join(keras_cache_dir(), NDL_WEIGHTS_NAME)
    if os.path.isfile(cached):
        return cached
    url = url or os.environ.get(URL_ENVIRONMENT) or NDL_WEIGHTS_URL
    if not download:
        raise WeightsError(f"no weight file found; put {NDL_WEIGHTS_NAME} in {os.getcwd()} or pass --weights PATH")
    return download_weights(url, cached, timeout=timeout)


def download_weights(url, destination, timeout=DOWNLOAD_TIMEOUT, max_bytes=MAX_DOWNLOAD_BYTES):
    """Fetch `url` to `destination`: written under a temporary name, checked to be NDL's legacy
    tag model file (by its structure; nothing is built), then renamed; at most `max_bytes`."""
    import requests

    os.makedirs(os.path.dirname(destination), exist_ok=True)
    temporary = temporary_path(destination)  # unique: two runs may download at once
    try:
        try:
            _stream_to_file(requests, url, temporary, timeout, max_bytes)
        except requests.RequestException:
            raise WeightsError(
                f"could not download NDL's weights from {url} (offline?); download "
                f"{NDL_WEIGHTS_NAME} on a connected machine and put it in {os.getcwd()}, "
                "or pass --weights PATH"
            ) from None
        try:
            _, kind = describe_weights(temporary)
        except WeightsError as error:
            raise WeightsError(f"what {url} sent is not a usable tag model: {error}") from None
        if kind != LEGACY:
            raise WeightsError(f"what {url} sent is not NDL's legacy weight file")
        os.replace(temporary, destination)
        log.info("saved %s", destination)
        return destination
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _stream_to_file(requests, url, path, timeout, max_bytes):
    from tqdm import tqdm

    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        total = int(response.headers.get("Content-Length") or 0) or None
        if total and total > max_bytes:
            raise WeightsError(f"{url} announces {total} bytes, more than a tag model can be; refusing it")
        received = 0
        with open(path, "wb") as handle, tqdm(total=total, unit="B", unit_scale=True, desc=NDL_WEIGHTS_NAME) as bar:
            for block in response.iter_content(1 << 16):
                received += len(block)
                if received > max_bytes:
                    raise WeightsError(f"{url} sent more than {max_bytes} bytes; refusing it")
                handle.write(block)
                bar.update(len(block))
