"""Tag every image under input/ and write one JSON per item into output/.

    python multiinference.py                       # input/ -> output/, weights found or fetched
    python multiinference.py --weights weights_ndllabelimage.hdf5 --inputpath scans --outputpath tags

Each direct sub-folder of the input folder is one item (e.g. a book's pid) and becomes
output/{folder}.json: {"image name without extension": [{"tag": ..., "confidence": ...}]}.
"""

# A thin shim: the command lives in tagestimate/commands/tag.py (also `python -m tagestimate tag`).
import sys

from tagestimate.commands.tag import build_parser, main, DEFAULT_THRESHOLD  # noqa: F401  (the command's code; tests and users import these)


if __name__ == "__main__":
    sys.exit(main())
