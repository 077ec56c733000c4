"""decode_image: pixels that come out of each format, and DecodeError for every kind of bad file."""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medfit.data import decode
from medfit.data.decode import (
    MAX_PIXELS,
    DecodeError,
    decode_image,
    is_image_path,
    is_junk,
    window_to_uint8,
)
from medfit.errors import DataError


def check_output(pixels: np.ndarray, channels: int) -> None:
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == channels
    assert pixels.flags.c_contiguous and pixels.flags.writeable


# --- Pillow formats -------------------------------------------------------------------------------


def test_8bit_gray_png_round_trips_exactly(tmp_path: Path) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (12, 17), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png")
    check_output(out.pixels, 1)
    np.testing.assert_array_equal(out.pixels[..., 0], gray)
    assert out.group is None and out.note == ""


def test_16bit_png_is_windowed_not_truncated(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4000, 401).round().astype(np.uint16), (6, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")  # Pillow mode I;16
    out = decode_image(tmp_path / "ramp.png")
    check_output(out.pixels, 1)
    row = out.pixels[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255  # 0.5/99.5 percentiles: the ends clip to 0 and 255
    assert (np.diff(row) >= 0).all()  # monotonic along the gradient
    assert len(np.unique(row)) > 200  # spread over the 8-bit range, not saturated at 255
    assert abs(row[200] - 128) <= 2  # value 2000, the middle of the gradient
    assert "16-bit" in out.note and "window" in out.note


def test_16bit_tiff_is_windowed(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 60000, 300).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    row = decode_image(tmp_path / "ramp.tif").pixels[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert abs(row[150] - 128) <= 2


def test_float_tiff_is_windowed(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(-1.0, 1.0, 201, dtype=np.float32), (3, 1))
    Image.fromarray(ramp).save(tmp_path / "f.tif")  # Pillow mode F
    out = decode_image(tmp_path / "f.tif")
    row = out.pixels[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[100] - 128) <= 2
    assert "float" in out.note


def test_rgb_png_and_bmp_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for name in ("c.png", "c.bmp"):
        Image.fromarray(rgb).save(tmp_path / name)
        out = decode_image(tmp_path / name)
        check_output(out.pixels, 3)
        np.testing.assert_array_equal(out.pixels, rgb)


def test_rgb_with_identical_channels_stays_rgb(tmp_path: Path) -> None:
    gray = np.full((4, 4, 3), 77, dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g3.png")
    check_output(decode_image(tmp_path / "g3.png").pixels, 3)


def test_rgba_drops_alpha_and_keeps_colours(tmp_path: Path) -> None:
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, :3, 3] = 0  # fully transparent half: its stored colour must survive
    rgba[:, 3:, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    check_output(out.pixels, 3)
    assert (out.pixels == (10, 200, 30)).all()
    assert "alpha" in out.note


def test_la_becomes_gray(tmp_path: Path) -> None:
    la = np.stack([np.arange(20, dtype=np.uint8).reshape(4, 5) * 10, np.zeros((4, 5), np.uint8)], 2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = decode_image(tmp_path / "la.png")
    check_output(out.pixels, 1)
    np.testing.assert_array_equal(out.pixels[..., 0], la[..., 0])


def test_palette_image_gives_its_colours(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1], [2, 0]], dtype=np.uint8), "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    image.save(tmp_path / "p.png")
    out = decode_image(tmp_path / "p.png")
    check_output(out.pixels, 3)
    expected = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 0, 0)]]
    np.testing.assert_array_equal(out.pixels, np.array(expected, dtype=np.uint8))


def test_gray_palette_image_becomes_gray(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), "P")
    image.putpalette([0, 0, 0, 90, 90, 90, 250, 250, 250])
    image.save(tmp_path / "gp.png")
    out = decode_image(tmp_path / "gp.png")
    check_output(out.pixels, 1)
    assert out.pixels[0, :, 0].tolist() == [0, 90, 250]


def test_cmyk_jpeg_decodes_to_red(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    out = decode_image(tmp_path / "cmyk.jpg")
    check_output(out.pixels, 3)
    red, green, blue = out.pixels.reshape(-1, 3).mean(axis=0)
    assert red > 200 and green < 60 and blue < 60


def _smooth_rgb_jpeg(path: Path, width: int, height: int) -> Path:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=2)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=95)
    return path


