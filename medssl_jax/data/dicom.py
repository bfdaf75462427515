"""Reads one DICOM image as uint8, shown the way a DICOM viewer shows it.

Monochrome pixels follow the DICOM grayscale pipeline (PS3.4 N.2) in order:

1. Modality LUT, or Rescale Slope/Intercept (CT values become Hounsfield units).
2. VOI LUT, else Window Center/Width (first value of each; pydicom prefers the LUT when
   both are present). Their output range is mapped linearly to 0..255: the window's
   full output range, or 0..(largest LUT entry) for a LUT, as Horos and Cornerstone do,
   because some vendors declare 16-bit LUT entries but fill only 12 bits.
3. With neither, the 0.5th..99.5th percentiles of the modality values are mapped to
   0..255 (min..max if those coincide), so a few hot pixels, collimator edges or
   burned-in labels do not squeeze the anatomy into a few grey levels. Unsigned data of
   at most 8 bits with an identity modality transform is already display-ready and is
   kept as stored.
4. MONOCHROME1 is inverted, so that high means bright for every monochrome image (bone
   bright, air dark on a radiograph). Presentation LUT Shape is ignored: in CR/DX files
   it restates the photometric interpretation (INVERSE for MONOCHROME1), so honouring
   both would invert twice.

12- to 16-bit data always goes through one of these linear maps; high bits are never
cut off. Colour images (RGB, or YCbCr that pydicom converts to RGB) keep their colours:
all channels share one fixed scale, 0..2**BitsStored - 1 to 0..255. Other photometric
interpretations (PALETTE COLOR, ...) are refused.

Compressed transfer syntaxes are decoded by whichever pydicom plugin is installed
(Pillow covers JPEG baseline and JPEG 2000); others are refused with the packages to
install. Files without the "DICM" preamble (not DICOM Part 10) are refused.
"""
from __future__ import annotations

import io
import os
import re

import numpy as np
import pydicom
from pydicom import errors as pydicom_errors
from pydicom import pixels

from medssl_jax import errors
from medssl_jax import paths

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# pydicom returns these as RGB (raw=False converts YCbCr; JPEG 2000 decoders undo ICT/RCT).
_COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_ROBUST_PERCENTILES = (0.5, 99.5)
# pydicom's plugin dependency names -> the pip package that provides them.
_PIP_NAMES = {"gdcm": "python-gdcm"}
# What pydicom raises on malformed or unsupported pixel data (no common base class).
_PIXEL_ERRORS = (AttributeError, EOFError, KeyError, NotImplementedError, OSError,
                 RuntimeError, TypeError, ValueError)


class DicomError(errors.UserError):
  """A DICOM file that cannot be read or is not supported; the message names the path."""


def read_dicom(path: str | os.PathLike[str]) -> np.ndarray:
  """The first frame of a DICOM file as uint8: (H, W) monochrome or (H, W, 3) RGB.

  Multi-frame files give their first frame only (and only that frame is decoded).

  Raises:
    FileNotFoundError: no file at `path`.
    DicomError: not DICOM, truncated, compressed with no decoder installed, or an
      unsupported photometric interpretation.
  """
  if not paths.path(path).is_file():
    raise errors.UserFileNotFoundError(f"DICOM file {path} does not exist")
  file = _readable(path)
  ds = _read_header(file, path)
  missing = [k for k in ("Rows", "Columns", "PhotometricInterpretation") if k not in ds]
  if missing:
    raise DicomError(f"{path} has no {', '.join(missing)}: it is truncated, or it is not an "
                     f"image (e.g. a structured report)")
  _check_decodable(ds, path)
  photometric = str(ds.PhotometricInterpretation).strip()
  if photometric not in _MONOCHROME + _COLOR:
    raise DicomError(f"{path}: photometric interpretation {photometric!r} is not supported; "
                     f"supported: {', '.join(_MONOCHROME + _COLOR)}")
  try:
    if isinstance(file, io.BytesIO):
      file.seek(0)
    frame = pixels.pixel_array(file, index=0)
    image = (_monochrome_to_uint8(frame, ds) if photometric in _MONOCHROME
             else _color_to_uint8(frame, ds))
  except _PIXEL_ERRORS as e:
    raise DicomError(f"cannot decode the pixel data of {path} (truncated or corrupt?): "
                     f"{type(e).__name__}: {e}{_other_decoders(ds)}") from e
  expected = (int(ds.Rows), int(ds.Columns)) + ((3,) if photometric in _COLOR else ())
  if image.shape != expected:
    raise DicomError(f"{path}: decoded shape {image.shape}, but its header says {expected}")
  return image


def _readable(path):
  """What pydicom reads: a local path as is (it reads only what it needs), a bucket object
  fetched whole."""
  return io.BytesIO(paths.path(path).read_bytes()) if paths.is_remote(path) else os.fspath(path)


