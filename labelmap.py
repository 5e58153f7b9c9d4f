"""Print the tag -> training-labels table, or check a data set folder against it.

    python labelmap.py                 # print the table
    python labelmap.py --check DIR     # DIR's folders, their labels and image counts
    python labelmap.py --labelmap my_map.json --check DIR

The table itself lives in tagestimate/labels.py (add a label there). A folder named after a
tag trains that tag and all its parents, e.g. `picture_landmark` trains picture,
picture_outdoor and picture_landmark.
"""

# A thin shim: the command lives in tagestimate/commands/labels.py (also `python -m tagestimate labels`).
import sys

# Re-exported for scripts and users that import them from here; defined in tagestimate.labels.
from tagestimate.commands.labels import (ALIASES, EXTRA_TAGS, LABELS, NDL_LABELS, PARENTS,  # noqa: F401
                                         TAG_LABELS, UNTAGGED_FOLDER, LabelMap, LabelMapError,
                                         build_parser, check_folder, default_labelmap, from_dict,
                                         load_labelmap, main)


if __name__ == "__main__":
    sys.exit(main())
