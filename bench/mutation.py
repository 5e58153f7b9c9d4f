"""Mutation testing of the modules where a silent bug costs users most (a developer tool, not CI).

    pip install "mutmut>=3.8,<4"
    python bench/mutation.py                    # every module below, one after the other
    python bench/mutation.py results files      # some of them
    python bench/mutation.py labels --show      # also print the diff of each surviving mutant
    python bench/mutation.py --list             # the modules, their functions and tests

For each module this copies the working tree (without .git, .venv, data) into a private folder
(default /tmp/tagestimate-mutation/<module>), writes mutmut's setup.cfg there, and runs
`mutmut run` on that module's functions with only that module's fast tests (no model fits),
so nothing in the checkout is touched. Each mutant is a small change to one function
(a flipped comparison, a changed constant, a dropped argument...); "killed" means a test went
red. Survivors listed in EQUIVALENT (with the reason) cannot change behaviour and are left
out of the score; the score is killed / (total - equivalent). Exit status 1 when a module
is below 90 %.
"""

import argparse
import dataclasses
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SCORE = 90.0
# Paths never copied into the private tree: big, generated, or mutmut's own output.
IGNORED = {".git", ".venv", ".ci-venv", "mutants", "__pycache__", ".pytest_cache", "datasetpdm", "output",
           "weights_pdm_multi", "input"}


@dataclasses.dataclass
class Target:
    sources: dict  # file to mutate (relative to the repository root) -> mutmut's mangled names of its
    # functions to mutate: "x_name" for functions, "xǁClassǁmethod" for methods, "*" for all
    tests: list  # pytest arguments: test files, then optionally "-k", "expression"
    about: str = ""


MODULES = {
    "images": Target({"tagestimate/images.py": ["*"]}, ["tests/test_images.py", "tests/test_images_mutants.py"],
                     "listing and loading images (every pixel the model sees)"),
    "results": Target({"tagestimate/formats.py": ["*"]},
                      ["tests/test_results.py", "tests/test_formats.py", "tests/test_foundation_formats.py",
                       "tests/test_catalogue.py", "-m", "not slow"],
                      "thresholds, tags above them, NDL JSON and CSV output"),
    "files": Target({"tagestimate/files.py": ["*"]}, ["tests/test_files.py", "tests/test_wording.py"],
                    "atomic writes, file hashes, NDL names, help formatter"),
    "labels": Target({"tagestimate/labels.py": ["*"], "tagestimate/commands/labels.py": ["*"]}, ["tests/test_labelmap.py"],
                     "the label table, label map loading and validation, its CLI"),
    "split_metrics": Target({"tagestimate/train/dataset.py": ["*"], "tagestimate/train/metrics.py": ["*"]},
                            ["tests/test_split_metrics.py", "tests/test_split_metrics_mutants.py", "tests/test_crossval.py",
                             "tests/test_crossval_mutants.py",
                             "tests/test_corrections_apply.py", "-m", "not slow"],
                            "data listing, grouped split, folds, folder weights, F1 and threshold tuning, summary"),
    "resume": Target({"tagestimate/train/state.py": ["x_read_json", "x_prepare_output", "x_clear_run",
                                                      "x_trim_history"],
                      "tagestimate/train/dataset.py": ["x_read_split"],
                      "tagestimate/model.py": ["x_save_weights_atomic"],
                      "tagestimate/train/training.py": ["x_load_weights_quietly", "x_restore_optimizer",
                                                  "xǁ_SaveBestǁon_epoch_end", "xǁ_SaveStateǁon_epoch_end"]},
                     ["tests/test_split_metrics.py"],
                     "--resume/--overwrite checks, split.csv re-reading, state.json writing, checkpoints"),
    "resume_state": Target({"tagestimate/train/state.py": ["x__is_int", "x__is_number", "x__read_object", "x__bad",
                                                           "x__setting_ok", "x_read_state", "x_read_config",
                                                           "x_resumed_settings", "x_stored_settings"]},
                           ["tests/test_split_metrics.py"],
                           "state.json and model.json as --resume reads them, field by field"),
    "manifest": Target({"tagestimate/manifest.py": ["xǁManifestǁ*"]},
                       ["tests/test_manifest.py", "tests/test_manifest_mutants.py", "tests/test_corrections_apply.py",
                        "tests/test_crawler.py",
                        "-m", "not slow"],
                       "the crawler's manifest.csv and its reconciliation with the folders"),
    "storage": Target({"tagestimate/storage.py": ["*"]},
                      ["tests/test_storage.py", "tests/test_storage_mutants.py", "-m", "not slow"],
                      "local paths and s3:// URIs (a loopback S3): reads, atomic writes, listing, errors"),
    "annotations": Target({"tagestimate/annotations.py": ["*"]},
                          ["tests/test_annotations.py", "tests/test_annotations_mutants.py", "tests/test_viewer.py",
                           "tests/test_formats.py", "-m", "not slow"],
                          "--format iiif: the AnnotationPage, its targets, ids and provenance, the run's notes"),
    "run": Target({"tagestimate/tag/run.py": ["*"]},
                  ["tests/test_inference.py", "tests/test_wording.py", "-m", "not slow", "-k",
                   "not offline_main_job"],  # that one tags the demo input/, which is not in mutmut's tree
                  "a tag run's plan, counts, errors.json and the planned-against-written check (both engines)"),
    "iiif": Target({"tagestimate/iiif.py": ["*"]},
                   ["tests/test_iiif.py", "tests/test_iiif_mutants.py", "tests/test_viewer.py", "-m", "not slow"],
                   "IIIF Presentation 2.1/3.0 documents the crawler reads: canvases, image URLs, slugs"),
    "report": Target({"tagestimate/review/report.py": ["*"]},
                     ["tests/test_report.py", "tests/test_report_mutants.py", "-m", "not slow"],
                     "the review report: item files, full probabilities, the pages and their data"),
    "cards": Target({"tagestimate/review/cards.py": ["*"], "tagestimate/review/recorder.py": ["*"],
                     "tagestimate/review/backlog.py": ["*"]},
                    ["tests/test_report.py", "tests/test_report_mutants.py", "tests/test_backlog.py", "-m", "not slow"],
                    "the review report's cards, and what a run writes for the report (sidecars, thumbnails, "
                    "the backlog thread that writes them)"),
    "crossval": Target({"tagestimate/train/crossval.py": ["*"]}, ["tests/test_crossval.py", "tests/test_crossval_mutants.py", "-m", "not slow"],
                       "--folds: grouped stratified folds, cv_report.json, out-of-fold predictions and thresholds"),
    "losses": Target({"tagestimate/train/losses.py": ["*"]}, ["tests/test_losses.py"],
                     "--loss: binary cross-entropy, asymmetric and focal losses on sigmoid outputs"),
    # The next two have slow tests only: a model for Grad-CAM, a local Ray for the engine (minutes
    # per mutant; give --timeout 14400). The Ray actor's methods run in Ray's worker processes,
    # where mutmut cannot see which test reached them, so only the driver's functions are mutated.
    "explain": Target({"tagestimate/review/explain.py": ["*"]}, ["tests/test_explain.py"],
                      "--explain: Grad-CAM heat maps of the tags, their overlays (slow: builds models)"),
    "ray_engine": Target({"tagestimate/tag/ray_engine.py": [
        "x_pending_path", "x_merge_pending", "x_connect", "x__probe", "x_pool_size", "x_weight_files",
        "x__first_line", "x_run", "x__drop_pending", "x__remove_empty_pending"],
        "tagestimate/tag/raywatch.py": ["*"]}, ["tests/test_ray_engine.py", "tests/test_ray_lifecycle.py"],
        "--engine ray's driver: pending errors, Ray start and its errors, pool size (slow: starts Ray)"),
}

