"""What a tagging run does with each image's embedding (the model's vector from the same forward pass):
write it per item as `{item}.emb.npz` (embeddings.py) and score the `--extra-tags` on it.

    vectors = VectorPlan.for_run(settings, bundle)   # in the command: extra-tag files loaded and checked
    tag_images(..., vectors=vectors)                  # runner.infer: records carry their raw vector
    write_item(..., vectors=vectors)                  # the .emb.npz first, then the output with extra tags

Both engines call the same two functions, so their files are the same bytes. An extra tag is
scored on the vectors exactly as the .emb.npz stores them (L2-normalised, float16).
"""

import dataclasses

from tagestimate import embeddings, extratags, storage
from tagestimate.records import ExtraScore


@dataclasses.dataclass(frozen=True)
class VectorPlan:
    """The run's embedding layer and weights (the .emb.npz's meta), whether it writes the files
    (not --no-embeddings), and the extra tags (extratags.ExtraTag) it scores."""

    layer: str = embeddings.DEFAULT_LAYER
    weights_sha256: str = ""
    write: bool = True
    extra_tags: tuple = ()

    @classmethod
    def for_run(cls, settings, bundle):
        """The plan of `settings` (flags) for the model `bundle`; ExtraTagError before any image is read
        when an --extra-tags file is unusable or was learned from another model."""
        layer = bundle.config.embedding
        tags = tuple(load_extra_tags(settings.extra_tags, layer, bundle.sha256, bundle.config.labels))
        return cls(layer, bundle.sha256, settings.embeddings, tags)

    @property
    def needed(self):
        """Whether the runner must return vectors (for the files or the extra tags)."""
        return self.write or bool(self.extra_tags)

    def finish(self, item_name, records):
        """(records with their extra tags' scores, the item's Embeddings) of one item's records."""
        item = embeddings.make({record.key: record.embedding for record in records}, self.layer, self.weights_sha256)
        if not self.extra_tags:
            return records, item
        scores = [tag.confidences(self._checked(tag, item, item_name)) for tag in self.extra_tags]
        row = {key: index for index, key in enumerate(item.keys)}
        return [record._replace(extra=tuple(ExtraScore(tag.name, float(values[row[record.key]]), tag.threshold)
                                            for tag, values in zip(self.extra_tags, scores)))
                for record in records], item

    @staticmethod
    def _checked(tag, item, item_name):
        if item.dim != len(tag.coef):
            raise extratags.ExtraTagError(
                f"extra tag {tag.name} has {len(tag.coef)} weights, the model's vectors have {item.dim} "
                f"dimensions (item {item_name}); learn it again on this model's output with learn-tag")
        return item.vectors

    def write_embeddings(self, output_dir, item_name, item):
        """Write the item's .emb.npz atomically (nothing with --no-embeddings); returns its path or None."""
        if not self.write:
            return None
        path = storage.join(output_dir, embeddings.file_name(item_name))
        storage.write_atomic(path, embeddings.to_bytes(item))
        return path


def load_extra_tags(paths, layer, weights_sha256, labels):
    """The ExtraTags of --extra-tags files, each checked against the model (layer and weights) and
    against the model's labels and each other (an annotation id holds the tag's name: one name, one tag)."""
    tags, taken = [], {}
    for path in paths:
        tag = extratags.load(path)
        tag.check_model(layer, weights_sha256, source=f"extra-tag file {path}")
        if tag.name in labels:
            raise extratags.ExtraTagError(f"extra-tag file {path} is named {tag.name!r}, like one of the model's "
                                          "labels; save it under another name with learn-tag")
        if tag.name in taken:
            raise extratags.ExtraTagError(f"extra-tag files {taken[tag.name]} and {path} both name the tag "
                                          f"{tag.name!r}; pass one of them")
        taken[tag.name] = path
        tags.append(tag)
    return tags
