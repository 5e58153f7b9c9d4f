"""Shared code of the NDL illustration tagger; the scripts at the top level are thin command lines over it.

- labels and model: `labels` (tags -> labels, NDL's fixed output order), `model` (ModelConfig,
  the network, weight files), `weights` (finding or downloading NDL's weight file);
- images: `images` (the one loader that training and inference share);
- training: `training` (the loop), `dataset` (folders, split, weights), `pipeline` (tf.data),
  `metrics` (F1, thresholds), `train_settings` (flags, file names), `train_state` (run folder, --resume);
- inference: `inference` (the stages and the local engine), `backends` (the name -> runner table),
  `results` (records, thresholds, the output formats' text);
- crawling: `crawl` (both modes), `manifest` (manifest.csv), `ndl` (what NDL's API and IIIF
  answers mean), `httpclient` (retries, byte caps, deadline);
- shared: `errors` (UserError, exit statuses), `files` (atomic writes, printable paths),
  `tfenv` (TensorFlow's environment and quiet import).
"""

from tagestimate import tfenv

# Before anything can import TensorFlow: its C++ logging reads this once, when it loads.
tfenv.set_environment()


def quiet_tensorflow():
    """Import TensorFlow the project's one way (tagestimate.tfenv): quiet unless asked otherwise.

    Call it before `import tensorflow` / `import keras`; those then find the loaded module.
    """
    tfenv.import_tensorflow()
