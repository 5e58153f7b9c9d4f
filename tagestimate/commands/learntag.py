"""`tagestimate learn-tag OUTPUT NAME --positive IMAGE_OR_KEY ...`: a new tag from a few examples.

    python -m tagestimate learn-tag output ukiyoe --positive book1/0003 --positive book7/0012
    python -m tagestimate learn-tag output ukiyoe --positive a.jpg --negative book2/0001 --save ukiyoe.tag.json

A linear classifier (logistic regression) on the collection's vectors ranks every image:
OUTPUT/learned/NAME.csv (its path is printed) and OUTPUT/learned/NAME.html (the top N, with
thumbnails). --save writes the tag for multiinference.py --extra-tags.
"""

import argparse
import logging

from tagestimate import cli
from tagestimate.commands.search import add_model_flags
from tagestimate.files import HelpFormatter

log = logging.getLogger(__name__)


def build_parser(prog=None):
    from tagestimate.discover import learn

    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="Learn a tag from a few examples: a logistic regression (balanced classes) on the vectors "
                    "multiinference.py wrote ({item}.emb.npz) ranks every image of the collection.")
    parser.add_argument("output", metavar="OUTPUT", help="output folder of multiinference.py (local or s3://)")
    parser.add_argument("name", metavar="NAME", help="the tag's name: 1-64 letters, digits, '_', '.' or '-'")
    parser.add_argument("--positive", metavar="IMAGE_OR_KEY", action="append", required=True,
                        help="an image that has the tag: an image file, else a key ITEM/KEY (as search's --like)")
    parser.add_argument("--negative", metavar="IMAGE_OR_KEY", action="append", default=None,
                        help=f"an image that has not (repeatable). Default: {learn.NEGATIVES_PER_POSITIVE} random "
                             f"images of the collection per positive, at least {learn.MIN_NEGATIVES} (fixed seed)")
    parser.add_argument("--top", metavar="N", type=cli.bounded(int, 1), default=100,
                        help="images shown on the HTML page")
    parser.add_argument("--save", metavar="FILE", default=None,
                        help="also write the tag (its coefficients, threshold 0.5, the model it fits) to FILE, "
                             "for multiinference.py --extra-tags FILE")
    add_model_flags(parser)
    return parser


def main(argv=None, prog=None):
    args = build_parser(prog).parse_args(argv)
    cli.setup_logging(quiet=args.quiet)
    return cli.run(lambda: learn_tag(args), interrupted="interrupted; files are written atomically, so nothing is "
                                                        "half-written: run the same command again")


def learn_tag(args):
    from tagestimate import extratags
    from tagestimate.discover import index as collection, learn, query

    extratags.check_name(args.name)
    index = collection.update(args.output, input_dir=args.input, rebuild=args.rebuild, progress=not args.quiet)
    positive = query.Examples(index, args.positive, "--positive")
    negative = query.Examples(index, args.negative or [], "--negative")
    positives = positive.vectors(args.weights, args.backend)
    negatives = negative.vectors(args.weights, args.backend) if args.negative else None
    tag, values, order, roles = learn.learn(index, args.name, positives, positive.rows, negatives, negative.rows)
    table = learn.write_csv(index, args.name, values, order, roles)
    page = learn.write_html(index, args.name, values, order, roles, args.top, tag)
    log.info("%s above the threshold %s; the top %s shown in %s",
             cli.count(int((values > tag.threshold).sum()), "image"), tag.threshold, min(args.top, len(index)), page)
    if args.save:
        extratags.save(args.save, tag)
        log.info("tag %s saved to %s (apply it with multiinference.py --extra-tags %s)", args.name, args.save,
                 args.save)
    print(table)
    return 0
