"""Tag every image under input/ and write one JSON per item into output/.

    python multiinference.py                       # input/ -> output/, weights found or fetched
    python multiinference.py --weights weights_ndllabelimage.hdf5 --inputpath scans --outputpath tags

Each direct sub-folder of the input folder is one item (e.g. a book's pid) and becomes
output/{folder}.json: {"image name without extension": [{"tag": ..., "confidence": ...}]}.
"""

import argparse
import logging
import os
import sys

from tagestimate import cli, sources, storage
from tagestimate.tag.backends import BACKENDS, choose_backend, make_runner
from tagestimate.errors import EXIT_ERROR, EXIT_INTERRUPTED, UserError
from tagestimate.files import HelpFormatter, plural, printable_path
from tagestimate.images import IMAGE_EXTENSIONS
from tagestimate.labels import LANGUAGES
from tagestimate.tag.inference import DEFAULT_BATCH_SIZE, ERRORS_NAME, MAX_WORKERS, find_items
from tagestimate.tag.local import Tagger
from tagestimate.tag.settings import InferenceSettings, ModelBundle
from tagestimate.tag.vectors import VectorPlan
from tagestimate.model import DEFAULT_THRESHOLD
from tagestimate.formats import FORMATS
from tagestimate.weights import NDL_WEIGHTS_NAME, TRAINED_WEIGHTS, URL_ENVIRONMENT, resolve_weights


def build_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Tag the illustrations under an input folder with NDL's tag model or one "
                    "trained by multitrain_efficientnet.py.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--inputpath", default="input",
                        help="folder whose sub-folders (items) hold the images; loose images in it "
                             "form one more item named after the folder. Extensions read: "
                             + " ".join(sorted(IMAGE_EXTENSIONS)))
    parser.add_argument("--outputpath", default="output",
                        help="folder for {item}.json (or .csv) and errors.json")
    parser.add_argument("--weights", metavar="PATH", default=None,
                        help=f"weight file: NDL's {NDL_WEIGHTS_NAME} or a best.weights.h5 with its "
                             f"model.json. Default: ./{NDL_WEIGHTS_NAME}, else {TRAINED_WEIGHTS}, "
                             "else NDL's file downloaded once into ~/.keras/models")
    parser.add_argument("--weights-url", default=None,
                        help=f"where to download NDL's file from when no local file is found "
                             f"(also ${URL_ENVIRONMENT}); default: NDL Lab's published URL")
    parser.add_argument("--threshold", type=cli.bounded(float, 0.0, 1.0, high_open=True), default=None,
                        help=f"keep tags whose confidence is above this, for every label. Default: "
                             f"the per-label thresholds in model.json, else {DEFAULT_THRESHOLD} "
                             "(the original's)")
    parser.add_argument("--batch-size", type=cli.bounded(int, 1), default=DEFAULT_BATCH_SIZE,
                        help="images per model call")
    # The preferred name first (usage and help show it), the old one last, kept as an alias.
    parser.add_argument("--decode-threads", "--workers", dest="workers", metavar="N", type=cli.bounded(int, 1),
                        default=None,
                        help="threads decoding images in parallel with the model (default: CPU count, at most "
                             f"{MAX_WORKERS}; --workers is its old name)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: OpenVINO (fp32) on a CPU when installed, TensorFlow on a GPU or otherwise")
    parser.add_argument("--overwrite", action="store_true",
                        help="tag items again even when their output file exists; without it they are "
                             "skipped, so an interrupted run resumes")
    parser.add_argument("--format", choices=sorted(FORMATS), default="json",
                        help="; ".join(f"{name}: {output.description}" for name, output in FORMATS.items()))
    parser.add_argument("--full-decode", action="store_true",
                        help="decode JPEGs at full size, exactly as NDL's original script did, instead "
                             "of letting libjpeg shrink large scans while decoding (5-8x faster on pages "
                             "of 2,000 px and more; crops under 448 px are decoded in full either way)")
    parser.add_argument("--id-base", metavar="URL", default=None,
                        help="--format iiif: the URL the output folder will be published at; the annotations' "
                             "ids are derived from it (default: the output folder's file: URL)")
    parser.add_argument("--target-base", metavar="URL", default=None,
                        help="--format iiif or catalogue: the URL the input folder's images are published at, for "
                             "images with no IIIF page or canvas to target, and the catalogue's file column "
                             "(default: their file: URLs)")
    parser.add_argument("--no-report", action="store_true",
                        help="write no review report (output/index.html, output/html/ with thumbnails); by "
                             "default every run rebuilds it from all items in the output folder")
    parser.add_argument("--lang", choices=LANGUAGES, default=None,
                        help="the review report shows each tag by its English (en) or Japanese (ja) name; the "
                             "output files keep the tags themselves (the catalogue and iiif formats carry both "
                             "names) (default: the report shows the tags, e.g. graphic_map)")
    parser.add_argument("--explain", action="store_true",
                        help="add Grad-CAM overlays to the report: what the model looked at for each kept tag "
                             "of each image tagged in this run (a TensorFlow backward pass, slower; see README)")
    parser.add_argument("--no-embeddings", action="store_true",
                        help="write no {item}.emb.npz (by default each item's images get the model's "
                             "vector from the same forward pass, L2-normalised float16, for search and learn-tag)")
    parser.add_argument("--extra-tags", metavar="FILE", action="append", default=None,
                        help="also tag with this extra tag saved by learn-tag (repeatable): scored on the "
                             "image's vector, kept above its own threshold, marked as extra in every format; "
                             "it must come from this model's vectors")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    scale = parser.add_argument_group(
        "collection scale", "--inputpath and --outputpath may also be URIs (s3://bucket/prefix; credentials "
        "and AWS_ENDPOINT_URL from the environment), with either engine; both need requirements-scale.txt")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: a pool of Ray actors, one item (book) per task, on this "
                            "machine or the cluster of --ray-address")
    scale.add_argument("--ray-address", metavar="ADDRESS", default=None,
                       help="join a running Ray cluster (auto, or ray://host:10001); default: start a local Ray "
                            "with this machine's CPUs and stop it at the end")
    scale.add_argument("--actors", type=cli.bounded(int, 1), default=None,
                       help="Ray actors, each holding the model (default: one per GPU when the cluster has GPUs, "
                            "else one per CPU)")
    scale.add_argument("--gpus-per-actor", type=cli.bounded(float, 0.0), default=None,
                       help="GPUs each actor reserves (default: 1 when the cluster has GPUs, else 0)")
    return parser


