"""Images in, ``[-1, 1]`` tensors out (docs/method.md, "Input space" and "The figure").

The preprocessing rule (the demo's): a square image is resized to 224×224; any other is
resized (bilinear, antialiased) so its short side is 256, then centre-cropped to 224×224.
Pixels map to ``x = 2 * pixel - 1``. An image under 32 pixels a side is refused (``MIN_SIDE``): the
resize would be mostly interpolation.

Colour modes are converted to RGB as follows: transparent images (RGBA, LA, P with
transparency, ...) are composited on white, since transparent areas are background and
black would read as content; 16-bit greyscale (``I;16``) is scaled by 255/65535, not
clipped; 32-bit integer (``I``) is taken as 16-bit when its values fit 0..65535; float
(``F``) is taken as 0..1 when it fits. Anything else outside those ranges is min-max
stretched. CMYK uses Pillow's conversion (ICC profiles are not applied).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGENETTE_ROWS",
    "DataUnavailableError",
    "ImageLoadError",
    "Photo",
    "builtin_photos",
    "imagenette_rows",
    "load_image",
    "load_images",
    "preprocess",
    "to_rgb",
]

SIZE = 224
MIN_SIDE = 32  # the smallest side an image may have (the smallest ImageNet-style input a CNN's strides leave 1 px of)
SHORT_SIDE = 256
MAX_ASPECT = 20  # longer side / shorter side accepted by the preprocessing
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
)
# The paper's Figure 1 rows: (WordNet id, ImageNet class id)
IMAGENETTE_ROWS = (
    ("n01440764", 0),  # tench
    ("n02979186", 482),  # cassette player
    ("n03028079", 497),  # church
    ("n03417042", 569),  # garbage truck
    ("n03445777", 574),  # golf ball
)

PathLike = str | os.PathLike


class ImageLoadError(ValueError):
    """A file that cannot be used as an image; the message names the file and the fix.
    ``elsewhere``: the message for the command line and the app, where a fix that only
    Python can make does not apply (None: the same message)."""

    def __init__(self, message: str, elsewhere: str | None = None) -> None:
        super().__init__(message)
        self.elsewhere = elsewhere


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and cannot be downloaded."""


@dataclass
class Photo:
    """A preprocessed photo: ``image`` is 3×224×224 in ``[-1, 1]``, ``label`` an ImageNet id."""

    name: str
    image: torch.Tensor
    label: int


# --------------------------------------------------------------------------- conversion


def _to_uint8(a: np.ndarray, full_scale: float | None) -> np.ndarray:
    a = a.astype(np.float64)
    if full_scale is None or a.size == 0 or a.min() < 0 or a.max() > full_scale:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        a = a / full_scale
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (rules in the module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(np.asarray(img), 65535.0)).convert("RGB")
    if mode == "I":
        return Image.fromarray(_to_uint8(np.asarray(img), 65535.0)).convert("RGB")
    if mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), 1.0)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def preprocess(image: Image.Image | np.ndarray) -> torch.Tensor:
    """The paper's rule (module docstring): a PIL image or HxW[xC] array → 3×224×224 in [-1, 1].

    Arrays are uint8, or floats in [0, 1], channels last (HxW or HxWxC).
    """
    if isinstance(image, torch.Tensor):
        raise TypeError(
            "preprocess takes a PIL image or an HxWxC array, got a torch tensor; an image tensor is "
            "already preprocessed (3xHxW in [-1, 1]), or convert it: preprocess(t.permute(1, 2, 0).numpy())"
        )
    if isinstance(image, np.ndarray):
        arr = image
        if arr.size == 0:
            raise ImageLoadError(f"the image array is empty (shape {arr.shape})")
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            raise ImageLoadError(
                f"the image array has shape {arr.shape}, channels first; preprocess wants "
                "channels last: arr.transpose(1, 2, 0)"
            )
        if arr.dtype != np.uint8 and not np.isfinite(arr).all():
            raise ImageLoadError("the image array holds NaN or infinite values; a picture needs finite pixels")
        if arr.dtype != np.uint8:
            arr = _to_uint8(arr, 1.0)
        image = Image.fromarray(arr)
    img = to_rgb(image)
    w, h = img.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageLoadError(
            f"the image is {w}×{h} pixels, more than {MAX_ASPECT}:1; resizing its short side to "
            f"{SHORT_SIDE} would need a {max(w, h) * SHORT_SIDE // min(w, h)}-pixel long side. Crop it first."
        )
    if min(w, h) < MIN_SIDE:
        raise ImageLoadError(
            f"the image is {w}×{h} pixels, under {MIN_SIDE} a side: resized to {SIZE}×{SIZE} for the model it "
            "would be mostly interpolation, and an explanation of it would mean little. Use a larger image"
        )
    if w == h:
        img = img.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    else:
        scale = SHORT_SIDE / min(w, h)
        nw, nh = (
            (SHORT_SIDE, max(SHORT_SIDE, round(h * scale)))
            if w < h
            else (max(SHORT_SIDE, round(w * scale)), SHORT_SIDE)
        )
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
        img = img.crop((left, top, left + SIZE, top + SIZE))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return (x / 255.0 * 2 - 1).contiguous()


