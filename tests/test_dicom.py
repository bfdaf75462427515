"""Tests for medssl_jax.data.dicom on the shared real DICOM files (and edited copies)."""
import pathlib

import numpy as np
import pydicom
import pytest
from pydicom import encaps
from pydicom import pixels
from pydicom import uid
from pydicom.dataset import Dataset

from medssl_jax.data import dicom

_REAL_FILES = ("CT_small.dcm", "MR_small.dcm", "chest_cr_rg1.dcm")


@pytest.fixture(scope="module")
def dicom_dir(shared_data) -> pathlib.Path:
  return shared_data / "dicom"


@pytest.fixture(scope="module")
def chest(dicom_dir) -> np.ndarray:
  return dicom.read_dicom(dicom_dir / "chest_cr_rg1.dcm")


def _save(ds: pydicom.Dataset, tmp_path: pathlib.Path, name: str) -> pathlib.Path:
  path = tmp_path / name
  ds.save_as(path)
  return path


def _linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
  """DICOM PS3.3 C.11.2.1.2.1 LINEAR window with output 0..255."""
  c, w = center - 0.5, width - 1
  y = ((x - c) / w + 0.5) * 255
  y = np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, y))
  return np.rint(y)


@pytest.mark.parametrize("name", _REAL_FILES)
def test_real_files_decode_to_uint8_of_header_size(dicom_dir, name):
  header = pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)
  image = dicom.read_dicom(str(dicom_dir / name))  # str paths work as well as Paths
  assert image.dtype == np.uint8
  assert image.shape == (header.Rows, header.Columns)
  assert int(image.max()) - int(image.min()) > 150  # real contrast, not a flat image


def test_chest_radiograph_lungs_dark_mediastinum_bright(chest):
  """The 15-bit MONOCHROME1 CR reads like a film: air dark, lungs grey, bone white."""
  h, w = chest.shape

  def mean(y0, y1, x0, x1):
    return chest[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].mean()

  # Regions chosen by looking at the image: upper lung fields above the hila and the
  # nodules, the midline from the aortic arch to the heart, air beside the neck.
  mediastinum = mean(0.30, 0.60, 0.45, 0.55)
  lungs = (mean(0.15, 0.35, 0.20, 0.32), mean(0.15, 0.35, 0.66, 0.78))
  air = (mean(0.02, 0.08, 0.02, 0.10), mean(0.02, 0.08, 0.90, 0.98))
  for lung in lungs:
    assert mediastinum > lung + 40
    assert lung > max(air) + 40
  # 15-bit data mapped deliberately: many grey levels survive, not a clipped few.
  assert len(np.unique(chest)) > 150


def test_monochrome1_is_the_inverse_of_monochrome2(dicom_dir, tmp_path):
  for name in ("MR_small.dcm", "CT_small.dcm"):  # windowed, and percentile-mapped
    ds = pydicom.dcmread(dicom_dir / name)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = dicom.read_dicom(_save(ds, tmp_path, name))
    np.testing.assert_array_equal(inverted, 255 - dicom.read_dicom(dicom_dir / name))


@pytest.mark.parametrize("slope,intercept", [(None, None), (0.5, -300.0)])
def test_rescale_slope_and_intercept_are_applied(dicom_dir, tmp_path, slope, intercept):
  """A soft-tissue window in HU only fits the pixels once they are rescaled."""
  ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
  if slope is not None:
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
  ds.WindowCenter, ds.WindowWidth = 40, 400
  hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
  expected = _linear_window(hu, 40, 400)
  assert ((expected > 0) & (expected < 255)).mean() > 0.2  # the window holds real tissue
  image = dicom.read_dicom(_save(ds, tmp_path, "ct.dcm"))
  assert np.abs(image.astype(np.int64) - expected).max() <= 1
  unrescaled = _linear_window(ds.pixel_array.astype(np.float64), 40, 400)
  assert np.abs(image.astype(np.int64) - unrescaled).mean() > 20


@pytest.mark.parametrize("center,width", [(None, None), (300.0, 200.0)])
def test_window_center_and_width_are_used(dicom_dir, tmp_path, center, width):
  ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")  # its header window is 600/1600
  if center is not None:
    ds.WindowCenter, ds.WindowWidth = center, width
  expected = _linear_window(ds.pixel_array.astype(np.float64), float(ds.WindowCenter),
                            float(ds.WindowWidth))
  image = dicom.read_dicom(_save(ds, tmp_path, "mr.dcm"))
  assert np.abs(image.astype(np.int64) - expected).max() <= 1


