"""A tagging run's bookkeeping, the same for both engines: opening (plan, errors.json, summary),
items as they finish, and closing (timing, and a check that every planned item came back).

    run = Run(items, settings, problems)   # plans, prints the listing problems, saves errors.json
    run.item_done(name, errors, written)    # errors.json takes the item's errors
    run.adopt_outputs(late_errors)          # after Ctrl-C: outputs written but never reported, counted
    run.close()                             # UserError naming any planned item that never came back

An item none of whose images could be read is not done: it gets no output (the engines never
write one), its errors go to errors.json, and the next run tags it again.

The item hook (`on_item`) an engine is given is called as on_item(output_dir, item_name,
records, config) for every item about to be written, before its output file (which marks the
item done), in the process that tagged it (on Ray, a worker: the hook must pickle). records are
formats.Record with every label's probability; config is the bundle's output_config. The
review report's recorder comes in this way, so tag/ never imports review/.
"""

import json
import sys
import time

from tagestimate import storage
from tagestimate.errors import UserError
from tagestimate.files import printable_path
from tagestimate.formats import natural_key
from tagestimate.tag.inference import ERRORS_NAME, output_path, plan_run

MISSING_SHOWN = 10  # item names a "never came back" error lists
CLOCK_SLACK_NS = 2_000_000_000  # file times lag the clock (coarse timestamps; S3 keeps whole seconds)


class Run:
    """One run's plan, errors.json (`error_log`) and summary; engines report items to it as they finish."""

    def __init__(self, items, settings, problems=(), merge=None, force_save=False):
        """Plan the run and record the problems of items left out whole; `merge(error_log)` first takes
        errors an earlier run left elsewhere (Ray's pending files)."""
        from tqdm import tqdm

        storage.makedirs(settings.output_dir)
        self.plan = plan_run(items, settings.output_dir, settings.output_format, settings.overwrite, problems)
        for _, path, reason in self.plan.problems:
            tqdm.write(f"skipped {printable_path(path)}: {reason}", file=sys.stderr)
        self.pending = self.plan.problems_by_item()  # listing problems of items still to tag
        left_out = self.plan.left_out()  # items not tagged at all (bad folder names): done now
        self.error_log = ErrorLog(settings.output_dir)
        self.merged = merge(self.error_log) if merge else []
        self.error_log.finish({error[0] for error in left_out}, left_out)
        self.error_log.save(force_save)
        self.summary = {"images": 0, "items": len(self.plan.todo), "finished_items": 0,
                        "skipped_images": len(self.plan.problems), "skipped_items": len(self.plan.done),
                        "attempted": sum(len(item.images) for item in self.plan.todo), "seconds": 0.0,
                        "images_per_second": 0.0, "interrupted": False, "unreadable_items": 0}
        self.done = set()  # items whose errors are recorded: written, or none of their images readable
        self.written = set()  # items whose output an engine reported written (by name, where it gives one)
        self.opened_ns = time.time_ns()  # wall clock: outputs newer than this are this run's
        self.overwrite = settings.overwrite
        self.output_dir, self.output_format = settings.output_dir, settings.output_format
        self.started = time.perf_counter()

    def start(self):
        """The clock of images/s starts here (after planning)."""
        self.started = time.perf_counter()

    def item_done(self, name, errors, written):
        """The item's errors (its listing problems and `errors`) go to errors.json (saved by the next
        error_log.save); `written`: whether it gets an output (False: no image of it was readable)."""
        self.error_log.finish({name}, self.pending.pop(name, []) + list(errors))
        self.done.add(name)
        if not written:
            self.summary["unreadable_items"] += 1

    def item_written(self, name=None):
        self.summary["finished_items"] += 1
        if name is not None:
            self.written.add(name)

    def adopt_outputs(self, late_errors):
        """Count the items whose output this run wrote though no engine reported it (a Ray worker writes its
        output, then the driver is stopped before the row comes back), so the summary counts what is on
        disk. late_errors(name): the item's tagging errors, recorded as for a reported item. Returns the
        names adopted. One listing of the output folder; with --overwrite also each candidate's time."""
        present = set(storage.files_in(self.output_dir))
        adopted = []
        for item in self.plan.todo:
            path = output_path(self.output_dir, item.name, self.output_format)
            if item.name in self.written or path not in present or not self._written_now(path):
                continue
            if item.name not in self.done:
                errors = list(late_errors(item.name))
                self.item_done(item.name, errors, written=True)
                self.summary["images"] += len(item.images) - len(errors)
                self.summary["skipped_images"] += len(errors)
            self.item_written(item.name)
            adopted.append(item.name)
        return adopted

    def _written_now(self, path):
        """Whether the output at `path` is this run's: without --overwrite every output of an item to tag is."""
        if not self.overwrite:
            return True
        version = storage.version(path)
        return version is not None and version[0] >= self.opened_ns - CLOCK_SLACK_NS

    def close(self):
        """Timing; then, unless interrupted, UserError when a planned item never came back."""
        summary = self.summary
        summary["seconds"] = time.perf_counter() - self.started
        if summary["seconds"] > 0:
            summary["images_per_second"] = summary["images"] / summary["seconds"]
        missing = [item.name for item in self.plan.todo if item.name not in self.done]
        if missing and not summary["interrupted"]:
            shown = ", ".join(printable_path(name) for name in missing[:MISSING_SHOWN])
            more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
            raise UserError(f"{len(missing)} of {len(self.plan.todo)} items never came back from the engine "
                            f"({shown}{more}); run the same command again to finish them")
        return summary


class ErrorLog:
    """errors.json, rewritten atomically as items finish.

    Entries of items this run has not (yet) finished are kept from the existing file, so
    after Ctrl-C it holds the errors of every finished item, and of earlier runs' items.
    Rewrites are spaced so that they take at most about 5% of the run: a run with errors
    in thousands of items does not rewrite a growing file after every one.
    """

    SHARE = 20  # wait at least 20 times the last rewrite's duration before the next one

    def __init__(self, output_dir):
        self.path = storage.join(output_dir, ERRORS_NAME)
        self.old = []
        if storage.exists(self.path):
            try:
                self.old = [entry for entry in json.loads(storage.read_bytes(self.path).decode("utf-8"))
                            if isinstance(entry, dict)]
            except (OSError, ValueError, TypeError):
                self.old = []
        self.new = []
        self.replaced = set()
        self.unsaved = False
        self.next_write = 0.0

    def finish(self, item_names, errors):
        """The items' entries become `errors` (saved by the next `save`)."""
        if errors or any(entry.get("item") in item_names - self.replaced for entry in self.old):
            self.unsaved = True
        self.replaced |= set(item_names)
        self.new += errors

    def save(self, force=False):
        """Rewrite the file if something is unsaved and a rewrite is due, or if forced.

        Returns True when the file holds everything recorded so far.
        """
        if force or (self.unsaved and time.monotonic() >= self.next_write):
            started = time.monotonic()
            self.write()
            self.unsaved = False
            self.next_write = time.monotonic() + self.SHARE * (time.monotonic() - started)
        return not self.unsaved

    def write(self):
        entries = [entry for entry in self.old if entry.get("item") not in self.replaced]
        entries += [{"item": printable_path(item), "path": printable_path(path), "reason": printable_path(reason)}
                    for item, path, reason in self.new]
        if not entries:
            storage.remove(self.path)
            return
        entries.sort(key=lambda e: (natural_key(str(e.get("item"))), natural_key(str(e.get("path")))))
        storage.write_atomic(self.path, json.dumps(entries, ensure_ascii=False, indent=1) + "\n")
