"""The shared image loader: every colour mode, orientation, bad files, and OpenCV parity."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from tagestimate import images
from tagestimate.images import ImageError, list_images, load_image, resize_bilinear

SIZE = 32
# The loader decodes large images reduced instead of letting Pillow warn about them.
pytestmark = pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")


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


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, on TIFF headers cut short
@pytest.mark.parametrize("extension", ["bmp", "png", "jpg", "gif", "tiff", "webp"])
def test_files_of_a_few_bytes_raise_image_error_whatever_they_start_with(tmp_path, extension):
    # Format detection looks at a 16-byte prefix; some plugins' checks (BMP's) raise on fewer
    # bytes, which must not escape as a traceback that ends the whole run.
    real = tmp_path / f"real.{extension}"
    Image.new("RGB", (4, 4), (9, 9, 9)).save(real)
    header = real.read_bytes()[:16]
    for length in range(1, 16):
        path = tmp_path / f"short{length}.{extension}"
        path.write_bytes(header[:length])
        with pytest.raises(ImageError) as caught:
            load_image(str(path), SIZE)
        assert str(path) in str(caught.value)
    for short in (b"bad", b"BM", b"B"):
        path = tmp_path / f"text.{extension}"
        path.write_bytes(short)
        with pytest.raises(ImageError):
            load_image(str(path), SIZE)


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


# Known colours at known places: a loader that turns every non-RGB image grey, forgets the
# EXIF orientation, drops alpha instead of compositing it on white, or swaps R and B fails.
RED, GREEN, BLUE, YELLOW = (220, 20, 30), (20, 200, 40), (30, 40, 210), (240, 230, 20)
QUADRANTS = {"top_left": RED, "top_right": GREEN, "bottom_left": BLUE, "bottom_right": YELLOW}
CENTRES = {"top_left": (8, 8), "top_right": (8, 24), "bottom_left": (24, 8), "bottom_right": (24, 24)}


def quadrants(colours, mode="RGB", size=64):
    image = Image.new(mode, (size, size))
    half = size // 2
    boxes = {"top_left": (0, 0, half, half), "top_right": (half, 0, size, half),
             "bottom_left": (0, half, half, size), "bottom_right": (half, half, size, size)}
    for place, colour in colours.items():
        image.paste(colour, boxes[place])
    return image


def colours_at_centres(pixels):
    """The colour at the centre of each quadrant of a 32 x 32 result."""
    return {place: tuple(int(v) for v in pixels[row, column]) for place, (row, column) in CENTRES.items()}


def on_white(colour, alpha):
    """Pillow's compositing of one channel on paper-white, rounded as Pillow rounds."""
    return round((colour * alpha + 255 * (255 - alpha)) / 255)


@pytest.fixture(params=["whole", "reduced"])
def decode_path(request, monkeypatch):
    """Run a test on the usual decode and on the reduced decode of large images.

    "reduced" lowers Pillow's limit so the 64 x 64 test images count as large (over the
    limit, under twice it), and checks that the reduced decode really ran.
    """
    if request.param == "whole":
        yield
        return
    calls = []
    reduce, draft = images._decode_reduced, JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    monkeypatch.setattr(images, "_decode_reduced", lambda *a: calls.append(a) or reduce(*a))
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda *a: calls.append(a) or draft(*a))
    yield
    assert calls, "the reduced decode did not run"


