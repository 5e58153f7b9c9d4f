"""Train the multi-label EfficientNetB0 illustration tagger from one folder of images per tag.

    python multitrain_efficientnet.py --data datasetpdm --out weights_pdm_multi
    python multitrain_efficientnet.py --out weights_pdm_multi --resume --epochs 40
    python multitrain_efficientnet.py --data datasetpdm --out cv5 --folds 5 --final   # cross-validated

Writes best.weights.h5 + model.json (what inference needs), last.weights.h5 + state.json
(for --resume), history.csv, report.json (validation scores and tuned thresholds) and
split.csv. The work is done by tagestimate.train.training, imported only once the flags are
parsed: TensorFlow takes seconds to load, and --help should not wait for it.
"""

# A thin shim: the command lives in tagestimate/commands/train.py (also `python -m tagestimate train`).
import sys

from tagestimate.commands.train import build_parser, main  # noqa: F401  (the command's code; tests and users import these)


if __name__ == "__main__":
    sys.exit(main())