def check_arguments(parser, args):
    # Number ranges are checked by the flags' types (cli.bounded); here, what depends on several flags.
    if args.explain and args.no_report:
        parser.error("--explain shows its overlays in the report; leave out --no-report")
    if args.explain and (args.engine == "ray" or not storage.on_disk(args.outputpath)):
        parser.error("--explain runs with the local engine into a local output folder; leave out --engine ray "
                     "or tag into a local folder")
    if args.engine != "ray" and (args.ray_address or args.actors or args.gpus_per_actor is not None):
        parser.error("--ray-address, --actors and --gpus-per-actor need --engine ray")
    # Refused rather than ignored: the other formats carry no ids, so the flag is a slip of the command line.
    if args.id_base and args.format != "iiif":
        parser.error("--id-base serves --format iiif only (its annotations' ids); add --format iiif "
                     "or leave --id-base out")
    if args.target_base and args.format not in ("iiif", "catalogue"):
        parser.error("--target-base serves --format iiif and catalogue only (where they point at the image files); "
                     "add --format iiif or catalogue, or leave --target-base out")
    try:
        input_missing = not storage.isdir(args.inputpath)
        input_is_file = input_missing and storage.isfile(args.inputpath)
        overlap = storage.overlap_problem(args.inputpath, args.outputpath)
        if overlap:  # before the output check, which creates the output folder
            parser.exit(2, f"error: {overlap}\n")
        problem = storage.output_problem(args.outputpath)
    except UserError as error:  # a URI whose package or store is missing
        parser.exit(2, f"error: {error}\n")
    if input_is_file:
        parser.exit(2, f"error: --inputpath {printable_path(args.inputpath)} is a file, not a folder; pass the "
                       "folder whose sub-folders (items) hold the images\n")
    if input_missing:
        parser.exit(2, f"error: input folder {printable_path(args.inputpath)} does not exist; put item folders "
                       "of images there or pass --inputpath\n")
    for flag, value in (("--id-base", args.id_base), ("--target-base", args.target_base)):
        bad = value is not None and cli.url_problem(value)
        if bad:
            parser.error(f"{flag} must be an absolute URL such as https://example.org/tags; {value!r} {bad}")
    if problem:
        parser.exit(2, f"error: {problem}; pass --outputpath a folder you can write to\n")