# --------------------------------------------------------------------------- files


def load_image(path: PathLike) -> torch.Tensor:
    """Load one image file as a 3×224×224 float32 tensor in ``[-1, 1]``.

    EXIF orientation is honoured. Any problem raises :class:`ImageLoadError`.
    """
    p = Path(os.fspath(path)).expanduser()

    def fail(problem: str, fix: str) -> ImageLoadError:
        return ImageLoadError(f"cannot load image {str(p)!r}: {problem}. {fix}".rstrip())

    if p.is_dir():
        error = fail("it is a directory", "Pass an image file, or use load_images(folder).")
        error.elsewhere = str(fail("it is a directory", "Pass an image file, or the folder to --images."))
        raise error
    if not p.exists():
        raise fail("no such file", "Check the path (relative paths start at the current folder).")
    if p.stat().st_size == 0:
        raise fail("the file is empty (0 bytes)", "Copy or download the image again.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as opened:
                opened.load()
                img = ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        error = fail(
            f"it is too large to open safely ({e})",
            "Downscale it first, or, if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS.",
        )
        error.elsewhere = str(fail(f"it is too large to open safely ({e})", "Downscale it first."))
        raise error from e
    except UnidentifiedImageError as e:
        raise fail(
            "not an image, or in a format Pillow cannot read",
            f"Use a {'/'.join(x.lstrip('.').upper() for x in IMAGE_EXTENSIONS[:6])} file.",
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        truncated = "truncated" in str(e).lower() or isinstance(e, EOFError)
        problem = "the file is truncated or corrupt" if truncated else "the file is corrupt"
        raise fail(
            f"{problem} ({type(e).__name__}: {e})",
            "Copy or download the image again, or re-save it with an image editor.",
        ) from e
    try:
        rgb = to_rgb(img)
    except (OSError, ValueError) as e:
        raise fail(
            f"its colour mode {img.mode!r} cannot be converted to RGB ({e})",
            "Re-save it as an 8-bit RGB or greyscale image.",
        ) from e
    try:
        return preprocess(rgb)
    except ImageLoadError as e:  # the picture's shape: say which file
        raise fail(str(e).rstrip("."), "") from None


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)


def load_images(paths_or_folder: PathLike | Iterable[PathLike]) -> tuple[torch.Tensor, list[str]]:
    """Load a folder (its image files, sorted) or a list of files: (N×3×224×224, names).

    Names are the file names without extension.
    """
    if isinstance(paths_or_folder, (str, os.PathLike)):
        p = Path(os.fspath(paths_or_folder)).expanduser()
        if p.is_dir():
            files = _image_files(p)
            if not files:
                raise ImageLoadError(
                    f"the folder {str(p)!r} has no image files (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}). Put photos there or pass a list of files."
                )
        else:
            files = [p]
    else:
        files = [Path(os.fspath(f)).expanduser() for f in paths_or_folder]
        if not files:
            raise ImageLoadError("no image files given: pass a non-empty list or a folder.")
    images = [load_image(f) for f in files]
    return torch.stack(images), [f.stem for f in files]


def skipped_files(folder: PathLike) -> list[Path]:
    """The files in ``folder`` that :func:`load_images` passes over (not an image extension)."""
    p = Path(os.fspath(folder)).expanduser()
    if not p.is_dir():
        return []
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() not in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- sample photos


def builtin_photos() -> list[Photo]:
    """Four photos bundled with scikit-image (no network), with their ImageNet labels."""
    from skimage import data

    left, _right, _disparity = data.stereo_motorcycle()
    sources = (
        ("chelsea", data.chelsea(), 285),  # Egyptian cat
        ("coffee", data.coffee(), 967),  # espresso
        ("rocket", data.rocket(), 657),  # missile
        ("motorcycle", left, 665),  # moped
    )
    return [Photo(name, preprocess(arr), label) for name, arr, label in sources]


def _default_imagenette_root() -> Path:
    return Path("~/.cache/pullbacks/imagenette").expanduser()


def imagenette_rows(root: PathLike | None = None, download: bool = True, *, size: str | None = None) -> list[Photo]:
    """The paper's five Figure 1 rows: the first validation image of each class.

    Tench, cassette player, church, garbage truck, golf ball (ImageNet 0, 482, 497, 569,
    574) from torchvision's ``Imagenette`` (``split="val"``). ``size``: ``"full"``,
    ``"320px"`` or ``None`` (whichever is on disk, else download ``"320px"``, the
    smaller archive; 320 px is above the 256 px the rule resizes to).
    """
    from torchvision.datasets import Imagenette

    from .classes import imagenet_classes

    root_p = Path(os.fspath(root)).expanduser() if root is not None else _default_imagenette_root()
    archives = getattr(Imagenette, "_ARCHIVES", {})
    folders = {s: Path(urlparse(url).path).stem for s, (url, _md5) in archives.items()}
    if size is None:
        on_disk = [s for s in ("full", "320px") if s in folders and (root_p / folders[s]).is_dir()]
        size = on_disk[0] if on_disk else "320px"
    if size not in ("full", "320px", "160px"):
        raise ValueError(f"size must be 'full', '320px', '160px' or None, got {size!r}")
    archive_url = archives[size][0] if size in archives else f"the Imagenette {size} archive"
    val_example = root_p / folders.get(size, "<extracted folder>") / "val" / IMAGENETTE_ROWS[0][0]

    def unavailable(reason: str) -> DataUnavailableError:
        return DataUnavailableError(
            f"The Imagenette data set ({size}) is not available: {reason}\n"
            f"It is looked for in the folder\n    {root_p}\n"
            f"To use it offline, download {archive_url} elsewhere and extract it there, so "
            f"that {val_example} holds JPEG files, or pass root=... pointing at such a folder. "
            f"builtin_photos() works offline."
        )

    try:
        ds = Imagenette(
            str(root_p), split="val", size=size, download=download, loader=lambda path: path
        )  # no decoding while scanning labels
    except Exception as e:  # URLError, OSError, checksum or "Dataset not found" errors
        what = "it is not on disk" + (" and could not be downloaded" if download else " (download=False)")
        raise unavailable(f"{what} ({type(e).__name__}: {e}).") from e

    names = imagenet_classes()
    rows: list[Photo] = []
    for wnid, label in IMAGENETTE_ROWS:
        if wnid not in ds.wnid_to_idx:
            raise unavailable(f"the class folder {wnid} ({names[label]}) is missing.")
        idx = ds.wnid_to_idx[wnid]
        first = next((ds[i][0] for i in range(len(ds)) if ds[i][1] == idx), None)
        if first is None:
            raise unavailable(f"the class folder {wnid} ({names[label]}) has no images.")
        rows.append(Photo(names[label], load_image(first), label))
    return rows