# Survivors judged equivalent: (module, mutant name, a fragment of the mutated code that must still
# be in the mutant's diff, reason). The fragment guards against mutmut renumbering the mutants
# after a code change: when it no longer matches, the survivor counts against the score again.
EQUIVALENT = [
    ("storage", "tagestimate.storage.x__check_credentials__mutmut_38", '"XXXX").lower() == "true"',
     "default of an unset AWS_EC2_METADATA_DISABLED: 'xxxx' and '' are both not 'true'"),
    ("storage", "tagestimate.storage.x__s3_filesystem__mutmut_9", '"XXXX").lower() == "true"',
     "default of an unset AWS_NO_SIGN_REQUEST: 'xxxx' and '' are both not 'true'"),
    ("storage", "tagestimate.storage.x__s3_filesystem__mutmut_68", "connect_timeout=CONNECT_TIMEOUT, signature_version=",
     "dropping read_timeout=60 leaves botocore's default read timeout, which is 60 s"),
    ("storage", "tagestimate.storage.x_join__mutmut_5", "store(None).join(folder, name)",
     "the local store's os.path.join is posixpath.join on POSIX, the same as ArrowStore.join"),
    ("storage", "tagestimate.storage.x_store__mutmut_23", 'split("/", )[0]', "only the first part is used: maxsplit changes nothing"),
    ("storage", "tagestimate.storage.x_store__mutmut_26", 'split("/", 2)[0]', "only the first part is used: maxsplit changes nothing"),
    ("storage", "tagestimate.storage.xǁArrowStoreǁfiles_in__mutmut_4", "recursive=None)[1]",
     "pyarrow's FileSelector takes recursive=None as False"),
    ("storage", "tagestimate.storage.xǁArrowStoreǁwrite_atomic__mutmut_4", 'encode("UTF-8")', "codec names ignore case"),
    ("storage", "tagestimate.storage.xǁLocalStoreǁoutput_problem__mutmut_13", "prefix=None",
     "the write probe is a TemporaryFile, nameless on Linux (O_TMPFILE): its name prefix is never seen"),
    ("storage", "tagestimate.storage.xǁLocalStoreǁoutput_problem__mutmut_15", "TemporaryFile(dir=folder, )",
     "the write probe is a TemporaryFile, nameless on Linux (O_TMPFILE): its name prefix is never seen"),
    ("storage", "tagestimate.storage.xǁLocalStoreǁoutput_problem__mutmut_16", "XX.write-test-XX",
     "the write probe is a TemporaryFile, nameless on Linux (O_TMPFILE): its name prefix is never seen"),
    ("storage", "tagestimate.storage.xǁLocalStoreǁoutput_problem__mutmut_17", ".WRITE-TEST-",
     "the write probe is a TemporaryFile, nameless on Linux (O_TMPFILE): its name prefix is never seen"),
    ("crossval", "tagestimate.train.crossval.x_format_summary__mutmut_85", "format(oof['macro_f1'], '.3F')",
     "'.3F' differs from '.3f' only for nan/inf; evaluate's macro_f1 is None or a finite F1"),
    ("crossval", "tagestimate.train.crossval.x_format_summary__mutmut_100", "format(tuned['macro_f1'], '.3F')",
     "'.3F' differs from '.3f' only for nan/inf; evaluate's macro_f1 is None or a finite F1"),
    ("crossval", "tagestimate.train.crossval.x_out_of_fold__mutmut_38", "rows.sort(key=None)",
     "paths are unique within a fold and folds are appended in order: whole tuples sort as the paths do"),
    ("crossval", "tagestimate.train.crossval.x_out_of_fold__mutmut_52", "reshape(len(paths), -2)",
     "numpy reads any negative dimension as the one to infer: reshape(n, -2) is reshape(n, -1)"),
    ("crossval", "tagestimate.train.crossval.x_out_of_fold__mutmut_60", "reshape(len(paths), -2)",
     "numpy reads any negative dimension as the one to infer: reshape(n, -2) is reshape(n, -1)"),
    ("cards", "tagestimate.review.cards.x_chip_html__mutmut_16", "' DATA-FLAT=\"1\"'",
     "HTML attribute names are case-insensitive: the parser makes DATA-FLAT data-flat"),
    ("cards", "tagestimate.review.cards.x_similar_links__mutmut_18", '"</A>"',
     "HTML tag names are case-insensitive: </A> ends the <a>"),
    ("cards", "tagestimate.review.cards.x_tag_card__mutmut_2", "'</FIGCAPTION></FIGURE>\\n'",
     "HTML tag names are case-insensitive"),
    ("cards", "tagestimate.review.recorder.x_write_run_info__mutmut_55", "ensure_ascii=None",
     "json.dumps tests ensure_ascii for truth: None is False"),
    ("cards", "tagestimate.review.backlog.xǁBacklogǁ_setup__mutmut_7", "self._behind = None",
     "_behind is only read by `not self._behind`: None is as false as False"),
    ("cards", "tagestimate.review.backlog.xǁBacklogǁdrain__mutmut_1", "self._behind = None",
     "_behind is only read by `not self._behind`: None is as false as False"),
    ("cards", "tagestimate.review.recorder.xǁReportRecorderǁon_image__mutmut_5", "max(pixels.shape[:3])",
     "the third dimension is the 3 colour channels: max(H, W, 3) < THUMB_SIZE exactly when max(H, W) < THUMB_SIZE"),
    ("report", "tagestimate.review.report.x__build_report__mutmut_154",
     "item_pages(output_dir, item, labels, None, thumbs, explorer.similar(name))", "item_pages takes run_info but never reads it"),
    ("report", "tagestimate.review.report.x__build_report__mutmut_90", "disable=not progress, file=None)",
     "tqdm's file=None is sys.stderr"),
    ("report", "tagestimate.review.report.x__build_report__mutmut_95", 'desc="report", disable=not progress, )',
     "tqdm's default file is sys.stderr"),
    ("report", "tagestimate.review.report.x_write_explanations__mutmut_33", "disable=not progress, file=None) as bar",
     "tqdm's file=None is sys.stderr"),
    ("report", "tagestimate.review.report.x_write_explanations__mutmut_38", 'desc="grad-cam", disable=not progress, ) as bar',
     "tqdm's default file is sys.stderr"),
    ("report", "tagestimate.review.report.x_agrees__mutmut_6", "(value >= threshold)",
     "at value == threshold, abs(value - threshold) <= 0.001 holds either way"),
    ("report", "tagestimate.review.report.x_build_report__mutmut_13", "if (lang) or True else None)",
     "without lang, names is None and tag_name shows the tag, as with NAMING None"),
    ("report", "tagestimate.review.report.x_build_report__mutmut_5", '.get("names") if (lang) or True else None',
     "names is used only when lang is given"),
    ("report", "tagestimate.review.report.x_list_item_files__mutmut_23", "rank <= found[stem][0]",
     "each format has one extension, so a stem has at most one file per format: equal ranks never meet"),
    ("report", "tagestimate.review.report.x_main__mutmut_26", 'parser.add_argument("--inputpath", help=',
     "argparse's default is None"),
    ("report", "tagestimate.review.report.x_main__mutmut_37", 'parser.add_argument("--data", help=',
     "argparse's default is None"),
    ("report", "tagestimate.review.report.x_main__mutmut_63", 'parser.add_argument("--lang", choices=LANGUAGES, help=',
     "argparse's default is None"),
    ("report", "tagestimate.review.report.x_main__mutmut_87", "logging.INFO, format=None)",
     "basicConfig(format=None) makes Formatter(None), whose format is '%(message)s'"),
    ("report", "tagestimate.review.report.x_read_errors__mutmut_10", 'encoding="UTF-8"', "codec names ignore case"),
    ("report", "tagestimate.review.report.x_read_run_info__mutmut_12", 'encoding="UTF-8"', "codec names ignore case"),
    ("report", "tagestimate.review.report.x_read_sidecar__mutmut_10", 'encoding="UTF-8"', "codec names ignore case"),
    ("report", "tagestimate.review.report.x_read_tags__mutmut_8", 'encoding="UTF-8"', "codec names ignore case"),
    ("report", "tagestimate.review.report.x_write_run_info__mutmut_55", "ensure_ascii=None, indent=1",
     "ensure_ascii=None is falsy, the same as False"),
    ("annotations", "tagestimate.annotations.x__crop_id__mutmut_12", "safe='XXXX'",
     "letters are always safe in quote(): same as safe=''"),
    ("annotations", "tagestimate.annotations.x_annotation_id__mutmut_5", "quote(key, safe='XXXX')",
     "letters are always safe in quote(): same as safe=''"),
    ("annotations", "tagestimate.annotations.x_annotation_id__mutmut_10", "quote(tag, safe='XXXX')",
     "letters are always safe in quote(): same as safe=''"),
    ("annotations", "tagestimate.annotations.x_page_id__mutmut_6", "safe='XXXX'",
     "letters are always safe in quote(): same as safe=''"),
    ("annotations", "tagestimate.annotations.x_companions__mutmut_8", "safe='XXXX'",
     "letters are always safe in quote(): same as safe=''"),
    ("annotations", "tagestimate.annotations.x_companions__mutmut_11", "companion_files(item_name, text, None, copy_id)",
     "viewer.companion_files never reads its context argument"),
    ("annotations", "tagestimate.annotations.x__target__mutmut_10", "if (row) or True else None",
     "box_of(None) hits TypeError, which it catches, and returns None"),
    ("annotations", "tagestimate.annotations.x__with_confidence__mutmut_16", "if (isinstance(body, list)) or True",
     "render_page always builds a list body, one TextualBody per language"),
    ("annotations", "tagestimate.annotations.x_render_page__mutmut_203", "ensure_ascii=None",
     "json treats ensure_ascii=None like False"),
    ("annotations", "tagestimate.annotations.x_write_context__mutmut_18", 'encode("UTF-8")', "codec names ignore case"),
    ("iiif", "tagestimate.iiif.x__manifest_v3__mutmut_46", 'bodies, None, ("Image",))',
     "type_key 'type' is looked up again right after it; JSON objects have no None key"),
    ("iiif", "tagestimate.iiif.x__size__mutmut_7", "0 <= value < 10 ** 7", "value 0 is returned as 0 either way"),
    ("iiif", "tagestimate.iiif.x__upgrade_image__mutmut_41", 'else "XXXX"',
     "neither '' nor 'XXXX' matches level[012]: level0 either way"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_26", 'or "XXXX"',
     "the default kind is only compared with ImageService1/2/3; '' and 'XXXX' match none"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_30", 'service.get("@context", None)',
     "a missing @context dumps to 'null' instead of '\"\"': neither contains /image/"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_32", 'service.get("@context", ))',
     "a missing @context dumps to 'null' instead of '\"\"': neither contains /image/"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_35", 'service.get("@context", "XXXX")',
     "the default context string contains no /image/ either way"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_39", 'service.get("profile", None)',
     "a missing profile dumps to 'null': contains none of the tested substrings"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_41", 'service.get("profile", ))',
     "a missing profile dumps to 'null': contains none of the tested substrings"),
    ("iiif", "tagestimate.iiif.x_image_service__mutmut_44", 'service.get("profile", "XXXX")',
     "the default profile string contains none of the tested substrings"),
    ("iiif", "tagestimate.iiif.x_short_hash__mutmut_4", 'encode("UTF-8")', "codec names are case-insensitive"),
    ("iiif", "tagestimate.iiif.x_slug__mutmut_26", r"\.JSON(LD)?$", "the pattern is matched with re.IGNORECASE"),
    ("iiif", "tagestimate.iiif.x__first__mutmut_2", "if body.get(key)), None)",
     "_first's result is only used for truthiness (width or ..., if width and height): None and 0 act alike"),
    ("losses", "tagestimate.train.losses.xǁAsymmetricLossǁcall__mutmut_9", "if (self.clip > 0) or True else p",
     "with clip 0, maximum(p - 0, 0) is p: every p is clipped to at least EPSILON first"),
    ("losses", "tagestimate.train.losses.xǁAsymmetricLossǁcall__mutmut_16", "if self.clip >= 0 else p",
     "with clip 0, maximum(p - 0, 0) is p: every p is clipped to at least EPSILON first"),
    ("losses", "tagestimate.train.losses.xǁAsymmetricLossǁcall__mutmut_50", "axis=+1)",
     "the outputs are (images, labels): axis 1 is the last axis"),
    ("losses", "tagestimate.train.losses.xǁFocalLossǁcall__mutmut_28", "axis=+1)",
     "the outputs are (images, labels): axis 1 is the last axis"),
    ("results", "tagestimate.formats.x_item_json__mutmut_5", "ensure_ascii=None)}: {json",
     "ensure_ascii=None is falsy, the same as False"),
    ("results", "tagestimate.formats.x_item_json__mutmut_10", "ensure_ascii=None)}\"",
     "ensure_ascii=None is falsy, the same as False"),
    ("files", "tagestimate.files.x_write_json__mutmut_9", "ensure_ascii=None", "None is falsy, the same as False"),
    ("files", "tagestimate.files.x_printable_path__mutmut_7", '"UTF-8"', "codec names ignore case"),
    ("files", "tagestimate.files.x_write_atomic__mutmut_5", '"UTF-8"', "codec names ignore case"),
    ("files", "tagestimate.files.x_write_atomic__mutmut_30", 'temporary = ""',
     "os.path.exists('') is False, so the clean-up is skipped exactly as for None"),
    ("files", "tagestimate.files.x_is_web_url__mutmut_4", "text[:9]",
     "startswith looks at the first 8 characters only: a longer slice changes nothing"),
    ("labels", "tagestimate.labels.x_load_labelmap__mutmut_7", '"UTF-8"', "codec names ignore case"),
    ("labels", "tagestimate.commands.labels.x_build_parser__mutmut_16", 'parser.add_argument("--labelmap", metavar="JSON", help=',
     "default=None dropped: None is argparse's default"),
    ("labels", "tagestimate.commands.labels.x_build_parser__mutmut_30", 'parser.add_argument("--check", metavar="DIR", help=',
     "default=None dropped: None is argparse's default"),
    ("labels", "tagestimate.commands.labels.x_build_parser__mutmut_7", "+        )",
     "formatter_class dropped: both flags default to None, which HelpFormatter leaves out like argparse's own"),
    ("split_metrics", "tagestimate.train.dataset.x_read_split__mutmut_103", "stored.get(r, None)",
     "None becomes False in a dtype=bool array"),
    ("split_metrics", "tagestimate.train.dataset.x_read_split__mutmut_105", "stored.get(r, )",
     "None becomes False in a dtype=bool array"),
    ("split_metrics", "tagestimate.train.dataset.x_read_folds__mutmut_29", "dtype=None)",
     "numpy makes a list of bools a bool array (list_samples never returns no samples)"),
    ("split_metrics", "tagestimate.train.dataset.x_read_folds__mutmut_31", "for r in relative], )",
     "numpy makes a list of bools a bool array (list_samples never returns no samples)"),
    ("split_metrics", "tagestimate.train.dataset.x_read_folds__mutmut_66", "dtype=None)",
     "numpy makes a list of ints an int array (list_samples never returns no samples)"),
    ("split_metrics", "tagestimate.train.dataset.x_read_folds__mutmut_68", "for r in relative], )",
     "numpy makes a list of ints an int array (list_samples never returns no samples)"),
    ("split_metrics", "tagestimate.train.dataset.x_assign_folds__mutmut_40", 'simplefilter("ignore", None)',
     "an ignore filter of no category ignores scikit-learn's UserWarning too: the run's warnings are the same"),
    ("split_metrics", "tagestimate.train.dataset.x_assign_folds__mutmut_42", 'simplefilter("ignore", )',
     "an ignore filter of every category ignores scikit-learn's UserWarning too: the run's warnings are the same"),
    ("split_metrics", "tagestimate.train.dataset.x_split_samples__mutmut_135", 'plural(None, "image")',
     "the warning needs two item ids, so two images: plural(None) and plural(2 or more) both say images"),
    ("split_metrics", "tagestimate.train.dataset.x_split_samples__mutmut_141", 'plural(None, "id")',
     "the warning needs two item ids: plural(None) and plural(2 or more) both say ids"),
    ("split_metrics", "tagestimate.train.dataset.x_split_samples__mutmut_74", 'simplefilter("ignore", )',
     "an ignore filter of every category ignores scikit-learn's UserWarning too: the run's warnings are the same"),
    ("split_metrics", "tagestimate.train.dataset.x_item_id__mutmut_14", 'stem.split("_", )[0]',
     "only the part before the first '_' is used, however many splits"),
    ("split_metrics", "tagestimate.train.dataset.x_item_id__mutmut_17", 'stem.split("_", 2)[0]',
     "only the part before the first '_' is used, however many splits"),
    ("split_metrics", "tagestimate.train.dataset.x_split_samples__mutmut_66", 'simplefilter("ignore", )',
     'the filter covers only the splitter call, which warns with UserWarning alone'),
    ("split_metrics", "tagestimate.train.dataset.x_write_predictions__mutmut_2", 'io.StringIO(newline=None)',
     "newline=None turns written newlines into os.linesep, a newline again on POSIX"),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_7", '.astype(None)',
     '0./1. floats instead of 0/1 ints: scikit-learn scores them the same'),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_12", '.astype(None)',
     '0./1. floats instead of 0/1 ints: scikit-learn scores them the same'),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_26", 'labels=None',
     'a label-indicator matrix already scores every column, in order'),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_30", 'truth, predicted, average=None',
     'a label-indicator matrix already scores every column, in order'),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_31", 'truth, predicted, labels=columns, zero_division=0)',
     "average=None is scikit-learn's default"),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_54", 'average="macro", zero_division=1',
     'macro-F1 is over labels with examples only, so F1 is never 0/0'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_3", '.astype(None)',
     '0./1. floats instead of 0/1 ints: scikit-learn scores them the same'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_21", '.astype(None)',
     'booleans instead of 0/1 ints: scikit-learn scores them the same'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_35", '.astype(None)',
     'booleans instead of 0/1 ints: scikit-learn scores them the same'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_37", 'zero_division=1) if support',
     'only computed with support > 0, so F1 is never 0/0'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_55", 'scores > best - 1e-12',
     'no score lies exactly 1e-12 below the best: the same candidates'),
    ("split_metrics", "tagestimate.train.dataset.x_find_unreadable__mutmut_1", 'workers=9',
     'the number of checking threads, not what they find'),
    ("split_metrics", "tagestimate.train.dataset.x_find_unreadable__mutmut_2", 'ThreadPoolExecutor(None)',
     'the number of checking threads, not what they find'),
    ("split_metrics", "tagestimate.train.dataset.x__quick_check__mutmut_13", "open_image(handle, None)",
     "the name only labels Pillow's UnidentifiedImageError, which _quick_check replaces with its own sentence"),
    ("split_metrics", "tagestimate.train.dataset.x_read_split__mutmut_9", '"UTF-8"', 'codec names ignore case'),
    ("split_metrics", "tagestimate.train.dataset.x_read_split__mutmut_64", 'stored.get(r, None)',
     'None becomes False in a dtype=bool array'),
    ("split_metrics", "tagestimate.train.dataset.x_read_split__mutmut_66", 'stored.get(r, )',
     'None becomes False in a dtype=bool array'),
    ("resume", "tagestimate.train.state.x_trim_history__mutmut_4", 'newline=None, encoding="utf-8"',
     "history.csv has no quoted line breaks, so universal newlines read the same rows"),
    ("resume", "tagestimate.train.state.x_trim_history__mutmut_7", 'with open(path, encoding="utf-8")',
     "history.csv has no quoted line breaks, so universal newlines read the same rows"),
    ("resume", "tagestimate.train.state.x_trim_history__mutmut_11", '"UTF-8"', "codec names ignore case"),
    ("resume", "tagestimate.train.dataset.x_read_split__mutmut_9", '"UTF-8"',
     'codec names ignore case'),
    ("resume", "tagestimate.train.dataset.x_read_split__mutmut_64", 'stored.get(r, None)',
     'None becomes False in a dtype=bool array'),
    ("resume", "tagestimate.train.dataset.x_read_split__mutmut_66", 'stored.get(r, )',
     'None becomes False in a dtype=bool array'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ__init____mutmut_20", 'self._writer = ""',
     '_writer is always set by append before it is used'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_remove_temp_files__mutmut_9", 'follow_symlinks=None',
     'None is falsy, the same as False'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_subfolders__mutmut_21", 'follow_symlinks=None',
     'None is falsy, the same as False'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_scan_files__mutmut_18", 'follow_symlinks=None',
     'None is falsy, the same as False'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_read_rows__mutmut_13", 'raw.decode(errors="replace")',
     'bytes.decode defaults to UTF-8'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_read_rows__mutmut_16", '"UTF-8"',
     'codec names ignore case'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_read_rows__mutmut_27", 'io.StringIO(text, )',
     "StringIO's default newline='\\n' does not translate what is read either"),
    ("manifest", "tagestimate.manifest.xǁManifestǁappend__mutmut_18", 'newline=None, encoding="utf-8"',
     'writing with newline=None turns newlines into os.linesep, a newline again on POSIX'),
    ("manifest", "tagestimate.manifest.xǁManifestǁappend__mutmut_22", 'open(self.path, "a", encoding="utf-8")',
     'writing with newline=None turns newlines into os.linesep, a newline again on POSIX'),
    ("manifest", "tagestimate.manifest.xǁManifestǁappend__mutmut_28", '"UTF-8"',
     'codec names ignore case'),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_adopt__mutmut_1", "rejected=True, moved=None",
     "its one caller always passes rejected"),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_adopt__mutmut_9", "if rejected or moved is not None:",
     "open only records a moved row for a (folder, id) whose file is missing from its folder, so a file "
     "found in its folder never has one"),
    ("manifest", "tagestimate.manifest.xǁManifestǁappend__mutmut_10", "if self._pending is None or os.path.exists",
     "_pending, when set, holds the rows open noted, in order: list(self.rows) is the same list"),
    ("manifest", "tagestimate.manifest.xǁManifestǁappend__mutmut_37", 'extrasaction="IGNORE"',
     "DictWriter accepts the value in any case and raises only for 'raise'"),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_rewrite__mutmut_9", "row.get(field, None)",
     "csv writes None as an empty field"),
    ("manifest", "tagestimate.manifest.xǁManifestǁ_rewrite__mutmut_11", "row.get(field, )",
     "csv writes None as an empty field"),
    ("images", "tagestimate.images.x__to_rgb__mutmut_19", 'np.asarray(image, dtype=None)',
     'the integer array is promoted to float by the scaling anyway'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_21", 'np.asarray(image, )',
     'the integer array is promoted to float by the scaling anyway'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_30", 'values.max(initial=None)',
     'initial only matters for an image of no pixels, which Pillow cannot open'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_31", 'values.max(initial=1)',
     'a maximum of 1 instead of below 1 still selects the 255 scale'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_44", 'values.max(initial=None)',
     'initial only matters for an image of no pixels, which Pillow cannot open'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_45", 'values.max(initial=1)',
     'max(..., 1.0) right after raises it to 1 anyway'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_48", '.astype(None)',
     "a float image is truncated to 8 bits by Pillow's F->RGB exactly as astype(uint8) does"),
    ("images", "tagestimate.images.x__to_rgb__mutmut_74", '"XXLaXX"',
     'Pillow opens no file in mode La (and cannot convert La to RGBA)'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_75", '"la"',
     'Pillow opens no file in mode La (and cannot convert La to RGBA)'),
    ("images", "tagestimate.images.x__to_rgb__mutmut_76", '"PA", "LA", "RGBa"',
     'Pillow opens no file in mode La (and cannot convert La to RGBA)'),
    ("images", "tagestimate.images.x_is_utf8_name__mutmut_3", '"UTF-8"',
     'codec names ignore case'),
    ("images", "tagestimate.images.x_decode_image__mutmut_29", '_open(handle, None)',
     'the name only becomes image.filename, which nothing reads'),
    ("images", "tagestimate.images.x_decode_image__mutmut_55", 'image.draft(None,',
     "draft's mode only changes an RGB JPEG when L or YCbCr is asked for"),
    ("images", "tagestimate.images.x_decode_image__mutmut_59", 'image.draft("XXRGBXX",',
     "draft's mode only changes an RGB JPEG when L or YCbCr is asked for"),
    ("images", "tagestimate.images.x_decode_image__mutmut_60", 'image.draft("rgb",',
     "draft's mode only changes an RGB JPEG when L or YCbCr is asked for"),
    ("images", "tagestimate.images.x_decode_image__mutmut_78", 'np.asarray(image, dtype=None)',
     "an RGB image's array is uint8 already"),
    ("images", "tagestimate.images.x_decode_image__mutmut_80", 'np.asarray(image, )',
     "an RGB image's array is uint8 already"),
    ("images", "tagestimate.images.x_resize_bilinear__mutmut_1", 'pixels.shape[:3] == (size, size)',
     'the shortcut is lost, but cv2.resize to the same size returns the same pixels'),
    ("images", "tagestimate.images.x_resize_bilinear__mutmut_5", 'interpolation=None',
     "INTER_LINEAR is cv2.resize's default"),
    ("images", "tagestimate.images.x_resize_bilinear__mutmut_8", 'cv2.resize(pixels, (size, size), )',
     "INTER_LINEAR is cv2.resize's default"),
    ("images", "tagestimate.images.x__open__mutmut_2", 'handle.read(None)',
     'accept() looks at the first bytes only; a longer prefix changes no answer'),
    ("images", "tagestimate.images.x__open__mutmut_3", 'handle.read(17)',
     'accept() looks at the first 16 bytes at most'),
    ("images", "tagestimate.images.x__open__mutmut_17", 'factory(handle, None)',
     'the name only becomes image.filename, which nothing reads'),
    ("images", "tagestimate.images.x__open__mutmut_19", 'factory(handle, )',
     'the name only becomes image.filename, which nothing reads'),
    ("images", "tagestimate.images.x__open__mutmut_21", 'UnidentifiedImageError(None)',
     "load_image replaces this exception's text with its own sentence"),
    ("images", "tagestimate.images.x__decode_reduced__mutmut_16", 'simplefilter("ignore", )',
     'the filter covers only image.load(), which warns with DecompressionBombWarning alone'),
    ("split_metrics", "tagestimate.train.metrics.x_evaluate__mutmut_51", 'average="macro", ))',
     'macro-F1 is over labels with examples only, so F1 is never 0/0 and the default never warns'),
    ("split_metrics", "tagestimate.train.metrics.x_tune_thresholds__mutmut_34", ') if support else None',
     'only computed with support > 0, so F1 is never 0/0 and the default never warns'),
]