@pytest.mark.parametrize(
    ("min_side", "expected"),
    [
        (None, (240, 320)),  # no hint: full size
        (73, (120, 160)),  # 240 // 73 = 3 -> the 1/2 scale (1/4 would be 60 < 73)
        (30, (30, 40)),  # 240 // 30 = 8 -> 1/8
        (130, (240, 320)),  # less than twice the request on the short side: full size
    ],
)
def test_jpeg_draft_decodes_at_the_smallest_scale_that_keeps_min_side(
    tmp_path: Path, min_side: int | None, expected: tuple[int, int]
) -> None:
    path = _smooth_rgb_jpeg(tmp_path / "big.jpg", 320, 240)
    out = decode_image(path, min_side=min_side)
    check_output(out.pixels, 3)
    assert out.pixels.shape[:2] == expected


def test_jpeg_draft_square_is_close_to_the_full_decode(tmp_path: Path) -> None:
    """The DCT-scaled decode, squashed to the cache square, differs from the full decode squashed
    the same way by no more than JPEG noise: the lever saves decode time, not image content."""
    from medfit.data.cache import resize_square

    path = _smooth_rgb_jpeg(tmp_path / "big.jpg", 640, 480)
    full = resize_square(decode_image(path).pixels, 73).astype(float)
    draft = resize_square(decode_image(path, min_side=73).pixels, 73).astype(float)
    assert decode_image(path, min_side=73).pixels.shape[:2] == (120, 160)
    assert np.abs(full - draft).mean() < 2.0


def test_draft_ignores_png_and_gray_jpeg_keeps_one_channel(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "g.png")
    assert decode_image(tmp_path / "g.png", min_side=20).pixels.shape == (200, 200, 1)
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "g.jpg")
    assert decode_image(tmp_path / "g.jpg", min_side=20).pixels.shape == (25, 25, 1)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.full((20, 40), 255, dtype=np.uint8)  # 40 wide, 20 high
    stored[:, :20] = 0  # left half black
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image.save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "o.jpg")
    assert out.pixels.shape == (40, 20, 1)
    # A clockwise quarter turn moves the stored left edge to the top.
    assert out.pixels[:16].max() < 40 and out.pixels[24:].min() > 215
    assert "orientation 6" in out.note


# --- window_to_uint8 -----------------------------------------------------------------------------


def test_window_constant_input_gives_zeros() -> None:
    out = window_to_uint8(np.full((3, 4), 1234.0))
    assert out.dtype == np.uint8 and out.shape == (3, 4) and not out.any()


def test_window_explicit_bounds_map_linearly_and_clip() -> None:
    values = np.array([-50.0, 0.0, 40.0, 100.0, 150.0, np.nan])
    assert window_to_uint8(values, 0, 100).tolist() == [0, 0, 102, 255, 255, 0]


def test_window_in_strips_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(3).normal(1000, 300, (37, 29))
    whole = window_to_uint8(values)
    monkeypatch.setattr(decode, "STRIP_VALUES", 50)  # 1-2 rows per strip
    np.testing.assert_array_equal(window_to_uint8(values), whole)


def test_percentiles_of_a_large_image_come_from_a_strided_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = np.random.default_rng(4).uniform(0, 1000, (300, 300))
    exact = np.percentile(values, decode.PERCENTILES)
    monkeypatch.setattr(decode, "SAMPLE_VALUES", 2500)  # every 6th row and column
    low, high = decode.percentile_window(values)
    assert (low, high) != tuple(exact)  # it really was a subsample ...
    assert abs(low - exact[0]) < 15 and abs(high - exact[1]) < 15  # ... and a close estimate


