"""What a tagging run is given, made once: its settings (the parsed flags) and its model bundle.

    settings = InferenceSettings.from_args(args)        # frozen: every engine reads the same values
    bundle = ModelBundle.load(weights_path, settings.threshold)
    runner = make_runner(backend, bundle); Tagger(runner, bundle.output_config, settings, ...)
    ray_engine.run(settings, bundle, items, problems, ...)

The bundle is the weight file resolved once, in the command: what it means (ModelConfig,
kind, read from its structure and model.json), its SHA-256, and the config the outputs are
thresholded with (--threshold folded in here, and only here). Engines, runners, Ray workers
and the explainer take it instead of describing the file again.
"""

import dataclasses

from tagestimate import storage
from tagestimate.files import sha256_file
from tagestimate.formats import with_threshold
from tagestimate.model import ModelConfig, describe_weights
from tagestimate.tag.inference import DEFAULT_BATCH_SIZE, default_workers

@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The flags of a tagging run (multiinference.py's defaults), read once from argparse's namespace."""

    input_dir: str = "input"
    output_dir: str = "output"
    output_format: str = "json"
    weights: str = None  # None: found or downloaded (weights.resolve_weights)
    weights_url: str = None
    threshold: float = None  # None: model.json's per-label thresholds
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = None  # decoding threads; None: default_workers()
    backend: str = "auto"
    overwrite: bool = False
    draft: bool = True  # libjpeg's reduced decode (not --full-decode)
    id_base: str = None
    target_base: str = None
    report: bool = True  # not --no-report
    lang: str = None  # --lang: the report's tag names (None: the tags themselves)
    explain: bool = False
    progress: bool = True  # not --quiet
    engine: str = "local"
    ray_address: str = None
    actors: int = None
    gpus_per_actor: float = None
    embeddings: bool = True  # not --no-embeddings: write {item}.emb.npz
    extra_tags: tuple = ()  # --extra-tags files

    @classmethod
    def from_args(cls, args):
        return cls(input_dir=args.inputpath, output_dir=args.outputpath, output_format=args.format,
                   weights=args.weights, weights_url=args.weights_url, threshold=args.threshold,
                   batch_size=args.batch_size, workers=args.workers, backend=args.backend,
                   overwrite=args.overwrite, draft=not args.full_decode, id_base=args.id_base,
                   target_base=args.target_base, report=not args.no_report, lang=args.lang, explain=args.explain,
                   progress=not args.quiet, engine=args.engine, ray_address=args.ray_address,
                   actors=args.actors, gpus_per_actor=args.gpus_per_actor, embeddings=not args.no_embeddings,
                   extra_tags=tuple(args.extra_tags or ()))

    @property
    def decoders(self):
        """Decoding threads per engine process."""
        return self.workers or default_workers()

    @property
    def with_report(self):
        """The review report is written beside a local output folder only."""
        return self.report and storage.on_disk(self.output_dir)


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A weight file resolved once: its path, ModelConfig and kind, its SHA-256, and `output_config`
    (the config with --threshold folded in: what the writers threshold with)."""

    path: str
    config: ModelConfig
    kind: str
    sha256: str
    output_config: ModelConfig

    @classmethod
    def load(cls, path, threshold=None):
        """Describe the file (structure and model.json; builds nothing) and hash it, once."""
        config, kind = describe_weights(path)
        return cls(path, config, kind, sha256_file(path), with_threshold(config, threshold))

    @property
    def thresholds(self):
        """Per-label thresholds in label order, as the outputs apply them."""
        return self.output_config.cutoffs()

    def at(self, path):
        """The same bundle for a copy of the weight file at `path` (e.g. on a Ray worker)."""
        return dataclasses.replace(self, path=path)