def module_prefix(source):
    return os.path.splitext(source)[0].replace("/", ".") + "."


def patterns(target):
    return [module_prefix(source) + f + "__mutmut_*" for source, functions in target.sources.items()
            for f in functions]


def copy_tree(destination):
    def ignore(folder, names):
        top = os.path.abspath(folder) == ROOT
        return [n for n in names if n in {"mutants", "__pycache__", ".pytest_cache", ".git", ".venv"}
                or (top and n in IGNORED) or n == "setup.cfg"]

    if os.path.exists(destination):
        shutil.rmtree(destination)
    shutil.copytree(ROOT, destination, ignore=ignore, symlinks=True)
    # tests/conftest.py finds the shared test data beside the checkout (../shared/data); the
    # mutated copy runs from destination/mutants, so give it the same neighbour.
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):
        os.symlink(shared, os.path.join(destination, "shared"))


def write_config(destination, target):
    tests = [t for t in target.tests if not t.endswith(".py") or os.path.exists(os.path.join(ROOT, t))]
    top_level = sorted(n for n in os.listdir(ROOT) if n.endswith(".py"))
    lines = [
        "[mutmut]",
        "source_paths =\n    tagestimate/\n    labelmap.py",
        "only_mutate =\n" + "\n".join(f"    {source}" for source in target.sources),
        "also_copy =\n" + "\n".join(f"    {n}" for n in top_level + ["pytest.ini", "docs"]),  # docs: read by some tests
        "pytest_add_cli_args_test_selection =\n" + "\n".join(f"    {t}" for t in tests),
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q",
        "timeout_multiplier = 5.0",
        "timeout_constant = 2.0",
        "use_git_change_detection = false",
    ]
    with open(os.path.join(destination, "setup.cfg"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return tests


def collect(destination, target):
    """{mutant name: status} for this target's functions, from mutmut's .meta file."""
    from mutmut.stats import status_by_exit_code

    wanted = patterns(target)
    statuses = {}
    for source in target.sources:
        with open(os.path.join(destination, "mutants", source + ".meta"), encoding="utf-8") as handle:
            meta = json.load(handle)
        statuses.update({name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()
                         if any(fnmatch.fnmatchcase(name, p) for p in wanted)})
    return statuses


def mutant_diff(destination, name, mutmut):
    result = subprocess.run([mutmut, "show", name], cwd=destination, capture_output=True, text=True)
    return result.stdout


def run_module(name, target, args, mutmut):
    destination = os.path.join(args.workdir, name)
    copy_tree(destination)
    tests = write_config(destination, target)
    started = time.monotonic()
    command = [mutmut, "run", "--max-children", str(args.jobs), *patterns(target)]
    shown = "; ".join(f"{source} ({', '.join(functions)})" for source, functions in target.sources.items())
    print(f"== {name}: mutating {shown} with {' '.join(tests)}",
          flush=True)
    try:
        completed = subprocess.run(command, cwd=destination, capture_output=True, text=True,
                                   timeout=args.timeout)
        log = completed.stdout + completed.stderr
    except subprocess.TimeoutExpired as error:
        log = f"timed out after {args.timeout} s\n{error.stdout or ''}"
    with open(os.path.join(destination, "mutmut.log"), "w", encoding="utf-8") as handle:
        handle.write(log if isinstance(log, str) else log.decode())
    try:
        statuses = collect(destination, target)
    except FileNotFoundError:
        print(f"   mutmut produced no results; see {destination}/mutmut.log", flush=True)
        return None
    if not statuses or all(s == "not checked" for s in statuses.values()):
        print(f"   mutmut tested nothing (do the module's tests pass?); see {destination}/mutmut.log", flush=True)
        return None
    killed = [m for m, s in statuses.items() if s in ("killed", "timeout", "caught by type check")]
    other = sorted(m for m, s in statuses.items() if m not in killed)
    equivalent, survivors = [], []
    for mutant in other:
        known = [e for e in EQUIVALENT if e[0] == name and e[1] == mutant]
        diff = mutant_diff(destination, mutant, mutmut) if (known or args.show) else ""
        added = "\n".join(line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
        if known and statuses[mutant] == "survived" and known[0][2] in added:
            equivalent.append((mutant, known[0][3]))
        else:
            survivors.append((mutant, statuses[mutant], diff))
    scored = len(statuses) - len(equivalent)
    score = 100.0 * len(killed) / scored if scored else 100.0
    print(f"   {len(statuses)} mutants: {len(killed)} killed, {len(survivors)} survived, "
          f"{len(equivalent)} equivalent; score {score:.1f} % of non-equivalent "
          f"({time.monotonic() - started:.0f} s)", flush=True)
    for mutant, status, diff in survivors:
        print(f"   {status}: {mutant}")
        if args.show and diff:
            print("      " + diff.strip().replace("\n", "\n      "))
    if args.show:
        for mutant, reason in equivalent:
            print(f"   equivalent: {mutant}: {reason}")
    return dict(module=name, total=len(statuses), killed=len(killed), survived=len(survivors),
                equivalent=len(equivalent), score=round(score, 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--workdir", default="/tmp/tagestimate-mutation",
                        help="where the private copies are made (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds allowed per module (default: %(default)s)")
    parser.add_argument("--show", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, target in MODULES.items():
            print(f"{name:14} {target.about}")
            for source, functions in target.sources.items():
                print(f"{'':14} {source}: {', '.join(functions)}")
            print(f"{'':14} tests {' '.join(target.tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    mutmut = shutil.which("mutmut") or os.path.join(os.path.dirname(sys.executable), "mutmut")
    if not os.path.exists(mutmut):
        sys.exit('error: mutmut is not installed; run pip install "mutmut>=3.8,<4" in this environment')
    rows = [run_module(name, MODULES[name], args, mutmut) for name in (args.modules or MODULES)]
    print(f"\n{'module':14} {'total':>6} {'killed':>6} {'survived':>8} {'equiv':>6} {'score':>7}")
    for row in rows:
        if row:
            print(f"{row['module']:14} {row['total']:>6} {row['killed']:>6} {row['survived']:>8} "
                  f"{row['equivalent']:>6} {row['score']:>6.1f}%")
    return 0 if all(row and row["score"] >= TARGET_SCORE for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
