"""Search's plumbing on NDL's replica weights and real demo images: an exact copy of an image
(renamed, or re-encoded losslessly as PNG) finds its original first, score about 1.

NEEDS runner.infer (probabilities and the head's vectors in one pass), which the `embed` branch
adds to tagestimate/tag/backends.py: on a branch without it this test fails with AttributeError.
The replica's features are random, so only exact copies can be expected to find their original
(near-duplicates are tested on a trained model: test_search_trained.py)."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tagestimate import __main__ as entry, embeddings
from tagestimate.files import sha256_file
from tagestimate.images import load_image

from conftest import SHARED_DATA
from test_search import REPLICA

DEMO = os.path.join(SHARED_DATA, "ndl-input", "1054192")
KEYS = ["1054192_10_0", "1054192_10_1", "1054192_10_2", "1054192_11_0", "1054192_11_1", "1054192_11_2",
        "1054192_12_0", "1054192_13_0"]


@pytest.mark.slow
def test_a_renamed_copy_and_a_png_reencode_find_their_original_first(tmp_path, capsys):
    from tagestimate.tag.backends import make_runner
    from tagestimate.tag.settings import ModelBundle

    bundle = ModelBundle.load(REPLICA)
    runner = make_runner("tensorflow", bundle)
    paths = [os.path.join(DEMO, key + ".jpg") for key in KEYS if os.path.isfile(os.path.join(DEMO, key + ".jpg"))]
    assert len(paths) >= 6
    size, order = bundle.config.image_size, bundle.config.channel_order
    batch = np.stack([load_image(path, size, order) for path in paths]).astype(np.float32)
    _, vectors = runner.infer(batch)  # the embed branch's contract: (probabilities, raw vectors)
    output = tmp_path / "out"
    output.mkdir()
    data = embeddings.make({os.path.basename(p)[:-4]: v for p, v in zip(paths, vectors)}, "dense", sha256_file(REPLICA))
    (output / "1054192.emb.npz").write_bytes(embeddings.to_bytes(data))
    original = paths[2]
    renamed = tmp_path / "renamed copy.jpg"
    shutil.copyfile(original, renamed)
    png = tmp_path / "reencoded.png"
    Image.open(original).convert("RGB").save(png)
    for query in (renamed, png):
        status = entry.main(["search", str(output), "--like", str(query), "--weights", REPLICA,
                             "--backend", "tensorflow", "-k", "3", "--format", "csv"])
        out = capsys.readouterr().out
        assert status == 0
        first = out.splitlines()[1].split(",")
        assert first[2:4] == ["1054192", os.path.basename(original)[:-4]]
        assert float(first[1]) == pytest.approx(1.0, abs=2e-3)
