"""The shared image loader: every colour mode, orientation, bad files, and OpenCV parity."""

import os

import numpy as np
import pytest
from PIL import Image

from tagestimate.images import ImageError, list_images, load_image, resize_bilinear

SIZE = 32


def save(path, image, **options):
    image.save(path, **options)
    return str(path)


def gradient(width=80, height=60):
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                          np.full((height, width, 1), 40, np.float32)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("name,make", [
    ("a.jpg", lambda: gradient()),
    ("a.png", lambda: gradient().convert("RGBA")),
    ("a.tif", lambda: gradient()),
    ("a.bmp", lambda: gradient()),
    ("a.webp", lambda: gradient()),
    ("gray.png", lambda: gradient().convert("L")),
    ("cmyk.jpg", lambda: gradient().convert("CMYK")),
    ("palette.gif", lambda: gradient().convert("P")),
])
def test_every_format_loads_as_uint8_rgb(tmp_path, name, make):
    path = save(tmp_path / name, make())
    pixels = load_image(path, SIZE)
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 10  # real content, not a blank or black image


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))
    path = save(tmp_path / "deep.png", Image.fromarray(values))
    pixels = load_image(path, SIZE)
    assert pixels[:, 0].max() < 20 and pixels[:, -1].min() > 235  # a full ramp, not all-white


def test_transparent_areas_become_white(tmp_path):
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    pixels = load_image(save(tmp_path / "clear.png", image), SIZE)
    assert (pixels == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 30), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 30, 30))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(tmp_path / "rotated.jpg", image, exif=exif, quality=95)
    pixels = load_image(path, SIZE).astype(int)
    # displayed upright, the white half is on top
    assert pixels[: SIZE // 2 - 2].mean() > 200 and pixels[SIZE // 2 + 2:].mean() < 50


def test_channel_order_bgr_reverses_rgb(tmp_path):
    path = save(tmp_path / "red.png", Image.new("RGB", (20, 20), (250, 10, 0)))
    assert tuple(load_image(path, SIZE, "RGB")[0, 0]) == (250, 10, 0)
    assert tuple(load_image(path, SIZE, "BGR")[0, 0]) == (0, 10, 250)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, this is text\n", "not an image"),
    (b"<html><body>503 Service Unavailable</body></html>", "not an image"),
])
def test_non_images_raise_image_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        load_image(str(path), SIZE)
    assert str(path) in str(caught.value) and reason in caught.value.reason


def test_truncated_jpeg_raises_image_error(tmp_path):
    good = save(tmp_path / "good.jpg", gradient(300, 300), quality=95)
    data = open(good, "rb").read()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(str(path), SIZE)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = save(tmp_path / "bomb.png", Image.new("L", (200, 200)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 px is > 2x this limit
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(path, SIZE)


def test_list_images_recurses_sorted_and_skips_hidden_and_other_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for relative in ("z.jpg", "b/a.PNG", ".hidden/x.jpg", ".dot.jpg", "notes.txt"):
        (tmp_path / relative).write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in list_images(str(tmp_path))]
    assert found == [os.path.join("b", "a.PNG"), "z.jpg"]


@pytest.mark.parametrize("width,height", [(256, 256), (300, 255), (509, 256), (100, 60), (224, 224)])
def test_reading_matches_the_original_opencv_pipeline(tmp_path, width, height):
    """NDL's script: cv2.imread (BGR) then cv2.resize INTER_LINEAR to 224 x 224, bit for bit."""
    import cv2

    path = save(tmp_path / "crop.jpg", gradient(width, height), quality=90)
    expected = cv2.resize(cv2.imread(path), (224, 224), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(load_image(path, 224, "BGR"), expected)


def test_real_ndl_crops_read_exactly_as_the_original():
    import glob

    import cv2

    from conftest import SHARED_DATA

    paths = sorted(glob.glob(os.path.join(SHARED_DATA, "*", "*", "*.jpg")))
    if not paths:
        pytest.skip("../shared/data absent")
    for path in paths:  # RGB and grayscale crops, 167 to 509 px wide
        expected = cv2.resize(cv2.imread(path), (224, 224), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(load_image(path, 224, "BGR"), expected), path


def test_large_jpeg_is_decoded_small_but_keeps_its_content(tmp_path):
    path = save(tmp_path / "scan.jpg", gradient(3000, 2000), quality=90)
    pixels = load_image(path, 224).astype(int)
    reference = resize_bilinear(np.asarray(Image.open(path).convert("RGB")), 224).astype(int)
    assert np.abs(pixels - reference).mean() < 2  # draft decoding changes pixels only slightly
