"""Grow a labelled data set, one folder per tag, from the NDL Lab API and the NDL IIIF server;
or fetch whole books (by NDL pid or IIIF manifest) for multiinference.py to tag.

    python newdataclawer.py --tag graphic_map --tag stamp --per-class 500
    python newdataclawer.py --from-metadata metadata.csv --label stamp --limit 100
    python newdataclawer.py --pid 1054192 --out input
    python newdataclawer.py --iiif-manifest https://example.org/iiif/book/manifest.json --out input

Images land in {out}/{tag}/{id}.jpg (where the trainer reads them), {out}/{pid}/{id}.jpg or
{out}/{slug}/{n:04d}.jpg (where multiinference.py reads them), and every saved image gets a
row in {out}/manifest.csv. Re-running a command only fetches what is missing.
"""

# A thin shim: the command lives in tagestimate/commands/crawl.py (also `python -m tagestimate crawl`).
import sys

from tagestimate.commands.crawl import build_parser, main, byte_size, crawl_options  # noqa: F401  (the command's code; tests and users import these)


if __name__ == "__main__":
    sys.exit(main())