def _read_header(file, path) -> pydicom.Dataset:
  # The pixels are read separately (one frame only); the header is cheap to parse twice.
  try:
    return pydicom.dcmread(file, stop_before_pixels=True)
  except (pydicom_errors.InvalidDicomError, EOFError, OSError, ValueError, KeyError) as e:
    raise DicomError(f"{path} is not a readable DICOM file: {type(e).__name__}: {e}") from e


def _check_decodable(ds: pydicom.Dataset, path) -> None:
  """Refuses, before any decoding, pixel data that no installed plugin can decode."""
  syntax = ds.file_meta.get("TransferSyntaxUID")
  if syntax is None:
    raise DicomError(f"{path} has no Transfer Syntax UID in its file meta information "
                     f"(truncated, or not a DICOM file)")
  try:
    decoder = pixels.get_decoder(syntax)
  except NotImplementedError:
    raise DicomError(f"{path}: transfer syntax {syntax.name} ({syntax}) has no pydicom "
                     f"decoder at all (e.g. video); it is not supported") from None
  if not decoder.is_available:
    raise DicomError(f"{path}: its pixel data is compressed as {syntax.name} ({syntax}) and "
                     f"no installed package decodes it; install one of: "
                     f"{_install_commands(decoder)}")


def _install_commands(decoder) -> str:
  """'pip install ...' for each plugin that could decode, from pydicom's own list."""
  commands = []
  for dependency in decoder.missing_dependencies:  # "pylibjpeg - requires pylibjpeg>=2.0 and ..."
    names = [_PIP_NAMES.get(n, n) for n in re.findall(r"([A-Za-z][\w.-]*)\s*>=", dependency)]
    commands.append(f"`pip install {' '.join(names)}`" if names else dependency)
  return " or ".join(commands)


def _other_decoders(ds: pydicom.Dataset) -> str:
  """A hint for compressed data that the installed plugin (e.g. Pillow) failed to decode."""
  syntax = ds.file_meta.get("TransferSyntaxUID")
  try:
    decoder = pixels.get_decoder(syntax)
  except NotImplementedError:
    return ""
  if not decoder.is_encapsulated or not decoder.missing_dependencies:
    return ""
  return f"; another decoder may succeed: {_install_commands(decoder)}"


def _monochrome_to_uint8(frame: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
  values = pixels.apply_modality_lut(frame, ds)
  voi = _apply_voi(values, ds)
  if voi is not None:
    image = _scale_to_uint8(*voi)
  elif _is_display_ready(ds):
    image = values.astype(np.uint8)
  else:
    lo, hi = np.percentile(values, _ROBUST_PERCENTILES)
    if hi <= lo:  # Nearly constant image: let the few outliers carry the contrast.
      lo, hi = values.min(), values.max()
    image = _scale_to_uint8(values, lo, hi)
  if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
    image = 255 - image  # MONOCHROME1 shows its minimum as white.
  return image


def _apply_voi(values: np.ndarray, ds: pydicom.Dataset):
  """(VOI output, its black value, its white value), or None with no VOI LUT or window."""
  lut = ds.get("VOILUTSequence")
  if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
    entries, first, bits = lut[0].LUTDescriptor
    entries = entries or 2**16  # 0 means 65536 entries.
    # pydicom 3.0.2 indexes an 8-bit LUT through a uint8 array, so LUTs of more than 256
    # entries wrap; entries are stored as 16-bit words either way, so 16 reads them exactly.
    lut[0].LUTDescriptor = [lut[0].LUTDescriptor[0], first, max(bits, 16)]
    table = pixels.apply_voi(np.arange(first, first + entries), ds)
    # Clipped to the LUT's input range (where the LUT clamps anyway) and made integral, so
    # pydicom's uint16 index arithmetic cannot wrap and it does not warn about floats.
    index = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
    return pixels.apply_voi_lut(index, ds), 0.0, float(table.max())
  if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
    black, white = pixels.apply_windowing(np.array([-np.inf, np.inf]), ds)
    return pixels.apply_voi_lut(values, ds), black, white
  return None


def _is_display_ready(ds: pydicom.Dataset) -> bool:
  """Unsigned <= 8-bit data with an identity modality transform (scanned film, US)."""
  return (int(ds.get("BitsStored", 16)) <= 8 and int(ds.get("PixelRepresentation", 0)) == 0
          and "ModalityLUTSequence" not in ds
          and float(ds.get("RescaleSlope", 1)) == 1 and float(ds.get("RescaleIntercept", 0)) == 0)


def _color_to_uint8(frame: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
  bits = int(ds.BitsStored)
  if bits <= 8:
    return frame.astype(np.uint8)
  # One fixed scale for all channels and images: stretching each would shift hues.
  return _scale_to_uint8(frame, 0, 2**bits - 1)


def _scale_to_uint8(values: np.ndarray, black: float, white: float) -> np.ndarray:
  """Maps black..white linearly to 0..255 (clamped, rounded)."""
  if white <= black:
    return np.zeros(values.shape, np.uint8)
  scaled = (values.astype(np.float32) - np.float32(black)) * np.float32(255 / (white - black))
  return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
