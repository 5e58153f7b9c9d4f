"""Shared code of the NDL illustration tagger; the scripts at the top level are thin command lines over it.

Floors, from the ground up (an import never points up a floor; tests/test_layout.py checks it):

- ground: `errors` (UserError, exit statuses), `files` (atomic writes, printable paths), `tfenv`
  (TensorFlow's environment and quiet import), `images` (the one loader that training and
  inference share), `labels` (tags -> labels, NDL's fixed output order), `modelconfig` (ModelConfig:
  model.json, the backbones), `model` (the network, weight files), `weights` (finding or downloading NDL's weight file), `storage` (local
  folders and object stores), `httpclient` (retries, byte caps, deadline), `ndl` (what NDL's API
  and IIIF answers mean), `iiif` (reading IIIF manifests), `manifest` (the crawl's manifest.csv),
  `records` (a run's per-image records, thresholds, RunContext), `annotations` (W3C/IIIF annotation pages);
- `formats`: the output formats, each one entry that writes and reads back;
- wings: `crawl/` (newdataclawer.py), `train/` (multitrain_efficientnet.py), `tag/`
  (multiinference.py and its engines);
- `review/`: the inference and training reports (jinja2 templates), thumbnails, Grad-CAM;
- `cli` (exit statuses, logging, argument types) and `commands/` (one module per script), then
  `__main__` (`python -m tagestimate SUBCOMMAND`).
"""

from tagestimate import tfenv

# Before anything can import TensorFlow: its C++ logging reads this once, when it loads.
tfenv.set_environment()


def quiet_tensorflow():
    """Import TensorFlow the project's one way (tagestimate.tfenv): quiet unless asked otherwise.

    Call it before `import tensorflow` / `import keras`; those then find the loaded module.
    """
    tfenv.import_tensorflow()
