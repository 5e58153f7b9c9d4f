"""Image listing and the one image-loading function shared by training and inference.

Every pixel the model sees comes from `load_image`: decode with Pillow, apply the EXIF
orientation, flatten any colour mode to 8-bit RGB, resize to a square with bilinear
interpolation, put the channels in the model's order. The model takes 0-255 pixels and
rescales inside itself, so there is no other scaling step to forget.
"""

import io
import os
import struct
import threading
import warnings

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

# Images are decoded in our own thread pool, beside a model that uses every core; OpenCV's
# own worker threads would only compete with both.
cv2.setNumThreads(1)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jp2"}
)
CHANNEL_ORDERS = ("RGB", "BGR")
# Transparent areas become paper-white rather than black.
BACKGROUND = (255, 255, 255)
# Modes that Image.reduce() averages as they are; the others (alpha, palette, 16-bit) are
# flattened to RGB first, in bands of about _BAND_PIXELS.
_REDUCIBLE_MODES = frozenset({"L", "RGB", "CMYK", "I", "F"})
_BAND_PIXELS = 1 << 22
# EXIF orientation -> the transposition that displays the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations shown turned by 90 degrees: width and height trade places
# At most one full-size decode of a large image at a time: eight workers meeting eight
# 100-megapixel scans would otherwise need eight times 400 MB.
_LARGE_DECODE = threading.Lock()


