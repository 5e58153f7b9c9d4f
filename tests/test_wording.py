"""Counts in messages take the noun's right form: "1 file", "2 files" (issue 19.12), through the one
helper on the ground floor (files.plural and files.count; cli.count is the same function)."""

import logging
import socket

import pytest

from tagestimate import cli, files, httpclient
from tagestimate.commands import tag
from tagestimate.crawl.summary import CrawlSummary
from tagestimate.errors import EXIT_INTERRUPTED


def test_the_helper_is_one_function_on_the_ground_floor():
    assert cli.count is files.count
    assert [files.count(n, "file") for n in (0, 1, 2, 1000)] == ["0 files", "1 file", "2 files", "1,000 files"]
    assert [files.plural(n, "item id") for n in (1, 2)] == ["item id", "item ids"]
    assert files.count(2, "copy", "copies") == "2 copies" and files.count(1, "copy", "copies") == "1 copy"


def summary(n, **changes):
    """A tag run's summary with every count `n`."""
    found = {"images": n, "items": n, "finished_items": n, "skipped_images": n, "skipped_items": n,
             "attempted": n, "seconds": 1.0, "images_per_second": float(n), "interrupted": False, "unreadable_items": 0}
    found.update(changes)
    return found


@pytest.mark.parametrize("n, images, items, files_, done, them", [
    (1, "1 image", "1 item", "1 file", "1 item", "it"), (2, "2 images", "2 items", "2 files", "2 items", "them")])
def test_the_tag_summary_says_1_image_and_2_images(capsys, n, images, items, files_, done, them):
    assert tag.report(summary(n), "out") == 0
    assert capsys.readouterr().out == (f"{images} tagged in {items}, {files_} skipped (see out/errors.json), "
                                       f"{done} already done; {n}.0 images/s\n")
    assert tag.report(summary(n, items=0), "out") == 0
    assert capsys.readouterr().out == (f"{done} already done in out, nothing to tag ({files_} skipped (see "
                                       f"out/errors.json)); pass --overwrite to tag {them} again\n")
    assert tag.report(summary(n, interrupted=True, finished_items=0), "out") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == (f"interrupted: 0 of {items} finished ({images} tagged) in out (see "
                                       "out/errors.json); run the same command again to tag the rest\n")


@pytest.mark.parametrize("n, words", [(1, "1 image saved"), (2, "2 images saved")])
def test_the_crawl_summary_counts_images_saved(n, words):
    crawl = CrawlSummary(elapsed=2.0)
    crawl.stats("stamp").saved = n
    assert crawl.format().splitlines()[-1] == f"{words} in 2.0 s ({n / 2:.2f} images/s)"


@pytest.mark.parametrize("retries, words", [(0, "gave up after 1 attempt"), (1, "gave up after 2 attempts")])
def test_a_fetch_that_gives_up_counts_its_attempts(retries, words, caplog):
    caplog.set_level(logging.ERROR)  # the retry's warning is not what is checked here
    with socket.socket() as bound:  # bound, not listening: refused at once
        bound.bind(("127.0.0.1", 0))
        client = httpclient.HttpClient(retries=retries, backoff=0.01, max_wait=0.01, timeout=2)
        with pytest.raises(httpclient.FetchError) as error:
            client.get(f"http://127.0.0.1:{bound.getsockname()[1]}/x", max_bytes=10)
        client.close()
    assert str(error.value).endswith(f"; {words}")
