"""Image loading corners that the mutation run (bench/mutation.py images) found untested:
every 16-bit, 32-bit and float mode flattened to the right grey, the error texts and the
pixel-limit boundaries. tests/test_images.py covers formats, colours and orientation."""

import os

import numpy as np
import pytest
from PIL import Image

from tagestimate import images
from tagestimate.images import ImageError, load_image


def grey(image):
    """The grey levels _to_rgb makes of `image` (R = G = B checked)."""
    rgb = np.asarray(images._to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape == (image.height, image.width, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].ravel().tolist()


def sixteen_bit(mode, values):
    order = {"I;16": "<", "I;16L": "<", "I;16B": ">", "I;16N": "="}[mode]
    data = np.array(values, dtype=f"{order}u2").tobytes()
    return Image.frombytes(mode, (len(values), 1), data)


def test_rgb_is_passed_through_untouched():
    image = Image.new("RGB", (2, 2), (10, 20, 30))
    assert images._to_rgb(image) is image


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_mode_is_scaled_from_65535(mode):
    # 200 is dark in 16 bits; 257 * 200 - 128 = 51272 sits just above the rounding edge of 200
    assert grey(sixteen_bit(mode, [0, 200, 32768, 51272, 65535])) == [0, 1, 128, 200, 255]


def test_32_bit_integers_up_to_255_are_8_bit_values():
    image = Image.fromarray(np.array([[-100, 0, 128, 200, 255]], dtype=np.int32), mode="I")
    assert grey(image) == [0, 0, 128, 200, 255]


def test_32_bit_integers_above_255_are_scaled_from_65535():
    image = Image.fromarray(np.array([[0, 256, 1000, 65535, 100000]], dtype=np.int32), mode="I")
    assert grey(image) == [0, 1, 4, 255, 255]


def test_float_images_are_scaled_by_their_maximum():
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32), mode="F")
    assert grey(image) == [0, 64, 128, 255]
    dim = Image.fromarray(np.array([[0.0, 0.25, 0.5]], dtype=np.float32), mode="F")
    assert grey(dim) == [0, 64, 128]  # a maximum below 1 is not stretched to white
    assert grey(Image.fromarray(np.zeros((1, 2), dtype=np.float32), mode="F")) == [0, 0]


@pytest.mark.parametrize("mode, colour", [("RGBA", (255, 0, 0, 0)), ("LA", (0, 0)),
                                          ("RGBa", (0, 0, 0, 0)), ("PA", (0, 0))])
def test_transparent_modes_become_white(mode, colour):
    assert np.asarray(images._to_rgb(Image.new(mode, (1, 1), colour))).tolist() == [[[255, 255, 255]]]


def test_image_error_names_the_file_and_keeps_both_parts(tmp_path):
    error = ImageError(tmp_path / "a.jpg", "broken")
    assert str(error) == f"{tmp_path / 'a.jpg'}: broken"
    assert error.path == str(tmp_path / "a.jpg") and type(error.path) is str and error.reason == "broken"


def test_is_utf8_name():
    assert images.is_utf8_name("写真.jpg") is True
    assert images.is_utf8_name(os.fsdecode(b"\x83.jpg")) is False


def test_pixel_limits_follow_pillow(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert images.pixel_limits() == (1000, 2000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert images.pixel_limits() == (None, None)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file (0 bytes); delete it or fetch it again"),
    (b"<html>not an image</html>", "not an image Pillow can read (wrong extension, text or HTML?)"),
])
def test_unusable_files_give_their_exact_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as error:
        load_image(str(path), 32)
    assert error.value.reason == reason and error.value.path == str(path)


def test_corrupt_files_name_the_file(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(path)
    path.write_bytes(path.read_bytes()[:80])
    with pytest.raises(ImageError) as error:
        load_image(str(path), 32)
    assert error.value.path == str(path) and error.value.reason.startswith("corrupt or truncated image (")


def test_a_bad_channel_order_is_named():
    with pytest.raises(ValueError) as error:
        load_image("any.jpg", 32, channel_order="GBR")
    assert str(error.value) == "channel order must be one of ('RGB', 'BGR'), not 'GBR'"


def test_pixel_limits_are_exclusive(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 25), (200, 30, 30)).save(path)  # 1000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # refused above 1000: exactly 1000 is read
    assert load_image(str(path), 8)[0, 0].tolist() == [200, 30, 30]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 499)
    with pytest.raises(ImageError) as error:
        load_image(str(path), 8)
    assert error.value.path == str(path)
    assert error.value.reason == ("too many pixels to decode safely (40 x 25, over Pillow's decompression-bomb "
                                  "limit of 998); scale the image down")


