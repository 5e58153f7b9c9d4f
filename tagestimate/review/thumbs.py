"""Small preview files for the review reports: safe file names, thumbnails, freshness checks.

Item names, image keys and labels come from folder names and model.json, so they are
hostile text: every file the reports write is named by `safe_name`, which keeps a readable
prefix of [A-Za-z0-9._-] and appends a hash of the full text (distinct names never collide,
even on case-insensitive disks).
"""

import math
import os

import cv2
import numpy as np
from PIL import Image, ImageOps

from tagestimate import images
from tagestimate.files import safe_name, write_atomic  # noqa: F401 (safe_name: the reports' import)
from tagestimate.images import ImageError

THUMB_SIZE = 160  # longest side in pixels: about 5-8 KB as JPEG
QUALITY = 80


def is_current(target, *sources):
    """True when `target` exists, is not empty, and is at least as new as every existing source file.
    (Previews are written without fsync: a power cut may leave one empty, to be made again.)"""
    try:
        stat = os.stat(target)
    except OSError:
        return False
    made = stat.st_mtime
    if not stat.st_size:
        return False
    for source in sources:
        try:
            if os.stat(source).st_mtime > made:
                return False
        except OSError:
            continue
    return True


def make_thumbnail(path, size=THUMB_SIZE):
    """The image at `path`, upright and RGB, shrunk to fit size x size (aspect kept), as a Pillow image.

    Decodes as images.load_image does (libjpeg's reduced decode, the same pixel limits, any
    colour mode flattened on white); ImageError when the file cannot be used.
    """
    try:
        with open(path, "rb") as handle, images.open_image(handle, path) as image:
            large, refused = images.pixel_limits()
            count = image.width * image.height
            if refused is not None and count > refused:
                raise ImageError(path, "too many pixels to decode safely")
            is_jpeg = image.format in ("JPEG", "MPO")
            if is_jpeg:
                image.draft("RGB", (size, size))
            if large is not None and count > large and not is_jpeg:
                image = images._decode_reduced(image, size)
            else:
                image = ImageOps.exif_transpose(image)
            return Image.fromarray(shrink(np.asarray(images._to_rgb(image), dtype=np.uint8), size))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(path, f"cannot make a thumbnail ({error})") from None


def fitted(width, height, size=THUMB_SIZE):
    """(width, height) shrunk to fit size x size with the aspect kept, as Pillow's thumbnail() rounds:
    each side a whole number of pixels, the one that keeps the aspect closest; unchanged if it fits."""
    if width <= size and height <= size:
        return width, height
    aspect = width / height
    if aspect >= 1:
        return size, max(1, min(math.floor(size / aspect), math.ceil(size / aspect),
                                key=lambda n: abs(aspect - size / n) if n else math.inf))
    return max(1, min(math.floor(size * aspect), math.ceil(size * aspect), key=lambda n: abs(aspect - n / size))), size


def shrink(pixels, size=THUMB_SIZE):
    """An upright RGB image, an (H, W, 3) uint8 array, shrunk to fit size x size (aspect kept): every
    thumbnail's last step, whether its pixels come from make_thumbnail or from the decode tagging made.
    Returns a new array, or `pixels` itself when it already fits; never changes `pixels`.

    Each thumbnail pixel is about the mean of the pixels it covers, so the halftone screens of old
    printed photos shrink to grey rather than to moire. OpenCV averages whole 2x2, 3x3... blocks fast
    but fractional ones slowly, so the image is first reduced by whole blocks, then what is left (a
    factor under 2) goes bilinear up to twice the thumbnail's size and is averaged 2x2. On a 256 px
    crop that takes 0.16 ms, against 0.29 for the exact fractional mean and for Pillow's box filter:
    this runs once per image of every default run, beside the model on its cores. (The whole-block
    step drops the last rows or columns that do not fill a block: invisible once shrunk.)"""
    height, width = pixels.shape[:2]
    target = fitted(width, height, size)
    if target == (width, height):
        return pixels
    factor = min(width // target[0], height // target[1])
    if factor >= 2:
        pixels = cv2.resize(pixels[:height - height % factor, :width - width % factor],
                            (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    if pixels.shape[:2] != (target[1], target[0]):
        double = cv2.resize(pixels, (2 * target[0], 2 * target[1]), interpolation=cv2.INTER_LINEAR)
        pixels = cv2.resize(double, target, interpolation=cv2.INTER_AREA)
    return pixels


def jpeg_bytes(image, quality=QUALITY):
    """A Pillow image or an (H, W, 3) uint8 RGB array as JPEG bytes.
    OpenCV's encoder: 0.08 ms for a 160 px thumbnail where Pillow's took 0.11 (and 0.22 with
    optimize=True, whose second pass for Huffman tables makes files only a few per cent smaller)."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
    done, data = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, quality))
    if not done:
        raise OSError("the JPEG encoder failed")
    return data.tobytes()


def write_jpeg(path, image, folder_exists=False):
    """Save a Pillow image or an RGB array as JPEG at `path`, atomically (folders made unless
    `folder_exists`). A preview, made again from its source at will: written without fsync
    (write_atomic's sync), which cost 0.1 ms of CPU and a wait on the disk for each image of a run."""
    if not folder_exists:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, jpeg_bytes(image), sync=False)
    return path


def ensure_thumbnail(source, target, size=THUMB_SIZE):
    """Write the thumbnail of `source` at `target` unless it is already current.

    Returns True when `target` holds a current thumbnail, False when the source cannot be
    read (gone since tagging, or unreadable).
    """
    if is_current(target, source):  # also keeps the thumbnail of a source gone since
        return True
    try:
        write_jpeg(target, make_thumbnail(source, size))
    except (ImageError, OSError):
        return False
    return True
