"""`tagestimate search OUTPUT --like IMAGE_OR_KEY`: the images of a tagged collection most like some examples.

    python -m tagestimate search output --like book1/0003             # a key: ITEM/KEY
    python -m tagestimate search output --like scan.jpg -k 20 --format csv
    python -m tagestimate search output --like book1/0003 --like book2/0010   # their normalised mean

The collection index (OUTPUT/.index/) is built on first use and brought up to date on each
search: only new or changed item files are read. Keys given as examples are left out of the results.
"""

import argparse
import sys

from tagestimate import cli
from tagestimate.files import HelpFormatter
from tagestimate.tag.backends import BACKENDS

FORMATS = ("table", "json", "csv")


def add_model_flags(parser):
    """--weights, --backend, --input, --rebuild, --quiet: what search and learn-tag share."""
    parser.add_argument("--weights", metavar="PATH", default=None,
                        help="weight file that embeds example images (keys need none); default: the one "
                             "OUTPUT/html/run.json names, else the file multiinference.py would use. It must be "
                             "the one that tagged OUTPUT")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="how example images are embedded, as multiinference.py's --backend")
    parser.add_argument("--input", metavar="FOLDER", default=None,
                        help="the input folder that was tagged, to find image files and manifest.csv when the "
                             "report's files do not name them (default: the one OUTPUT/html/run.json names)")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the index from every item file instead of updating it")
    parser.add_argument("--quiet", action="store_true", help="print only warnings, errors and the results")


def build_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="Find the images of a tagged output folder most like some examples, by the vectors "
                    "multiinference.py wrote beside its outputs ({item}.emb.npz). Scores are cosine "
                    "similarities: 1 for the same image.")
    parser.add_argument("output", metavar="OUTPUT", help="output folder of multiinference.py (local or s3://)")
    parser.add_argument("--like", metavar="IMAGE_OR_KEY", action="append", required=True,
                        help="an example: an image file (embedded with the model), else a key ITEM/KEY of the "
                             "collection (split at the first '/'; key:ITEM/KEY forces a key). Repeat it to search "
                             "for the normalised mean of several examples")
    parser.add_argument("-k", "--top", dest="k", metavar="N", type=cli.bounded(int, 1), default=10,
                        help="how many images to list")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table: aligned columns; json: a list of objects; csv: with a header. Columns: "
                             "rank, score, item, key, path (the image file, where known), iiif (its IIIF target, "
                             "where known)")
    add_model_flags(parser)
    return parser


def main(argv=None, prog=None):
    args = build_parser(prog).parse_args(argv)
    cli.setup_logging(quiet=args.quiet)
    return cli.run(lambda: search(args), interrupted="interrupted; the index is written atomically, so nothing is "
                                                     "half-written: run the same command again")


def search(args):
    from tagestimate.discover import index as collection, nearest, query

    index = collection.update(args.output, input_dir=args.input, rebuild=args.rebuild, progress=not args.quiet)
    examples = query.Examples(index, args.like)
    vector = query.mean_vector(examples.vectors(args.weights, args.backend))
    rows, values = nearest.Searcher(index, progress=not args.quiet).search(vector, args.k, exclude=examples.rows)
    sys.stdout.write(query.render(query.result_rows(index, rows, values), args.format))
    return 0
