"""Grow a labelled data set, one folder per tag, from the NDL Lab API and the NDL IIIF server;
or fetch whole books (by NDL pid or IIIF manifest) for multiinference.py to tag.

    python newdataclawer.py --tag graphic_map --tag stamp --per-class 500
    python newdataclawer.py --from-metadata metadata.csv --label stamp --limit 100
    python newdataclawer.py --pid 1054192 --out input
    python newdataclawer.py --iiif-manifest https://example.org/iiif/book/manifest.json --out input
    python newdataclawer.py --from-corrections corrections.csv

Images land in {out}/{tag}/{id}.jpg (where the trainer reads them), {out}/{pid}/{id}.jpg or
{out}/{slug}/{n:04d}.jpg (where multiinference.py reads them), and every saved image gets a
row in {out}/manifest.csv. Re-running a command only fetches what is missing.
--from-corrections applies a reviewer's corrections.csv to the data set instead.
"""

import argparse
import dataclasses
import re
import sys

from tagestimate import cli, ndl
from tagestimate.crawl import settings
from tagestimate.crawl.apply_corrections import apply_file
from tagestimate.crawl.books import crawl_pids
from tagestimate.crawl.iiif_manifests import crawl_manifests
from tagestimate.crawl.rebuild import rebuild_from_metadata
from tagestimate.crawl.tagged import crawl_tagged, most_specific_first
from tagestimate.errors import EXIT_INTERRUPTED
from tagestimate.files import HelpFormatter
from tagestimate.labels import LABELS

BOOK_OUT = "input"  # --out of the book modes: the folder multiinference.py reads by default


def byte_size(text):
    """Bytes from '20971520', '500KB' or '20MB' (K, M, G are powers of 1024), for argparse."""
    try:
        return settings.byte_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _iiif_size(text):
    if not ndl.valid_size(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IIIF size such as ,256 or 512, or !300,300 or full")
    return text


def _folder_name(text):
    if not ndl.valid_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder name of [0-9A-Za-z_-]")
    return text


def _manifest_source(text):
    if not re.match(r"https?://\S+$", text) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise argparse.ArgumentTypeError(f"{text!r} is neither an http(s) URL nor a file")
    return text


def build_parser(prog=None):
    defaults = settings.CrawlOptions
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download NDL illustrations into one folder per tag ({out}/{tag}/{id}.jpg) with a "
                    "manifest of where each came from. Tagged mode calls the NDL Lab API's randomwithfacet "
                    "for each tag; --from-metadata rebuilds the human-labelled NDL-ImageLabel set from its "
                    "index; --pid and --iiif-manifest fetch whole books for multiinference.py. Re-running a command "
                    "only fetches what is missing.",
        formatter_class=HelpFormatter,
    )
    tagged = parser.add_argument_group("tagged mode (NDL Lab API; --max-idle, --api-batch, --delay and --api-base "
                                       "serve --pid too)")
    tagged.add_argument("--tag", action="append", choices=LABELS, default=None, metavar="TAG",
                        help=f"a tag to crawl, one of {', '.join(LABELS)}; repeat for several (default: all, "
                             f"the most specific first). Each image goes into the folder of the tag it was "
                             f"requested for; records that also carry a more specific tag are left for that "
                             f"tag's folder (a picture_landmark record is not filed under picture_outdoor)")
    tagged.add_argument("--per-class", type=cli.bounded(int, 1), default=settings.PER_CLASS,
                        help="stop a tag once its folder holds this many images")
    tagged.add_argument("--min-confidence", type=cli.bounded(float, 0.0, 1.0), default=settings.MIN_CONFIDENCE,
                        help="keep only records whose requested tag has NDL's confidence >= this (0-1)")
    tagged.add_argument("--max-idle", type=cli.bounded(int, 1), default=defaults.max_idle,
                        help="give up on a tag after this many API calls in a row bring nothing new")
    # The preferred name first (usage and help show it), the old one last, kept as an alias.
    tagged.add_argument("--api-batch", "--batch", dest="batch", metavar="N",
                        type=cli.bounded(int, 1, ndl.MAX_API_BATCH), default=defaults.batch,
                        help="records asked for per API call (the API's size parameter; --batch is its old name)")
    tagged.add_argument("--delay", type=cli.bounded(float, 0.0), default=defaults.delay,
                        help="seconds between API calls")
    tagged.add_argument("--api-base", type=cli.http_url, default=defaults.api_base, help="NDL Lab API base URL")
    rebuild = parser.add_argument_group("rebuild mode (NDL-ImageLabel index)")
    rebuild.add_argument("--from-metadata", metavar="CSV", default=None,
                         help="NDL-ImageLabel metadata.csv: download its crops into one folder per label, "
                              "at --size instead of the index's full size")
    rebuild.add_argument("--label", action="append", type=_folder_name, default=None,
                         help="only this label of the index; repeat for several (default: all)")
    rebuild.add_argument("--limit", type=cli.bounded(int, 1), default=None,
                         help="only the first N rows of each label in the index; with --iiif-manifest, at most N "
                              "manifests of each collection (default: all)")
    books = parser.add_argument_group("book modes (whole books for multiinference.py)")
    books.add_argument("--pid", action="append", type=_folder_name, default=None,
                       help="an NDL book (item) id: fetch every illustration the API knows for it into "
                            "{out}/{pid}/{id}.jpg, calling randomwithfacet with f-pid until --max-idle calls in "
                            "a row bring nothing new; repeat for several books")
    books.add_argument("--iiif-manifest", action="append", type=_manifest_source, default=None,
                       metavar="URL_OR_FILE",
                       help="a IIIF Presentation 2.1 or 3.0 manifest or collection: each canvas's whole image "
                            "(at --size) into {out}/{slug}/{n:04d}.jpg, the slug taken from the manifest's id; "
                            "a collection's manifests are followed, at most --limit of them; repeatable")
    review = parser.add_argument_group("corrections mode (a reviewer's decisions; no network)")
    review.add_argument("--from-corrections", metavar="FILE", default=None,
                        help="apply a corrections.csv (image,item,tag,decision,reviewer,time) to the data set "
                             "in --out: confirm and add copy the image into {out}/{tag}/, reject moves it to "
                             "{out}/_rejected/{tag}/ (never deleted); manifest.csv records each decision "
                             "(source reviewed), and later crawls leave those images as decided. Applying a "
                             "file twice changes nothing")
    common = parser.add_argument_group("all modes")
    common.add_argument("--out", default=None,
                        help=f"data set folder: {{out}}/{{folder}}/{{id}}.jpg and {{out}}/manifest.csv "
                             f"(default: {defaults.out}; {BOOK_OUT} with --pid or --iiif-manifest, the folder "
                             f"multiinference.py reads)")
    common.add_argument("--iiif-base", type=cli.http_url, default=defaults.iiif_base,
                        help="IIIF Image API base; in rebuild mode it replaces the base of the index's URLs "
                             "(everything before /{pid}/R), e.g. for a mirror")
    common.add_argument("--size", type=_iiif_size, default=defaults.size,
                        help="IIIF size of each image: ,256 is 256 px high; full is the original crop")
    common.add_argument("--parallel-downloads", "--workers", dest="workers", metavar="N",
                        type=cli.bounded(int, 1, 64), default=defaults.workers,
                        help="images downloaded at once (--workers is its old name)")
    common.add_argument("--timeout", type=cli.bounded(float, 0.0, low_open=True), default=defaults.timeout,
                        help="seconds to wait for a server to answer; a whole body must have arrived within "
                             "twice that of the request, or the download is cut off there and retried")
    common.add_argument("--retries", type=cli.bounded(int, 0), default=defaults.retries,
                        help="retries of a request after a connection error, timeout, 429 or 5xx")
    common.add_argument("--backoff", type=cli.bounded(float, 0.0), default=defaults.backoff,
                        help="first retry waits this many seconds, doubling each time")
    common.add_argument("--max-wait", type=cli.bounded(float, 0.0), default=defaults.max_wait,
                        help="longest wait before a retry, including one asked for by Retry-After")
    common.add_argument("--max-bytes", type=byte_size, default=settings.MAX_BYTES,
                        help="drop an image larger than this (K, M, G = 1024, 1024^2, 1024^3 bytes)")
    return parser


