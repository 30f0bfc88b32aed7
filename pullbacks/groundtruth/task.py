"""A generated image task whose evidence is known pixel by pixel.

Each 64×64 image shows **one class object** (one of ten shapes: disk, ring, square, frame,
triangle, plus, tee, ell, crescent, star) in a random colour, size, position and rotation,
on a crop of a real photo, with **distractor objects** (bars and elongated ellipses, in the
same colours and sizes) that belong to no class. The mask marks the object's pixels:

* the class is decided by the object's silhouette alone (18-28 px across): colour, size, position and
  rotation are drawn independently of the class, so no pixel outside the object (and no
  colour or position statistic) carries the label;
* the backgrounds are crops of photos (cats, coffee, rockets, retinas, textures...) with
  their own edges and texture, and the distractors add object-like edges: an edge
  detector, or any map that follows contrast rather than the class, is *not* right here.

``generate(n, seed)`` is deterministic: image ``i`` depends only on ``(seed, i)``, so the
first ``k`` images of ``generate(n, seed)`` are ``generate(k, seed)``.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

SIZE = 64
SCALE = SIZE / 224  # the paper's 224-px settings here: patch sides and the ascent's L2 steps (√ of the entry count)
CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "tee", "ell", "crescent", "star")
DISTRACTORS = ("bar", "ellipse")


def _inside(name: str, u: Tensor, v: Tensor) -> Tensor:
    """The shape ``name`` in its own coordinates (``u, v`` in about [-1, 1]): a bool map."""
    r2, m = u * u + v * v, torch.maximum(u.abs(), v.abs())
    if name == "disk":
        return r2 <= 1
    if name == "ring":
        return (r2 <= 1) & (r2 >= 0.55**2)
    if name == "square":
        return m <= 0.8
    if name == "frame":
        return (m <= 0.9) & (m >= 0.5)
    if name == "triangle":
        return (v <= 0.75) & (u.abs() <= (v + 0.95) / 1.7)
    if name == "plus":
        return ((u.abs() <= 0.3) & (v.abs() <= 1)) | ((v.abs() <= 0.3) & (u.abs() <= 1))
    if name == "tee":
        return ((v + 0.7).abs() <= 0.3) & (u.abs() <= 1) | ((u.abs() <= 0.3) & (v.abs() <= 1))
    if name == "ell":
        return ((u + 0.7).abs() <= 0.3) & (v.abs() <= 1) | ((v - 0.7).abs() <= 0.3) & (u.abs() <= 1)
    if name == "crescent":
        return (r2 <= 1) & ((u - 0.5) ** 2 + v * v > 0.8**2)
    if name == "star":
        return r2 <= (0.45 + 0.55 * torch.cos(5 * torch.atan2(v, u)).clamp(min=0) ** 2) ** 2
    if name == "bar":
        return (v.abs() <= 0.16) & (u.abs() <= 1)
    if name == "ellipse":
        return u * u + (v / 0.3) ** 2 <= 1
    raise ValueError(f"unknown shape {name!r}")


_ROWS, _COLS = torch.meshgrid(
    torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
)


def _place(name: str, cy: float, cx: float, half: float, angle: float) -> Tensor:
    """The bool mask of shape ``name`` centred at (cy, cx), half-size ``half`` px, rotated by ``angle``."""
    y, x = (_ROWS + 0.5 - cy) / half, (_COLS + 0.5 - cx) / half
    c, s = math.cos(angle), math.sin(angle)
    return _inside(name, c * x + s * y, -s * x + c * y)


@lru_cache(maxsize=1)
def backgrounds() -> tuple[Tensor, ...]:
    """Real photos and textures bundled with scikit-image (no network), in [-1, 1], short side 256."""
    from skimage import data

    arrays = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.immunohistochemistry(),
        data.hubble_deep_field(),
        data.retina(),
        data.stereo_motorcycle()[0],
        data.brick(),
        data.grass(),
        data.gravel(),
        data.camera(),
        data.coins(),
    ]
    out = []
    for a in arrays:
        t = torch.from_numpy(a.copy()).float()
        t = t[..., None].expand(*t.shape, 3) if t.dim() == 2 else t[..., :3]
        t = t.permute(2, 0, 1)[None] / 127.5 - 1
        scale = 256 / min(t.shape[-2:])
        t = F.interpolate(t, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
        out.append(t[0].contiguous())
    return tuple(out)


def _generator(seed: int, i: int) -> torch.Generator:
    digest = hashlib.sha256(f"groundtruth:{seed}:{i}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def _uniform(g: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _choice(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=g))


def _background(g: torch.Generator) -> Tensor:
    photos = backgrounds()
    photo = photos[_choice(g, len(photos))]
    h, w = photo.shape[-2:]
    crop = int(_uniform(g, 64, 192))
    top, left = _choice(g, h - crop + 1), _choice(g, w - crop + 1)
    x = photo[:, top : top + crop, left : left + crop][None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.flip(-1) if _choice(g, 2) else x


def _colour(g: torch.Generator, under: Tensor) -> Tensor:
    """A random colour that stands out from ``under`` (the pixels it covers, 3×K) by at least 0.5 on average."""
    c = torch.rand(3, generator=g) * 2 - 1
    mean = under.mean(1)
    if (c - mean).abs().mean() < 0.5:
        c = (mean - 0.9 * torch.sign(mean + 1e-6)).clamp(-1, 1)
    return c


def sample(seed: int, i: int, *, draw_object: bool = True) -> tuple[Tensor, int, Tensor]:
    """Image ``i`` of the task seeded ``seed``: (3×64×64 in [-1, 1], its class, its 64×64 bool mask).
    ``draw_object=False``: the same image without its class object (what the mask replaces)."""
    g = _generator(seed, i)
    x = _background(g)
    label = _choice(g, len(CLASSES))
    half = _uniform(g, 9, 14)
    cy, cx = _uniform(g, half + 1, SIZE - half - 1), _uniform(g, half + 1, SIZE - half - 1)
    mask = _place(CLASSES[label], cy, cx, half, _uniform(g, 0, 2 * math.pi))
    keep_out = F.max_pool2d(mask[None, None].float(), 7, 1, 3)[0, 0] > 0  # distractors stay 3 px away
    for _ in range(2 + _choice(g, 2)):
        for _attempt in range(10):
            d_half = _uniform(g, 7, 13)
            dy, dx = _uniform(g, d_half, SIZE - d_half), _uniform(g, d_half, SIZE - d_half)
            d = _place(DISTRACTORS[_choice(g, 2)], dy, dx, d_half, _uniform(g, 0, 2 * math.pi))
            if not (d & keep_out).any() and d.any():
                x[:, d] = _colour(g, x[:, d])[:, None] + 0.05 * torch.randn(3, int(d.sum()), generator=g)
                break
    if draw_object:
        x[:, mask] = _colour(g, x[:, mask])[:, None] + 0.05 * torch.randn(3, int(mask.sum()), generator=g)
    return x.clamp(-1, 1), label, mask


def generate(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` images of the task: ``(images n×3×64×64 in [-1, 1], labels n, masks n×64×64 bool)``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    if n == 0:
        return (
            torch.zeros(0, 3, SIZE, SIZE),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, SIZE, SIZE, dtype=torch.bool),
        )
    images, labels, masks = zip(*(sample(seed, i) for i in range(n)))
    return torch.stack(images), torch.tensor(labels), torch.stack(masks)