@pytest.mark.parametrize("bits,vr,table,scale", [
    # 8-bit entries, 4096 of them: pydicom 3.0.2 alone wraps indices past 255.
    (8, "OW", np.minimum(np.arange(4096) // 8, 255), 1.0),
    # Declared 16-bit but filled to 12 bits (a vendor habit): white is the largest entry.
    (16, "US", np.arange(4096), 255 / 4095),
])
def test_voi_lut_sequence_is_applied(dicom_dir, tmp_path, bits, vr, table, scale):
  ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
  item = Dataset()
  item.LUTDescriptor = [4096, 0, bits]
  item.add_new("LUTData", vr, table.astype("<u2").tobytes() if vr == "OW" else table.tolist())
  ds.VOILUTSequence = [item]
  hu = ds.pixel_array.astype(np.int64) + int(ds.RescaleIntercept)  # slope is 1
  expected = np.rint(table[np.clip(hu, 0, 4095)] * scale)
  image = dicom.read_dicom(_save(ds, tmp_path, "lut.dcm"))
  assert np.abs(image.astype(np.int64) - expected).max() <= 1


def test_first_frame_of_8_bit_multi_frame_is_kept_as_stored(dicom_dir, tmp_path):
  frames = np.random.default_rng(0).integers(0, 256, (3, 12, 20), dtype=np.uint8)
  ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
  del ds.WindowCenter, ds.WindowWidth
  ds.set_pixel_data(frames, "MONOCHROME2", 8)
  np.testing.assert_array_equal(dicom.read_dicom(_save(ds, tmp_path, "mf.dcm")), frames[0])


@pytest.mark.parametrize("dtype,bits", [(np.uint8, 8), (np.uint16, 12)])
def test_rgb_keeps_colours_on_one_fixed_scale(dicom_dir, tmp_path, dtype, bits):
  rgb = np.random.default_rng(1).integers(0, 2**bits, (10, 14, 3)).astype(dtype)
  ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
  del ds.WindowCenter, ds.WindowWidth
  ds.set_pixel_data(rgb, "RGB", bits)
  image = dicom.read_dicom(_save(ds, tmp_path, "rgb.dcm"))
  assert image.dtype == np.uint8 and image.shape == (10, 14, 3)
  np.testing.assert_array_equal(image, np.rint(rgb * (255 / (2**bits - 1))))


def test_unsupported_photometric_interpretation(dicom_dir, tmp_path):
  ds = pydicom.dcmread(dicom_dir / "MR_small.dcm")
  ds.PhotometricInterpretation = "PALETTE COLOR"
  path = _save(ds, tmp_path, "palette.dcm")
  with pytest.raises(dicom.DicomError, match="PALETTE COLOR") as e:
    dicom.read_dicom(path)
  assert str(path) in str(e.value)


def _with_syntax(dicom_dir, tmp_path, syntax) -> pathlib.Path:
  """CT_small relabelled as `syntax`, its pixels wrapped in encapsulated fragments."""
  ds = pydicom.dcmread(dicom_dir / "CT_small.dcm")
  ds.file_meta.TransferSyntaxUID = syntax
  ds.PixelData = encaps.encapsulate([ds.PixelData])
  ds["PixelData"].VR = "OB"
  ds["PixelData"].is_undefined_length = True
  return _save(ds, tmp_path, "compressed.dcm")


def test_compressed_without_decoder_names_the_packages(dicom_dir, tmp_path):
  candidates = (uid.JPEGLSLossless, uid.JPEGLosslessSV1, uid.HTJ2KLossless, uid.JPEG2000Lossless)
  missing = [s for s in candidates if not pixels.get_decoder(s).is_available]
  if not missing:
    pytest.skip("every candidate compressed syntax has a decoder installed here")
  syntax = missing[0]
  path = _with_syntax(dicom_dir, tmp_path, syntax)
  with pytest.raises(dicom.DicomError) as e:
    dicom.read_dicom(path)
  message = str(e.value)
  for part in (str(path), syntax.name, str(syntax), "pip install pylibjpeg"):
    assert part in message


def test_transfer_syntax_pydicom_cannot_decode(dicom_dir, tmp_path):
  path = _with_syntax(dicom_dir, tmp_path, uid.MPEG2MPML)
  with pytest.raises(dicom.DicomError, match="MPEG2") as e:
    dicom.read_dicom(path)
  assert str(path) in str(e.value)


def test_missing_file(tmp_path):
  path = tmp_path / "absent.dcm"
  with pytest.raises(FileNotFoundError, match="absent.dcm"):
    dicom.read_dicom(path)


@pytest.mark.parametrize("keep", [200, 400, 1500, -1000])  # in file meta, header, pixels
def test_truncated_file(dicom_dir, tmp_path, keep):
  path = tmp_path / "truncated.dcm"
  path.write_bytes((dicom_dir / "CT_small.dcm").read_bytes()[:keep])
  with pytest.raises(dicom.DicomError, match="truncated") as e:
    dicom.read_dicom(path)
  assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "content", [b"not a DICOM file\n" * 50, b"", b"\x89PNG\r\n\x1a\n" + bytes(300)])
def test_non_dicom_file(tmp_path, content):
  path = tmp_path / "image.dcm"
  path.write_bytes(content)
  with pytest.raises(dicom.DicomError) as e:
    dicom.read_dicom(path)
  assert str(path) in str(e.value)
  assert isinstance(e.value, ValueError)  # callers catching ValueError still catch it
