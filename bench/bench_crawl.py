"""Crawl throughput against the loopback emulator with a fixed latency added to every request.

    python bench/bench_crawl.py                      # 100 ms per request, 60 images, --workers 1 and 4
    python bench/bench_crawl.py --latency 0.2 --images 100 --workers 1 2 8

Prints images/s for each worker count; --delay is 0 so the figure is the download path alone.
"""

import argparse
import logging
import os
import sys
import tempfile
import time


def build_parser():
    from tagestimate.crawl.settings import CrawlOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every emulated request")
    parser.add_argument("--images", type=int, default=60, help="images to crawl per run (--per-class)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, CrawlOptions.workers],
                        help="worker counts to compare")
    return parser


def main(argv=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tagestimate.crawl.settings import CrawlOptions
    from tagestimate.crawl.tagged import crawl_tagged
    from tests.ndl_emulator import NdlEmulator

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    records = [{"id": f"{2000000 + n}_{n % 300 + 1}_0", "pid": str(2000000 + n), "page": n % 300 + 1,
                "x": 10.0, "y": 15.0, "w": 60.0, "h": 50.0, "title": "bench",
                "graphictags": [{"tagname": "stamp", "confidence": 0.9}]} for n in range(args.images * 5)]
    print(f"latency {args.latency * 1000:.0f} ms per request, {args.images} images, "
          f"batch {CrawlOptions.batch}, delay 0")
    with NdlEmulator(records, latency=args.latency) as emulator:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as out:
                options = CrawlOptions(out=out, api_base=emulator.api_base, iiif_base=emulator.iiif_base,
                                       delay=0.0, workers=workers)
                calls_before = emulator.count("api")
                started = time.monotonic()
                summary = crawl_tagged(options, ["stamp"], per_class=args.images)
                elapsed = time.monotonic() - started
                print(f"--workers {workers}: {summary.saved} images in {elapsed:.2f} s = "
                      f"{summary.saved / elapsed:.1f} images/s ({emulator.count('api') - calls_before} API calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
