"""Image files -> uint8 arrays: decoding, 8-bit mapping, crop / pad resize, DICOM dispatch."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from medssl_jax import errors
from medssl_jax import paths

RESIZE_MODES = ("crop", "pad")
DICOM_SUFFIXES = (".dcm", ".dicom")

_MODES = {1: "L", 3: "RGB"}
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
CHANNELS = tuple(_MODES)  # 1 (grey) or 3 (RGB)


def decode_image(path: str | os.PathLike[str], image_size: int | None = None,
                 channels: int = 1, csv_path=None, *, resize: str = "crop") -> np.ndarray:
  """One file as uint8 (H, W, channels), optionally resized to image_size x image_size.

  PNG, JPEG and the other formats Pillow reads, and DICOM (.dcm, .dicom; see dicom.py).
  Grey files are repeated to 3 channels and colour files made grey as channels asks.
  resize: "crop" keeps the aspect and centre-crops the square; "pad" keeps the whole
  image, with black bars.
  """
  listed = f" (listed in {csv_path})" if csv_path else ""
  if not paths.path(path).is_file():
    raise errors.UserFileNotFoundError(f"image {path}{listed} does not exist")
  try:
    image = _read_8bit(path).convert(_MODES[channels])
    if image_size:
      image = (_resize_center_crop if resize == "crop" else _resize_pad)(image, image_size)
    array = np.asarray(image, np.uint8)
  except _DECODE_ERRORS as e:
    raise errors.UserError(f"cannot decode image {path}{listed}: {type(e).__name__}: {e}") from e
  return array.reshape(array.shape[:2] + (channels,))


def _read_8bit(path) -> Image.Image:
  """The file's image, fully read, with 8 bits per channel."""
  if str(path).lower().endswith(DICOM_SUFFIXES):
    # Imported here: pydicom is needed only by data sets of DICOM files.
    from medssl_jax.data import dicom  # pylint: disable=g-import-not-at-top
    return Image.fromarray(dicom.read_dicom(path))
  with paths.path(path).open("rb") as file, Image.open(file) as image:
    # exif_transpose returns a loaded copy: camera photos (skin, fundus) may be rotated.
    return _to_8bit(ImageOps.exif_transpose(image))


def _to_8bit(image: Image.Image) -> Image.Image:
  """16-bit greyscale (common for X-ray PNGs) scaled to 8 bits; Pillow would clip it."""
  if image.mode not in _HIGH_BIT_MODES:
    return image
  array = np.asarray(image).astype(np.int64)
  return Image.fromarray((np.clip(array, 0, 65535) >> 8).astype(np.uint8), "L")


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Resizes the short side to `size` (aspect kept), then crops the centre square."""
  width, height = image.size
  if (width, height) == (size, size):
    return image
  scale = size / min(width, height)
  new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
  image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)  # antialiased when shrinking
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return image.crop((left, top, left + size, top + size))


def _resize_pad(image: Image.Image, size: int) -> Image.Image:
  """Resizes the long side to `size` (aspect kept), then centres it on a black square."""
  width, height = image.size
  if (width, height) == (size, size):
    return image
  scale = size / max(width, height)
  new_w, new_h = max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))
  canvas = Image.new(image.mode, (size, size), 0)
  canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC),
               ((size - new_w) // 2, (size - new_h) // 2))
  return canvas