def crawl_options(args):
    """The CrawlOptions that parsed flags ask for (every one of its fields is a flag; --out's default
    depends on the mode)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(settings.CrawlOptions)}
    if values["out"] is None:
        values["out"] = BOOK_OUT if args.pid or args.iiif_manifest else settings.CrawlOptions.out
    return settings.CrawlOptions(**values)


def check_modes(parser, args, given=frozenset()):
    """Exit 2 with one sentence for flags that conflict or that the chosen mode would ignore;
    `given` names the options on the command line (a default is never a conflict)."""
    modes = [flag for flag, given_mode in (("--tag", args.tag), ("--from-metadata", args.from_metadata),
                                           ("--pid", args.pid), ("--iiif-manifest", args.iiif_manifest),
                                           ("--from-corrections", args.from_corrections)) if given_mode]
    if len(modes) > 1:
        parser.error(f"{modes[0]} and {modes[1]} are different modes; give one of them")
    if args.label and not args.from_metadata:
        parser.error("--label selects rows of an index: use it with --from-metadata")
    if args.limit and not (args.from_metadata or args.iiif_manifest):
        parser.error("--limit selects rows of an index or manifests of a collection: use it with --from-metadata "
                     "or --iiif-manifest")
    ignored = [flag for flag, dest in (("--per-class", "per_class"), ("--min-confidence", "min_confidence"))
               if dest in given]
    if ignored and modes and modes[0] != "--tag":
        parser.error(f"{ignored[0]} applies to tagged mode only (one folder per --tag), not to {modes[0]}; "
                     "leave it out")


def main(argv=None, prog=None):
    """The command (`prog`: its name in usage lines, e.g. "tagestimate crawl"); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check_modes(parser, args, cli.given_flags(lambda: build_parser(prog), argv))
    cli.setup_logging()
    options = crawl_options(args)
    # Ctrl-C before the crawl started, or a second one while it winds down (the first ends the crawl)
    return cli.run(lambda: _crawl(args, options),
                   interrupted="interrupted: every image saved so far is complete and recorded; run the same "
                               "command again to resume")


def _crawl(args, options):
    if args.from_corrections:
        report = apply_file(args.from_corrections, options.out)
        print(report.format())
        return EXIT_INTERRUPTED if report.interrupted else 0
    if args.from_metadata:
        summary = rebuild_from_metadata(options, args.from_metadata, labels=args.label, limit=args.limit)
    elif args.pid:
        summary = crawl_pids(options, list(dict.fromkeys(args.pid)))
    elif args.iiif_manifest:
        summary = crawl_manifests(options, list(dict.fromkeys(args.iiif_manifest)), limit=args.limit)
    else:
        summary = crawl_tagged(options, args.tag or most_specific_first(LABELS), args.per_class,
                                     min_confidence=args.min_confidence)
    print(summary.format())
    return EXIT_INTERRUPTED if summary.interrupted else 0
