"""Tests for pullbacks.images: modes, the preprocessing rule, bad files, sample photos."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from pullbacks import images
from pullbacks.images import (
    DataUnavailableError,
    ImageLoadError,
    builtin_photos,
    imagenette_rows,
    load_image,
    load_images,
    preprocess,
)
from pullbacks.models import imagenet_classes

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _check(x: torch.Tensor) -> None:
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _halves(size=(300, 200), left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another (w, h)."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2 :] = right
    return Image.fromarray(a)


# --------------------------------------------------------------------------- modes


def test_grey_modes_are_replicated(tmp_path):
    grey = Image.new("L", (50, 40), 64)
    for mode, ext in (("L", "png"), ("1", "png"), ("P", "gif")):
        x = load_image(_save(grey.convert(mode), tmp_path / f"{mode}.{ext}"))
        _check(x)
        assert torch.allclose(x[0], x[1]) and torch.allclose(x[1], x[2])
    x = load_image(tmp_path / "L.png")
    assert torch.allclose(x, torch.full_like(x, 2 * 64 / 255 - 1), atol=1e-5)


def test_palette_keeps_colours(tmp_path):
    img = _halves((60, 60), RED, GREEN).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert img.mode == "P"
    x = load_image(_save(img, tmp_path / "p.png"))
    _check(x)
    assert x[0, :, :100].mean() > 0.9 and x[1, :, 124:].mean() > 0.9


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(tmp_path, mode):
    a = np.zeros((64, 64, 4), np.uint8)
    a[..., 3] = 0  # fully transparent black
    a[:, 32:] = (0, 0, 0, 255)  # opaque black right half
    img = Image.fromarray(a, "RGBA").convert(mode)
    x = load_image(_save(img, tmp_path / f"{mode}.png"))
    _check(x)
    assert torch.allclose(x[:, :, :100], torch.ones(3, 224, 100), atol=1e-5)  # white
    assert torch.allclose(x[:, :, 124:], -torch.ones(3, 224, 100), atol=1e-5)  # black


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (80, 80), (255, 0, 0, 0))  # pure cyan
    x = load_image(_save(img, tmp_path / "cmyk.tif"))
    _check(x)
    assert x[0].max() < -0.95 and x[1].min() > 0.95 and x[2].min() > 0.95


def test_16_bit_is_scaled_not_clipped(tmp_path):
    a = np.zeros((40, 40), np.uint16)
    a[:, 20:] = 128 * 257  # mid grey in 16 bits
    a[:, :20] = 65535
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    path = _save(img, tmp_path / "16.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really read back as 16-bit
    x = load_image(path)
    _check(x)
    assert torch.allclose(x[:, :, :100], torch.ones(3, 224, 100), atol=1e-5)
    assert torch.allclose(x[:, :, 124:], torch.full((3, 224, 100), 2 * 128 / 255 - 1), atol=1e-5)


def test_float_and_int32_modes():
    f = Image.fromarray(np.full((40, 40), 0.25, np.float32))
    assert f.mode == "F"
    x = preprocess(f)
    _check(x)
    assert torch.allclose(x, torch.full_like(x, 2 * 64 / 255 - 1), atol=1e-5)  # 0.25 → 64
    i = Image.fromarray(np.full((40, 40), 65535, np.int32))
    assert i.mode == "I"
    assert torch.allclose(preprocess(i), torch.ones(3, 224, 224))


def test_exif_orientation_is_honoured(tmp_path):
    img = _halves((300, 200), RED, BLUE)  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = _save(img, tmp_path / "rotated.jpg", exif=exif, quality=95)
    x = load_image(path)
    _check(x)
    # displayed upright: 200 wide, 300 tall, red on top, blue at the bottom
    top, bottom = x[:, :100], x[:, 124:]
    assert top[0].mean() > 0.8 and top[2].mean() < -0.8
    assert bottom[2].mean() > 0.8 and bottom[0].mean() < -0.8


# --------------------------------------------------------------------------- the rule


def test_square_image_is_resized_whole():
    a = np.zeros((300, 300, 3), np.uint8)
    a[:, :30] = RED  # a thin strip at the left edge: survives only if nothing is cropped
    a[:, 30:] = GREEN
    x = preprocess(Image.fromarray(a))
    _check(x)
    assert x[0, :, :20].mean() > 0.9  # 30/300 of 224 ≈ 22 columns of red
    assert x[1, :, 30:].mean() > 0.9


def test_non_square_is_short_side_256_then_centre_crop():
    # 512×256 in thirds red | green | blue (columns 0..169 | 170..340 | 341..511): the
    # short side is already 256, and the centre crop keeps columns 144..367.
    w, h = 512, 256
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3] = RED
    a[:, w // 3 : 2 * w // 3] = GREEN
    a[:, 2 * w // 3 :] = BLUE
    x = preprocess(Image.fromarray(a))
    _check(x)
    red_cols = (x[0] > 0.9).all(0).nonzero().flatten()
    blue_cols = (x[2] > 0.9).all(0).nonzero().flatten()
    # red 144..169 → crop columns 0..25; blue 341..367 → 197..223
    assert red_cols.min() == 0 and 25 <= red_cols.max() <= 27
    assert blue_cols.max() == 223 and 197 <= blue_cols.min() <= 199
    # a short side other than 256 is scaled first: 1024×512 gives the same picture
    big = preprocess(Image.fromarray(np.repeat(np.repeat(a, 2, 0), 2, 1)))
    assert (big - x).abs().mean() < 0.01


def test_portrait_is_cropped_vertically():
    a = np.zeros((400, 200, 3), np.uint8)  # 200 wide, 400 tall: red top, blue bottom
    a[:200] = RED
    a[200:] = BLUE
    x = preprocess(Image.fromarray(a))
    _check(x)
    # short side 256 → 256×512, centre crop rows 144..367: red rows then blue rows
    assert x[0, :100].mean() > 0.9 and x[2, 124:].mean() > 0.9


def test_preprocess_accepts_arrays_like_pil():
    a = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    assert torch.equal(preprocess(a), preprocess(Image.fromarray(a)))
    assert torch.allclose(preprocess(a.astype(np.float32) / 255), preprocess(a), atol=1e-5)


# --------------------------------------------------------------------------- bad files


def _bad(path, *words):
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    msg = str(err.value)
    assert str(path) in msg
    for w in words:
        assert w in msg.lower(), (w, msg)
    assert isinstance(err.value, ValueError)
    return msg


def test_missing_empty_directory(tmp_path):
    _bad(tmp_path / "nope.jpg", "no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    _bad(tmp_path / "empty.png", "empty", "0 bytes")
    _bad(tmp_path, "directory", "load_images")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated(tmp_path, ext):
    a = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    full = tmp_path / f"full.{ext}"
    Image.fromarray(a).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    load_image(full)  # the intact file loads
    _bad(cut, "truncated")


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n")
    _bad(p, "not an image")


def test_decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")  # > 2× limit: error
    _bad(big, "too large", "max_image_pixels")
    warn = _save(Image.new("RGB", (40, 40)), tmp_path / "warn.png")  # > limit: warning
    _bad(warn, "too large")


def test_huge_declared_png_size(tmp_path):
    # a PNG whose header claims 100000×100000 pixels, with a few bytes of pixel data
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)  # RGB, 8 bits
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    p = tmp_path / "huge.png"
    p.write_bytes(data)
    _bad(p, "too large")


# --------------------------------------------------------------------------- several files


def test_load_images_folder_and_list(tmp_path):
    _save(_halves((64, 64), RED, RED), tmp_path / "b.png")
    _save(_halves((80, 60), BLUE, BLUE), tmp_path / "a.JPG")
    (tmp_path / "readme.txt").write_text("skip me")
    (tmp_path / "sub").mkdir()
    x, names = load_images(tmp_path)
    assert names == ["a", "b"] and x.shape == (2, 3, 224, 224)
    assert x[0, 2].mean() > 0.9 and x[1, 0].mean() > 0.9
    y, names2 = load_images([tmp_path / "b.png", str(tmp_path / "a.JPG")])
    assert names2 == ["b", "a"] and torch.equal(y[0], x[1])


def test_load_images_errors(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageLoadError, match="no image files") as err:
        load_images(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ImageLoadError, match="no image files"):
        load_images([])
    with pytest.raises(ImageLoadError, match="readme.txt"):
        load_images([tmp_path / "readme.txt"])


# --------------------------------------------------------------------------- sample photos


def test_builtin_photos():
    photos = builtin_photos()
    names = imagenet_classes()
    assert [p.name for p in photos] == ["chelsea", "coffee", "rocket", "motorcycle"]
    assert [names[p.label] for p in photos] == ["Egyptian cat", "espresso", "missile", "moped"]
    for p in photos:
        _check(p.image)
        assert p.image.std() > 0.1  # a real picture, not a constant


def _fake_imagenette(root, per_class=2):
    """A tiny Imagenette-shaped tree: <root>/imagenette2-320/val/<wnid>/*.JPEG."""
    colours = {}
    for k, (wnid, _label) in enumerate(images.IMAGENETTE_ROWS):
        folder = root / "imagenette2-320" / "val" / wnid
        folder.mkdir(parents=True)
        for j in range(per_class):
            value = 40 * k + 20 * j + 10  # the first file of class k is 40k + 10
            Image.new("RGB", (320, 240), (value,) * 3).save(folder / f"ILSVRC_{j:03d}.JPEG")
        colours[wnid] = 40 * k + 10
    return colours


def test_imagenette_rows_from_disk(tmp_path, monkeypatch):
    colours = _fake_imagenette(tmp_path)
    monkeypatch.setattr(
        "torchvision.datasets.imagenette.download_and_extract_archive",
        lambda *a, **k: pytest.fail("must not download when the data is on disk"),
    )
    rows = imagenette_rows(tmp_path)
    assert [r.label for r in rows] == [0, 482, 497, 569, 574]
    assert [r.name for r in rows] == ["tench", "cassette player", "church", "garbage truck", "golf ball"]
    for (wnid, _), row in zip(images.IMAGENETTE_ROWS, rows):
        _check(row.image)
        expected = 2 * colours[wnid] / 255 - 1
        assert abs(row.image.mean().item() - expected) < 0.03  # the first file of its class


def test_imagenette_offline_error(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr("torchvision.datasets.imagenette.download_and_extract_archive", no_network)
    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    with pytest.raises(DataUnavailableError) as err:
        imagenette_rows(tmp_path / "data")
    msg = str(err.value)
    parts = ("Imagenette", str(tmp_path / "data"), "builtin_photos()", "could not be downloaded", "n01440764")
    for part in parts:
        assert part in msg, part
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    with pytest.raises(DataUnavailableError, match="download=False"):
        imagenette_rows(tmp_path / "data", download=False)


def test_imagenette_default_root_is_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert images._default_imagenette_root() == tmp_path / ".cache" / "pullbacks" / "imagenette"