def test_an_image_at_the_large_limit_is_decoded_normally(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 25), (200, 30, 30)).save(path)
    calls = []
    monkeypatch.setattr(images, "_decode_reduced", lambda image, size: calls.append(size) or image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # not over the limit: the usual path
    load_image(str(path), 8)
    assert calls == []
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 999)
    load_image(str(path), 8)
    assert calls == [8]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # guard off: never reduced
    load_image(str(path), 8)
    assert calls == [8]


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_a_dark_16_bit_image_stays_dark(mode):
    assert grey(sixteen_bit(mode, [0, 200, 255])) == [0, 1, 1]  # 16 bits even when no value exceeds 255


def test_256_in_a_32_bit_image_means_16_bit_values():
    image = Image.fromarray(np.array([[0, 256]], dtype=np.int32), mode="I")
    assert grey(image) == [0, 1]


def test_a_decompression_bomb_raised_while_decoding_is_an_image_error(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(path)

    def bomb(handle, name):
        raise Image.DecompressionBombError("Image size (1 pixels) exceeds limit")

    monkeypatch.setattr(images, "_open", bomb)
    with pytest.raises(ImageError) as error:
        load_image(str(path), 8)
    assert error.value.path == str(path)
    assert error.value.reason == "too many pixels for a safe decode (Image size (1 pixels) exceeds limit)"


def test_jpegs_are_draft_decoded_by_default(tmp_path):
    path = tmp_path / "scan.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)).save(path, quality=90)
    default = load_image(str(path), 64)
    assert np.array_equal(default, load_image(str(path), 64, draft=True))
    assert not np.array_equal(default, load_image(str(path), 64, draft=False))


def noisy_jpeg(path, size, fmt="JPEG"):
    """A JPEG (or MPO) whose draft decode differs from its full decode: fine noise."""
    pixels = np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    extra = {"save_all": True, "append_images": [image]} if fmt == "MPO" else {}  # two pictures: opened as MPO
    image.save(path, fmt, quality=90, **extra)
    return str(path)


def test_bytes_given_are_decoded_and_the_path_only_names_them(tmp_path):
    """data= (an object-store read): the file at `path` is never opened, not even for its size."""
    source = noisy_jpeg(tmp_path / "real.jpg", (300, 200))
    data = open(source, "rb").read()
    named = str(tmp_path / "elsewhere" / "absent.jpg")
    pixels, shown = images.decode_image(named, 64, data=data)
    np.testing.assert_array_equal(pixels, load_image(source, 64))
    assert shown == (300, 200)
    np.testing.assert_array_equal(load_image(named, 64, data=data), pixels)
    with pytest.raises(ImageError, match="absent.jpg: empty file"):
        load_image(named, 64, data=b"")


@pytest.mark.parametrize("name, fmt, size, decoded_size", [
    ("small.jpg", "JPEG", (120, 80), None),       # decoded whole: the thumbnail must not think it is reduced
    ("page.jpg", "JPEG", (900, 600), (113, 75)),  # libjpeg at 1/8 (still >= 64 px) for a 64 px model
    ("page.mpo", "MPO", (900, 600), (113, 75)),   # a camera's multi-picture JPEG: the same reduced decode
    ("page.png", "PNG", (900, 600), None),        # no reduced decode for PNG below the large limit
])
def test_keep_gets_the_decoded_image_and_whether_it_was_reduced(tmp_path, name, fmt, size, decoded_size):
    path = noisy_jpeg(tmp_path / name, size, fmt)
    kept = []
    pixels = load_image(path, 64, keep=lambda image, smaller: kept.append((image.dtype, image.shape, smaller)))
    assert len(kept) == 1 and pixels.shape == (64, 64, 3)
    dtype, shape, smaller = kept[0]
    assert dtype == np.uint8 and smaller is (decoded_size is not None)
    width, height = decoded_size or size
    assert shape == (height, width, 3)


def test_decode_image_drafts_by_default_as_load_image_does(tmp_path):
    path = noisy_jpeg(tmp_path / "page.jpg", (900, 600))
    drafted, full = load_image(path, 64, draft=True), load_image(path, 64, draft=False)
    assert np.abs(drafted.astype(int) - full).max() > 0  # the two decodes differ on this file
    np.testing.assert_array_equal(images.decode_image(path, 64)[0], drafted)
    np.testing.assert_array_equal(load_image(path, 64), drafted)