class ImageError(ValueError):
    """A file that cannot be used as an image; str() names the file and the reason."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_utf8_name(path):
    """False for names that are not valid UTF-8 (Python keeps their bytes as surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_images(folder):
    """All image files under `folder` (recursively, by extension), sorted, hidden ones skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files if not f.startswith(".") and is_image_name(f))
    return sorted(found)


def _to_rgb(image):
    """Any Pillow mode -> 8-bit RGB (16-bit scaled down, alpha composited on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if image.mode == "F":
            peak = max(float(values.max(initial=0)), 1.0)
        gray = np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def pixel_limits():
    """(large, refused): images over `large` pixels are decoded reduced, over `refused` refused.

    Both follow Pillow's decompression-bomb guard, read at call time: `large` is
    Image.MAX_IMAGE_PIXELS (where Pillow would warn), `refused` twice that (where it
    refuses); None when the guard is switched off.
    """
    limit = Image.MAX_IMAGE_PIXELS
    return (None, None) if limit is None else (limit, 2 * limit)


def _open(handle, path):
    """Identify an image as Image.open does, without its decompression-bomb check.

    Image.open warns about large images before the caller sees their size; load_image
    applies the same limits itself (`pixel_limits`), with the size in hand, and decodes
    large images reduced instead of warning. Silencing the warning instead would mean
    swapping the process-wide warning filters from several threads.
    """
    prefix = handle.read(16)
    for load_plugins in (Image.preinit, Image.init):  # the common formats first, as Image.open
        load_plugins()
        for name in list(Image.ID):
            factory, accept = Image.OPEN[name]
            try:  # accept() too: some plugins' checks raise on a prefix of a few bytes
                accepted = accept(prefix) if accept else True
                if isinstance(accepted, str) or not accepted:
                    continue
                handle.seek(0)
                return factory(handle, path)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise Image.UnidentifiedImageError(f"cannot identify image file {path!r}")


def _decode_reduced(image, size):
    """A large non-JPEG image decoded, box-averaged to at least `size` on each side, upright.

    Pillow cannot decode these formats at a smaller scale, so the full-size pixels exist
    once, under a lock; colour modes are flattened band by band, so no second full-size
    copy is made. The EXIF orientation is applied here because the reduced copy loses
    a TIFF's tags.
    """
    factor = max(1, min(image.width // size, image.height // size))
    with _LARGE_DECODE, warnings.catch_warnings():
        # TIFF repeats Pillow's size warning when it allocates its pixels, and Pillow 12's
        # crop() repeats it for wide bands; the size was checked above. catch_warnings is
        # process-wide, hence only here, under the lock.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image.load()
        upright = _UPRIGHT.get(image.getexif().get(ExifTags.Base.Orientation))
        if factor == 1:
            reduced = image
        elif image.mode in _REDUCIBLE_MODES:
            reduced = image.reduce(factor)
        else:
            rows = factor * max(1, _BAND_PIXELS // (image.width * factor))
            reduced = Image.new("RGB", (-(-image.width // factor), -(-image.height // factor)))
            for top in range(0, image.height, rows):
                band = image.crop((0, top, image.width, min(top + rows, image.height)))
                reduced.paste(_to_rgb(band).reduce(factor), (0, top // factor))
    return reduced if upright is None else reduced.transpose(upright)


def resize_bilinear(pixels, size):
    """Resize an (H, W, 3) uint8 array to (size, size, 3) with OpenCV's INTER_LINEAR.

    That is the call NDL's original script made, and its published weights were trained on
    pixels made this way: no antialiasing, pixel-centre aligned, 11-bit fixed-point weights.
    Pillow's resize() antialiases and would shift a sensitive model's outputs.
    """
    if pixels.shape[:2] == (size, size):
        return pixels
    return cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)


def load_image(path, size, channel_order="RGB", draft=True, data=None, keep=None):
    """Read one image as a (size, size, 3) uint8 array; ImageError if it cannot be used.
    (decode_image does the same and also gives the image's size as shown.)

    With `data` (the file's bytes, e.g. read from object storage) the image is decoded from
    memory and `path` only names it in messages. `keep(decoded, reduced)`, if given, is called
    with the decoded image (an (H, W, 3) uint8 array, upright RGB, before the resize) and
    whether it was decoded smaller than the file's size, so that a thumbnail needs no second
    decode; it must neither raise nor change the array (it may be the very pixels returned, when
    the image has the model's size).

    draft=True lets libjpeg decode a JPEG at least twice `size` at 1/2..1/8 scale: 5-8x
    faster on page scans, but not the full-size decode NDL's original script made.
    Images over Pillow's decompression-bomb warning limit (89 megapixels by default) are
    decoded reduced whatever `draft` says, and images over twice that are refused.
    """
    return decode_image(path, size, channel_order, draft, data, keep)[0]


def decode_image(path, size, channel_order="RGB", draft=True, data=None, keep=None):
    """(pixels, (width, height)): load_image's array, and the file's full size as shown (sides
    swapped by an EXIF orientation that turns it), from the same decode: reading the orientation
    again afterwards would decode a PNG a second time (Pillow loads a PNG to look for its EXIF)."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel order must be one of {CHANNEL_ORDERS}, not {channel_order!r}")
    try:
        if (len(data) if data is not None else os.path.getsize(path)) == 0:
            raise ImageError(path, "empty file (0 bytes); delete it or fetch it again")
        with (open(path, "rb") if data is None else io.BytesIO(data)) as handle, _open(handle, path) as image:
            large, refused = pixel_limits()
            source, shown = image, image.size  # before draft() shrinks it
            count = image.width * image.height
            if refused is not None and count > refused:
                raise ImageError(path, f"too many pixels to decode safely ({image.width} x {image.height}, over "
                                       f"Pillow's decompression-bomb limit of {refused:,}); scale the image down")
            is_large = large is not None and count > large
            is_jpeg = image.format in ("JPEG", "MPO")
            if is_jpeg and (draft or is_large):
                # Let libjpeg decode large scans at 1/2..1/8 scale, never below `size`.
                image.draft("RGB", (size, size))
            if is_large and not is_jpeg:
                image = _decode_reduced(image, size)
            else:
                image = ImageOps.exif_transpose(image)
            decoded = np.asarray(_to_rgb(image), dtype=np.uint8)
            pixels = resize_bilinear(decoded, size)
            if keep is not None:
                keep(decoded, decoded.shape[0] * decoded.shape[1] < count)
            # Read by exif_transpose or _decode_reduced above: Pillow keeps it, nothing is decoded again.
            if source.getexif().get(ExifTags.Base.Orientation) in _SWAPS_SIDES:
                shown = shown[::-1]
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(path, f"too many pixels for a safe decode ({error})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read (wrong extension, text or HTML?)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(path, f"corrupt or truncated image ({error})") from None
    if channel_order == "BGR":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels), shown


open_image = _open  # public name for the trainer's quick header check (tagestimate.train.dataset)