def test_16bit_decode_never_holds_a_float_copy_of_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ramp = np.tile(np.arange(1000, dtype=np.uint16) * 60, (1000, 1))
    Image.fromarray(ramp).save(tmp_path / "big16.png")
    monkeypatch.setattr(decode, "STRIP_VALUES", 1 << 14)
    monkeypatch.setattr(decode, "SAMPLE_VALUES", 1 << 14)
    tracemalloc.start()
    try:
        out = decode_image(tmp_path / "big16.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.pixels[0, 0, 0] == 0 and out.pixels[0, -1, 0] == 255
    # The 1 MB uint8 result plus strips; one float64 copy alone would be 8 MB (before: ~40 MB).
    assert peak < 2_500_000, f"{peak / 1e6:.1f} MB traced"


def test_memory_guard_counts_bytes_not_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(np.zeros((50, 40), np.uint16)).save(tmp_path / "deep.png")  # 2 bytes/pixel
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(tmp_path / "flat.png")  # 1 byte/pixel
    monkeypatch.setattr(decode, "MAX_DECODE_BYTES", 3000)
    message = expect_decode_error(tmp_path / "deep.png", "deep.png")
    assert "4000 bytes" in message and "3000" in message and "memory guard" in message
    assert decode_image(tmp_path / "flat.png").pixels.shape == (50, 40, 1)  # 2000 bytes: fine
    write_dicom(tmp_path / "deep.dcm", np.zeros((50, 40), np.uint16))
    assert "memory guard" in expect_decode_error(tmp_path / "deep.dcm", "deep.dcm")


# --- DICOM ---------------------------------------------------------------------------------------

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import convert_color_space, get_decoder  # noqa: E402
from pydicom.uid import (  # noqa: E402
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    syntax: UID = ExplicitVRLittleEndian,
    encapsulated: bytes | None = None,
    **elements: Any,
) -> Path:
    """Write `pixels` ((frames,) rows, cols (, 3)) as DICOM; `encapsulated` replaces the data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "OT"
    colour = photometric in ("RGB", "YBR_FULL")
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = pixels.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.tobytes() if encapsulated is None else encapsulate([encapsulated])
    if encapsulated is not None:
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    stored = np.array([[300, 400, 450, 500, 550, 600, 700]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=-55,
        WindowWidth=510,
    )
    out = decode_image(path)
    check_output(out.pixels, 1)
    # Values 2 * stored - 1000 = [-400, -200, -100, 0, 100, 200, 400]; window [-310, 200] maps
    # linearly with slope 255 / 510 = 0.5 inside, and clips at both ends.
    assert out.pixels[0, :, 0].tolist() == [0, 55, 105, 155, 205, 255, 255]
    assert "DICOM window [-310, 200]" in out.note


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.arange(60, dtype=np.uint16).reshape(6, 10) * 50
    m2 = decode_image(write_dicom(tmp_path / "m2.dcm", stored)).pixels
    m1 = decode_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1")).pixels
    assert m1[0, 0, 0] > 250 and m1[-1, -1, 0] < 5  # the lowest stored value comes out brightest
    np.testing.assert_array_equal(m1, 255 - m2)


def test_dicom_voi_lut_is_applied(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.LUTData = np.arange(255, -1, -1, dtype=np.uint16).tobytes()  # a LUT that inverts
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(write_dicom(tmp_path / "voi.dcm", stored, VOILUTSequence=[lut]))
    row = out.pixels.reshape(-1).astype(int)
    assert row[0] == 255 and row[-1] == 0 and (np.diff(row) <= 0).all()
    assert "VOI LUT" in out.note


def test_dicom_group_from_patient_then_study(tmp_path: Path) -> None:
    img = np.zeros((2, 2), dtype=np.uint8)
    patient = write_dicom(tmp_path / "p.dcm", img, PatientID="P-17", StudyInstanceUID="1.2.3")
    study = write_dicom(tmp_path / "s.dcm", img, PatientID="", StudyInstanceUID="1.2.3.4")
    neither = write_dicom(tmp_path / "n.dcm", img)
    assert decode_image(patient).group == "P-17"
    assert decode_image(study).group == "1.2.3.4"
    assert decode_image(neither).group is None


def test_dicom_multiframe_takes_middle_frame(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 5), v, dtype=np.uint8) for v in (0, 100, 200)])
    path = write_dicom(tmp_path / "mf.dcm", frames, frames=3, WindowCenter=127.5, WindowWidth=255)
    out = decode_image(path)
    assert out.pixels.shape == (4, 5, 1) and (out.pixels == 100).all()
    assert "middle frame 1 of 3" in out.note


def test_dicom_rgb_and_ybr(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [40, 80, 120]]], dtype=np.uint8)
    out = decode_image(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))
    check_output(out.pixels, 3)
    np.testing.assert_array_equal(out.pixels, rgb)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = decode_image(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    assert np.abs(out.pixels.astype(int) - rgb).max() <= 3


def test_dicom_palette_colour(tmp_path: Path) -> None:
    lut = {name: np.zeros(256, dtype=np.uint16) for name in ("Red", "Green", "Blue")}
    lut["Red"][1], lut["Blue"][2] = 65535, 65535
    elements: dict[str, Any] = {f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in lut}
    elements |= {f"{c}PaletteColorLookupTableData": t.tobytes() for c, t in lut.items()}
    indices = np.array([[1, 2]], dtype=np.uint8)
    out = decode_image(write_dicom(tmp_path / "pal.dcm", indices, "PALETTE COLOR", **elements))
    assert out.pixels.tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_not_dicom_with_dcm_suffix(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_text("this is a radiology report, not an image\n")
    with pytest.raises(DecodeError, match=r"fake\.dcm: not a DICOM file"):
        decode_image(path)


def write_encapsulated(path: Path, syntax: UID) -> Path:
    junk = b"\xff\x4f\xff\x51 not a real codestream" * 4
    return write_dicom(path, np.zeros((8, 8), dtype=np.uint8), syntax=syntax, encapsulated=junk)


def test_dicom_compressed_without_decoder_names_syntax(tmp_path: Path) -> None:
    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here, so nothing is missing")
    path = write_encapsulated(tmp_path / "jls.dcm", JPEGLSLossless)
    with pytest.raises(DecodeError, match="JPEG-LS Lossless") as caught:
        decode_image(path)
    assert "jls.dcm" in str(caught.value) and "pylibjpeg" in str(caught.value)


def test_dicom_corrupt_compressed_data(tmp_path: Path) -> None:
    path = write_encapsulated(tmp_path / "j2k.dcm", JPEG2000Lossless)
    with pytest.raises(DecodeError, match=r"j2k\.dcm"):
        decode_image(path)


def test_dicom_zero_rows(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "empty.dcm", np.zeros((0, 4), dtype=np.uint8))
    with pytest.raises(DecodeError, match="zero dimension"):
        decode_image(path)


def test_dicom_without_pydicom_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dicom(tmp_path / "x.dcm", np.zeros((2, 2), dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(DecodeError, match=r"medfit\[dicom\]"):
        decode_image(path)


# --- bad inputs ----------------------------------------------------------------------------------


def expect_decode_error(path: Path, name: str, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_image(path, max_pixels=max_pixels)
    message = str(caught.value)
    assert isinstance(caught.value, DataError)
    assert name in message and "\n" not in message
    return message


def test_zero_byte_png(tmp_path: Path) -> None:
    (tmp_path / "empty.png").touch()
    assert "empty" in expect_decode_error(tmp_path / "empty.png", "empty.png")


def test_truncated_jpeg(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "cut.jpg"
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in expect_decode_error(path, "cut.jpg")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    expect_decode_error(tmp_path / "notes.jpg", "notes.jpg")


def test_missing_path(tmp_path: Path) -> None:
    assert "not found" in expect_decode_error(tmp_path / "gone.png", "gone.png")


def test_directory_path(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    assert "directory" in expect_decode_error(tmp_path / "dir.png", "dir.png")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loop(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    expect_decode_error(tmp_path / "a.png", "a.png")


def test_image_over_max_pixels(tmp_path: Path) -> None:
    Image.new("L", (20, 20)).save(tmp_path / "big.png")
    assert "400 pixels" in expect_decode_error(tmp_path / "big.png", "big.png", max_pixels=100)


# --- junk and suffixes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [".DS_Store", "__MACOSX/x.png", "._x.png", ".ipynb_checkpoints/x.png", "a/Thumbs.db"]
)
def test_junk(name: str) -> None:
    assert is_junk(Path(name)) and not is_image_path(Path(name))


@pytest.mark.parametrize("name", ["x.PNG", "y.JPEG", "scan.dcm", "a/b.tiff"])
def test_image_paths(name: str) -> None:
    assert is_image_path(Path(name)) and not is_junk(Path(name))


@pytest.mark.parametrize("name", ["notes.txt", "README", "scan"])
def test_not_image_paths(name: str) -> None:
    assert not is_image_path(Path(name))


def test_pillow_bomb_limit_is_reported_as_decode_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("L", (20, 20)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses above 2 * 100 pixels
    assert "MAX_IMAGE_PIXELS" in expect_decode_error(tmp_path / "bomb.png", "bomb.png")