def main(argv=None, prog=None):
    """The command (`prog`: its name in usage lines, e.g. "tagestimate tag"); returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    cli.setup_logging(quiet=args.quiet)
    # Ctrl-C while listing or loading; the run itself reports its own
    return cli.run(lambda: _finish(tag(args), args),
                   interrupted="interrupted before any image was tagged; run the same command again")


def _finish(summary, args):
    if summary is None:
        print(f"no images found in {printable_path(args.inputpath)}; put one folder of images per item there",
              file=sys.stderr)
        return EXIT_ERROR
    return report(summary, args.outputpath)


def tag(args):
    """List the items, load the model, tag; the run's summary, or None when there is no image."""
    settings = InferenceSettings.from_args(args)
    items, problems = find_items(settings.input_dir)
    if not items:
        return None
    if settings.output_format == "iiif":  # before the weights: a missing iiif-prezi3 must not wait for a download
        from tagestimate import annotations  # iiif-prezi3 and pydantic load only for this format
    bundle = ModelBundle.load(resolve_weights(settings.weights, settings.weights_url), settings.threshold)
    vectors = VectorPlan.for_run(settings, bundle)  # --extra-tags checked against the model before any image
    context = None
    if settings.output_format == "iiif":
        context = annotations.run_context(settings.input_dir, bundle.path, settings.output_dir, settings.id_base,
                                          settings.target_base, weights_sha256=bundle.sha256)
        annotations.write_context(settings.output_dir)
        annotations.note_run(items, context)
    elif settings.output_format == "catalogue":  # its rows point at the images: the input folder and --target-base
        context = sources.run_context(settings.input_dir, bundle.path, settings.output_dir,
                                      target_base=settings.target_base, weights_sha256=bundle.sha256)
    if settings.report and not settings.with_report:
        logging.info("no review report for an object-store output; copy the output folder to a disk and run "
                     "python -m tagestimate.review.report on it")
    recorder = None
    if settings.with_report:  # the engines hand it each item's full probabilities for the report
        from tagestimate.review.recorder import ReportRecorder

        recorder = ReportRecorder(explain=settings.explain)
    if settings.engine == "ray":  # imported here: the local engine never loads Ray
        from tagestimate.tag import ray_engine

        summary = ray_engine.run(settings, bundle, items, problems, context=context, on_item=recorder,
                                 vectors=vectors)
        backend = f"{settings.backend} on Ray"
    else:
        backend = choose_backend(settings.backend)
        runner = make_runner(backend, bundle)
        converted = getattr(runner, "conversion_seconds", None)  # a first run with this weight file on OpenVINO
        config = bundle.config
        logging.info("weights %s (%s), backend %s, %d labels, %d px %s", printable_path(bundle.path), bundle.kind,
                     backend, len(config.labels), config.image_size, config.channel_order)
        tagger = Tagger(runner, bundle.output_config, settings, context=context, on_item=recorder, vectors=vectors)
        summary = tagger.run(items, problems)
        if converted is not None:
            summary["conversion_seconds"] = converted
    if recorder is not None and not summary["interrupted"]:
        from tagestimate.review import report as review

        summary["report"] = review.finish_run(settings.output_dir, items, bundle, backend,
                                              recorder.explained if settings.explain else None,
                                              draft=settings.draft, progress=settings.progress,
                                              input_dir=settings.input_dir, lang=settings.lang)
    return summary


def _n(number, noun):
    """'1 image', '2 images' (digits as they were: no thousands separator)."""
    return f"{number} {plural(number, noun)}"


def _conversion_note(summary):
    """The rate counts tagging only: a run that first converted the model says how long that took."""
    seconds = summary.get("conversion_seconds")
    if seconds is None:
        return ""
    return f" (tagging only; converting the model for OpenVINO took {seconds:.1f} s, once per weight file)"


def report(summary, output_dir):
    """Print the run's outcome; returns the exit status."""
    output = printable_path(output_dir)
    errors_note = f" (see {os.path.join(output, ERRORS_NAME)})" if summary["skipped_images"] else ""
    if summary["interrupted"]:
        print(f"interrupted: {summary['finished_items']} of {_n(summary['items'], 'item')} finished "
              f"({_n(summary['images'], 'image')} tagged) in {output}{errors_note}; run the same command "
              "again to tag the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not summary["items"]:
        skipped = (f" ({_n(summary['skipped_images'], 'file')} skipped{errors_note})" if summary["skipped_images"]
                   else "")
        print(f"{_n(summary['skipped_items'], 'item')} already done in {output}, nothing to tag{skipped}; "
              f"pass --overwrite to tag {'it' if summary['skipped_items'] == 1 else 'them'} again")
        return 0
    print(f"{_n(summary['images'], 'image')} tagged in {_n(summary['items'], 'item')}, "
          f"{_n(summary['skipped_images'], 'file')} skipped{errors_note}, {_n(summary['skipped_items'], 'item')} "
          "already done; "
          f"{summary['images_per_second']:.1f} images/s{_conversion_note(summary)}")
    if summary.get("report"):
        print(f"review report: {printable_path(summary['report'])}")
    if summary["attempted"] and not summary["images"]:
        print("error: none of the files could be read as images", file=sys.stderr)
        return EXIT_ERROR
    return 0
