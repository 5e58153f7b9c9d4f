"""Find more like this: a collection index built from an output folder's `{item}.emb.npz` files,
similar-image search (`tagestimate search`) and tags learned from a few examples (`learn-tag`).

    index.py    the collection index in OUTPUT/.index/: built and kept up to date incrementally
    nearest.py  exact top-k (blocked NumPy matmul) and the approximate index (usearch)
    where.py    what is known about an image beyond its vector: its file, its IIIF target
    query.py    --like arguments (keys or image files) to one query vector; result rows and formats
    learn.py    learn-tag: a logistic regression on the vectors, the ranking, its CSV and HTML page

Floor 3, beside review/ (which it never imports): it reads outputs, never writes an item's output.
"""