def stored_image(path):
    """(mode, info, raw mode) of a saved test image, opened without the lowered limit's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.mode, image.info, image.tile[0].args[0]


def assert_close(found, expected, tolerance):
    for place in expected:
        assert max(abs(a - b) for a, b in zip(found[place], expected[place])) <= tolerance, (place, found, expected)


def test_rgb_png_colours_are_exact_and_in_rgb_order(tmp_path, decode_path):
    path = save(tmp_path / "rgb.png", quadrants(QUADRANTS))
    assert colours_at_centres(load_image(path, 32)) == QUADRANTS
    assert colours_at_centres(load_image(path, 32, "BGR")) == {p: c[::-1] for p, c in QUADRANTS.items()}


@pytest.mark.parametrize("extension", [".jpg", ".tif"])
def test_cmyk_colours(tmp_path, extension, decode_path):
    # Pillow's naive CMYK -> RGB: R = (255 - C) * (255 - K) / 255, etc.
    cmyk = {"top_left": (0, 255, 255, 0), "top_right": (255, 0, 255, 0), "bottom_left": (255, 255, 0, 0),
            "bottom_right": (0, 0, 0, 128)}
    expected = {"top_left": (255, 0, 0), "top_right": (0, 255, 0), "bottom_left": (0, 0, 255),
                "bottom_right": (127, 127, 127)}
    path = save(tmp_path / ("cmyk" + extension), quadrants(cmyk, "CMYK"), quality=95)
    if extension == ".jpg":  # Pillow writes Adobe's inverted CMYK; this covers it
        mode, info, raw_mode = stored_image(path)
        assert mode == "CMYK" and "adobe" in info and raw_mode == "CMYK;I"
    assert_close(colours_at_centres(load_image(path, 32)), expected, 0 if extension == ".tif" else 3)


def test_grayscale_l_colours(tmp_path, decode_path):
    grey = {"top_left": 0, "top_right": 77, "bottom_left": 180, "bottom_right": 255}
    path = save(tmp_path / "gray.png", quadrants(grey, "L"))
    assert colours_at_centres(load_image(path, 32)) == {p: (v, v, v) for p, v in grey.items()}


def test_sixteen_bit_values_map_to_eight_bit(tmp_path, decode_path):
    values = np.zeros((64, 64), np.uint16)  # quadrants of 0, 25700, 32768, 65535
    values[:32, 32:], values[32:, :32], values[32:, 32:] = 25700, 32768, 65535
    path = save(tmp_path / "deep.png", Image.fromarray(values))
    assert stored_image(path)[0] == "I;16"
    # 25700 = 100 * 257; 32768 * 255 / 65535 = 127.5 -> 128
    expected = {"top_left": 0, "top_right": 100, "bottom_left": 128, "bottom_right": 255}
    assert colours_at_centres(load_image(path, 32)) == {p: (v, v, v) for p, v in expected.items()}


@pytest.mark.parametrize("extension", [".png", ".gif"])
@pytest.mark.parametrize("transparent", [False, True])
def test_palette_colours_and_transparency(tmp_path, extension, transparent, decode_path):
    image = quadrants({"top_left": 1, "top_right": 2, "bottom_left": 3, "bottom_right": 4}, "P")
    image.putpalette([0, 0, 0, *RED, *GREEN, *BLUE, *YELLOW])
    options = {"transparency": 4} if transparent else {}
    path = save(tmp_path / ("palette" + extension), image, **options)
    assert stored_image(path)[0] == "P"
    expected = dict(QUADRANTS, bottom_right=(255, 255, 255) if transparent else YELLOW)
    assert colours_at_centres(load_image(path, 32)) == expected


def test_rgba_is_composited_on_white(tmp_path, decode_path):
    alphas = {"top_left": 255, "top_right": 128, "bottom_left": 0, "bottom_right": 1}
    image = quadrants({place: (*RED, alpha) for place, alpha in alphas.items()}, "RGBA")
    path = save(tmp_path / "alpha.png", image)
    expected = {place: tuple(on_white(c, alpha) for c in RED) for place, alpha in alphas.items()}
    assert expected["top_right"] == (237, 137, 142)  # 220 * 128/255 + 127 = 237.4, 20 -> 137.0, 30 -> 142.1
    assert colours_at_centres(load_image(path, 32)) == expected


def test_la_is_composited_on_white(tmp_path, decode_path):
    image = quadrants({"top_left": (100, 255), "top_right": (100, 128), "bottom_left": (100, 0),
                       "bottom_right": (0, 128)}, "LA")
    path = save(tmp_path / "gray_alpha.png", image)
    # 100 * 128/255 + 255 * 127/255 = 177.2; 0 * 128/255 + 127 = 127
    expected = {"top_left": 100, "top_right": 177, "bottom_left": 255, "bottom_right": 127}
    assert colours_at_centres(load_image(path, 32)) == {p: (v, v, v) for p, v in expected.items()}


# Where each stored quadrant is seen once the EXIF orientation is applied.
ROTATIONS = {
    3: {"top_left": "bottom_right", "top_right": "bottom_left", "bottom_left": "top_right", "bottom_right": "top_left"},
    6: {"top_left": "top_right", "top_right": "bottom_right", "bottom_right": "bottom_left", "bottom_left": "top_left"},
    8: {"top_left": "bottom_left", "bottom_left": "bottom_right", "bottom_right": "top_right", "top_right": "top_left"},
}


@pytest.mark.parametrize("extension", [".jpg", ".png", ".tif"])
@pytest.mark.parametrize("orientation", sorted(ROTATIONS))
def test_exif_orientation_puts_each_corner_where_it_is_seen(tmp_path, orientation, extension, decode_path):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / ("rotated" + extension), quadrants(QUADRANTS), exif=exif, quality=95)
    expected = {ROTATIONS[orientation][place]: colour for place, colour in QUADRANTS.items()}
    assert_close(colours_at_centres(load_image(path, 32)), expected, 12 if extension == ".jpg" else 0)


@pytest.fixture(scope="module")
def hundred_megapixels(tmp_path_factory):
    """A 100-megapixel grey JPEG and PNG: over Pillow's 89-megapixel warning limit, under its refusal."""
    folder = tmp_path_factory.mktemp("large")
    ramp = np.linspace(0, 255, 10000).astype(np.uint8)
    values = np.add.outer(ramp // 2, ramp // 2).astype(np.uint8)  # 10000 x 10000
    image = Image.fromarray(values)
    paths = {"jpg": save(folder / "large.jpg", image, quality=85), "png": save(folder / "large.png", image,
                                                                             compress_level=1)}
    del image, values
    return paths


@pytest.mark.parametrize("draft", [True, False])
def test_a_hundred_megapixel_jpeg_loads_reduced_without_a_warning(hundred_megapixels, draft, recwarn):
    pixels = load_image(hundred_megapixels["jpg"], 224, draft=draft)
    assert not recwarn.list
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(hundred_megapixels["jpg"]) as image:
            image.draft("RGB", (224, 224))  # libjpeg's 1/8 scale: 1250 x 1250
            assert image.size == (1250, 1250)
            expected = resize_bilinear(np.asarray(image.convert("RGB")), 224)
    assert np.array_equal(pixels, expected)


def test_a_hundred_megapixel_png_loads_reduced_without_a_warning(hundred_megapixels, recwarn, monkeypatch):
    pixels = load_image(hundred_megapixels["png"], 224)
    assert not recwarn.list
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(hundred_megapixels["png"]) as image:
        reduced = image.reduce(10000 // 224)  # box-averaged to 228 x 228, then resized as usual
    assert np.array_equal(pixels, resize_bilinear(np.asarray(reduced.convert("RGB")), 224))


def png_header_only(width, height):
    """A PNG that declares width x height grey pixels: enough for the size check, never decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_an_image_beyond_the_hard_limit_gets_one_clear_reason(tmp_path, recwarn):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(20000, 10000))  # 200 megapixels, over Pillow's 179
    with pytest.raises(ImageError) as caught:
        load_image(str(path), 224)
    assert caught.value.reason == ("too many pixels to decode safely (20000 x 10000, over Pillow's "
                                   "decompression-bomb limit of 178,956,970); scale the image down")
    assert not recwarn.list and Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's guard left as it was


@pytest.mark.parametrize("name, stored, orientation, draft, limit", [
    ("turned.jpg", (900, 500), 6, True, None),     # decoded at 1/4 for the model: the file's size still
    ("mirrored.jpg", (900, 500), 2, True, None),   # a flip keeps the sides
    ("turned.png", (90, 50), 8, True, None),       # Pillow reads a PNG's EXIF only by decoding it
    ("upright.png", (90, 50), None, True, None),
    ("turned.tif", (300, 100), 5, True, 20_000),   # large: decoded reduced, band by band
    ("full.jpg", (900, 500), 7, False, None),
])
def test_decode_image_gives_the_full_size_as_shown(tmp_path, monkeypatch, name, stored, orientation, draft, limit):
    """The (width, height) that outputs and IIIF boxes use: the file's own size, sides swapped for the
    orientations shown turned (5-8), whatever scale the pixels were decoded at."""
    if limit:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    path = str(tmp_path / name)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.new("RGB", stored, (10, 120, 200)).save(path, exif=exif)
    pixels, shown = images.decode_image(path, 64, draft=draft)
    assert pixels.shape == (64, 64, 3)
    assert shown == (stored[::-1] if orientation in (5, 6, 7, 8) else stored)
    np.testing.assert_array_equal(pixels, images.load_image(path, 64, draft=draft))
