"""The local engine: one model call serves images of several items, in this process.

An item's output is written once errors.json holds its errors (a rerun skips items with an
output); the run's opening and closing are tag/run.py's, as on Ray.
"""

import collections
import sys

from tagestimate.tag.inference import image_hook, tag_images, write_item
from tagestimate.tag.run import Run
from tagestimate.tag.settings import InferenceSettings


class Tagger:
    """A runner and the config the outputs are thresholded with (a bundle's output_config); tags
    items as `settings` say. on_item: the item hook (tag/run.py), called before each output; its
    on_image method, if any, with each image as decoded (inference.image_hook: the report's thumbnails).
    vectors: the run's vectors.VectorPlan (the command's), or None for no embeddings and no extra tags."""

    def __init__(self, runner, config, settings=InferenceSettings(), context=None, on_item=None, vectors=None):
        self.runner = runner
        self.vectors = vectors  # vectors.VectorPlan: {item}.emb.npz and extra tags; None: neither
        self.config = config
        self.settings = settings
        self.context = context  # formats.RunContext for the formats that need one
        self.on_item = on_item

    def run(self, items, problems=()):
        """Tag items; returns a summary dict. Items already in the output folder are skipped unless
        settings.overwrite.

        Ctrl-C stops the run between two images: what is finished stays written (errors.json
        included) and the summary says "interrupted"; a rerun tags the rest.
        """
        from tqdm import tqdm

        settings = self.settings
        run = Run(items, settings, problems)
        summary = run.summary
        if not run.plan.todo:
            return summary
        entries = run.plan.entries()
        remaining = collections.Counter(name for name, _, _ in entries)
        records, errors = collections.defaultdict(list), collections.defaultdict(list)
        run.start()
        bar = tqdm(total=len(entries), unit="img", disable=not settings.progress, file=sys.stderr, dynamic_ncols=True)
        stream = tag_images(entries, self.runner, self.config, settings.batch_size, settings.decoders, settings.draft,
                            image_hook(self.on_item, settings.output_dir), self.vectors)
        waiting = collections.deque()  # finished items, (name, records), whose output is not written yet
        try:
            for batch, batch_records, batch_errors in stream:
                for error in batch_errors:
                    errors[error[0]].append(error)
                    summary["skipped_images"] += 1
                    tqdm.write(f"skipped {error[1]}: {error[2]}", file=sys.stderr)
                for name, record in batch_records:
                    records[name].append(record)
                summary["images"] += len(batch_records)
                for name, _, _, _ in batch:
                    remaining[name] -= 1
                    if remaining[name] == 0:
                        item_records = records.pop(name, [])
                        run.item_done(name, errors.pop(name, []), written=bool(item_records))
                        if item_records:  # an item of unreadable files only gets no output: it is not done
                            waiting.append((name, item_records))
                self._write_finished(run, waiting)
                bar.update(len(batch))
            # Forced: also replaces an unreadable errors.json left by an older run.
            self._write_finished(run, waiting, force=True)
        except KeyboardInterrupt:
            summary["interrupted"] = True
            self._write_finished(run, waiting, force=True)
        finally:
            stream.close()
            bar.close()
        return run.close()

    def _write_finished(self, run, waiting, force=False):
        """Write the outputs of finished items once errors.json holds their errors.

        errors.json first: an item with an output file is skipped by the next run, so its
        errors must be saved by then; an item stopped before its output is tagged again.
        """
        if not run.error_log.save(force):
            return
        settings = self.settings
        while waiting:
            name, item_records = waiting[0]
            if self.on_item is not None:  # before the output, which marks the item done
                self.on_item(settings.output_dir, name, item_records, self.config)
            write_item(settings.output_dir, name, item_records, self.config, settings.output_format,
                       context=self.context, vectors=self.vectors)
            waiting.popleft()
            run.item_written()
