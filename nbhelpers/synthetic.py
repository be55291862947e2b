"""The synthetic stand-in for SVHN: a generator of house-number images and its on-disk cache.

When real SVHN is not on disk and cannot be downloaded, the series trains on the synthetic
stand-in instead. Each image is a 3x32x32 RGB crop like SVHN's cropped-digit format:
one digit in the centre, often parts of its neighbours cut at the left and right
edge, in one of several fonts and stroke weights, with varied colours and contrast,
a small tilt and slant, jitter of size and position, uneven lighting, blur and
noise. Class frequencies follow SVHN's train split, split sizes are SVHN's.

How it is made, and why it is fast: the ten digits of each font are rasterised once
with matplotlib's FreeType wrapper (`FT2Font`) into a small "glyph bank"; a batch of
images is then composed with vectorised torch operations (`F.grid_sample` for the
per-image affine transform, per-image colours, a separable
blur, noise). The 9 of every font is its 6 rotated by 180 degrees, so 6 and 9 differ
only by orientation -- a rotation augmentation of 0..180 degrees turns one class into
the other, as it does on real SVHN.

Difficulty (measured with generator version 2): a small ReLU + BatchNorm CNN (six 3x3 convs
32-32/64-64/128-128 with max pooling, Linear 2048->128->10, Adam, learning rate 2e-3, batch 128)
trained for 2 epochs on 20,000 synthetic train images reaches 95.6% accuracy on 5,000 synthetic
test images (90.6% after 1 epoch); untrained it scores 11.3%, and always answering the most
frequent class (1) scores 18.9%. For comparison, the same network reached 93.2% on real SVHN
after 10 epochs on all 73,257 train images (the tutorial's reference fix).

Public API:
    generate(n, seed=0) -> (images uint8 (n,3,32,32), labels int64 (n,))
    load_synthetic(split, n=None, *, seed=0, data_dir=None, cache=True, progress=False)
    glyph_bank(), cache_path(split, n, seed, data_dir=None)
    SVHN_SPLIT_SIZES, SVHN_CLASS_COUNTS, SVHN_CLASS_PROBS, GENERATOR_VERSION
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import ft2font
from tqdm.auto import tqdm

from nbhelpers import validate
from nbhelpers.env import default_data_dir
from nbhelpers.files import atomic_path
from nbhelpers.svhn import SVHN_SPLIT_SIZES

#: Bump whenever the images for a given (split, n, seed) change; it is part of the cache file name.
GENERATOR_VERSION = 2

#: Images per class (label 0..9; SVHN stores the digit 0 as label 10) in SVHN's train split,
#: counted from the labels of train_32x32.mat (http://ufldl.stanford.edu/housenumbers/,
#: Netzer et al., 2011). The counts add up to 73,257, the size of the split.
SVHN_CLASS_COUNTS: tuple[int, ...] = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)

#: Class frequencies of SVHN's train split (SVHN_CLASS_COUNTS / 73,257): the digit 1 is the most
#: frequent (18.9%), 9 the rarest (6.4%).
SVHN_CLASS_PROBS: tuple[float, ...] = tuple(c / sum(SVHN_CLASS_COUNTS) for c in SVHN_CLASS_COUNTS)
_PROBS = torch.tensor(SVHN_CLASS_PROBS, dtype=torch.float64)
_PROBS = _PROBS / _PROBS.sum()  # as drawn since version 1 (bit for bit)

# Fonts shipped with matplotlib (text fonts only; no symbol or math fonts). Upright faces only:
# slant comes from the per-image shear, which treats 6 and 9 alike.
_FONT_FILES = (
    "DejaVuSans.ttf DejaVuSans-Bold.ttf DejaVuSansMono.ttf DejaVuSansMono-Bold.ttf "
    "DejaVuSerif.ttf DejaVuSerif-Bold.ttf STIXGeneral.ttf STIXGeneralBol.ttf"
).split()
# Stroke-weight variants: erosion (<0) or dilation (>0) radius in high-resolution pixels (a quarter
# of a bank pixel each). Regular faces are only thickened: thinning them breaks serif hairlines.
_WEIGHT_RADII = {"regular": (0, 2, 4), "bold": (-2, 0, 3)}

_SIZE = 32  # output images are _SIZE x _SIZE
_BANK = 32  # glyph-bank canvas is _BANK x _BANK
_GLYPH_HEIGHT = 24.0  # digit height in the glyph bank, in bank pixels
_OVERSAMPLE = 4  # glyphs are rasterised at _OVERSAMPLE x the bank resolution, then area-averaged
_CHUNK = 1024  # images drawn per random stream; generate(n) is a prefix of generate(m > n)

_STREAM_GENERATE, _STREAM_TRAIN, _STREAM_TEST = 0, 1, 2
_SPLIT_STREAMS = {"train": _STREAM_TRAIN, "test": _STREAM_TEST}


# ----------------------------------------------------------------------------- glyph bank


def _no_hinting_flag():
    """FreeType's "no hinting" load flag across matplotlib versions (enum since 3.10)."""
    load_flags = getattr(ft2font, "LoadFlags", None)
    return load_flags.NO_HINTING if load_flags is not None else ft2font.LOAD_NO_HINTING


def _render_digit(font: ft2font.FT2Font, digit: int) -> np.ndarray:
    """Coverage bitmap (float32 in [0, 1], tightly cropped) of one digit in `font`'s current size."""
    font.set_text(str(digit), 0.0, flags=_no_hinting_flag())
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.nonzero(img > 0)
    return img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _render_font(path: Path) -> list[np.ndarray]:
    """High-resolution crops of the digits 0..8 of one font, scaled so the tallest is
    `_GLYPH_HEIGHT * _OVERSAMPLE` pixels high (the 9 is made from the 6 later)."""
    font = ft2font.FT2Font(str(path))
    probe = 100.0
    font.set_size(probe, 72)
    tallest = max(_render_digit(font, d).shape[0] for d in range(10))
    font.set_size(probe * _GLYPH_HEIGHT * _OVERSAMPLE / tallest, 72)
    return [_render_digit(font, d) for d in range(9)]


def _place(crop: np.ndarray, radius: int) -> torch.Tensor:
    """Centre a high-resolution crop on the oversampled bank canvas, thin or thicken its strokes
    by `radius` high-resolution pixels, and area-average it down to (_BANK, _BANK) float32."""
    hi = _BANK * _OVERSAMPLE
    canvas = torch.zeros(1, 1, hi, hi)
    h, w = crop.shape
    top, left = (hi - h) // 2, (hi - w) // 2
    canvas[0, 0, top : top + h, left : left + w] = torch.from_numpy(crop)
    if radius:
        k = 2 * abs(radius) + 1
        sign = 1.0 if radius > 0 else -1.0
        canvas = sign * F.max_pool2d(sign * canvas, k, stride=1, padding=abs(radius))
    return F.avg_pool2d(canvas, _OVERSAMPLE)[0, 0]


@functools.lru_cache(maxsize=1)
def glyph_bank() -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-rendered digit masks every image of the synthetic stand-in is composed from.

    Returns:
        masks: float32 tensor (S, 10, 32, 32) with values in [0, 1] (ink coverage); S = fonts
            x stroke weights. Each digit is centred on its canvas and 24 pixels high.
            ``masks[:, 9]`` equals ``masks[:, 6]`` rotated by 180 degrees, exactly.
        widths: float32 tensor (S, 10), the ink width of each digit in bank pixels.

    Rendered once per process (well under a second) and kept in memory; do not modify them.
    """
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    styles = []
    for name in _FONT_FILES:
        crops = _render_font(font_dir / name)
        for radius in _WEIGHT_RADII["bold" if "Bol" in name else "regular"]:
            digits = [_place(c, radius) for c in crops]
            digits.append(torch.flip(digits[6], dims=(0, 1)))  # 9 = 6 rotated by 180 degrees
            styles.append(torch.stack(digits))
    masks = torch.stack(styles).contiguous()
    inked = (masks > 0.1).any(dim=2).float()  # (S, 10, W): columns that carry ink
    cols = torch.arange(_BANK, dtype=torch.float32)
    first = torch.where(inked > 0, cols, float(_BANK)).amin(dim=-1)
    last = torch.where(inked > 0, cols, -1.0).amax(dim=-1)
    return masks, (last - first + 1).clamp(min=1.0)


# ----------------------------------------------------------------------------- generation


def _chunk_generator(stream: int, seed: int, chunk: int) -> torch.Generator:
    """Independent torch.Generator for one chunk of one random stream (NumPy SeedSequence mixing)."""
    state = np.random.SeedSequence([stream, seed, chunk]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n float32 draws from U(low, high)."""
    return low + (high - low) * torch.rand(n, generator=g)


def _draw_params(g: torch.Generator, n: int) -> dict[str, torch.Tensor]:
    """All random choices for n images, drawn in a fixed order (so results are reproducible)."""
    n_styles = glyph_bank()[0].shape[0]
    return {
        "label": torch.multinomial(_PROBS, n, replacement=True, generator=g),
        "style": torch.randint(n_styles, (n,), generator=g),
        "left": torch.randint(10, (n,), generator=g),
        "right": torch.randint(10, (n,), generator=g),
        "has_left": torch.rand(n, generator=g) < 0.8,
        "has_right": torch.rand(n, generator=g) < 0.8,
        "height": _uniform(g, n, 13.0, 28.0),  # digit height in output pixels
        "stretch": _uniform(g, n, 0.75, 1.3),  # width / height relative to the font's design
        "angle": _uniform(g, n, -15.0, 15.0) * (math.pi / 180.0),  # tilt in radians
        "shear": _uniform(g, n, -0.3, 0.3),  # slant (x shift per unit of y)
        "dx": _uniform(g, n, -3.5, 3.5),  # offset of the centre digit, output pixels
        "dy": _uniform(g, n, -3.0, 3.0),
        "gap": _uniform(g, n, -1.5, 5.0),  # space between digits, bank pixels
        "bg_lum": _uniform(g, n, 0.05, 0.95),
        "contrast": _uniform(g, n, 0.2, 0.8),
        "dark_on_light": torch.rand(n, generator=g) < 0.5,
        "bg_tint": torch.randn(n, 3, generator=g) * _uniform(g, n, 0.0, 0.2)[:, None],
        "fg_tint": torch.randn(n, 3, generator=g) * _uniform(g, n, 0.0, 0.2)[:, None],
        "light_grad": torch.randn(n, 2, generator=g) * 0.15,  # lighting gradient across the crop
        # Colour blotches and texture, in units of the digit's contrast (so the digit stays visible).
        "clutter": torch.randn(n, 3, 4, 4, generator=g)
        * _uniform(g, n, 0.0, 0.25)[:, None, None, None],
        "texture": torch.randn(n, 3, 8, 8, generator=g)
        * _uniform(g, n, 0.0, 0.1)[:, None, None, None],
        # Smooth random displacement of the output pixels (output pixels), varies the glyph shapes.
        "warp": torch.randn(n, 2, 4, 4, generator=g)
        * _uniform(g, n, 0.0, 1.0)[:, None, None, None],
        # A straight edge near one side (sign border, wall, window frame), painted over the digits.
        "has_edge": torch.rand(n, generator=g) < 0.4,
        "edge_side": torch.randint(4, (n,), generator=g),  # 0 left, 1 right, 2 top, 3 bottom
        "edge_dist": _uniform(g, n, 11.0, 15.0),  # distance from the centre, output pixels
        "edge_angle": _uniform(g, n, -10.0, 10.0) * (math.pi / 180.0),
        "edge_rgb": torch.rand(n, 3, generator=g),
        # A thin line across the crop (wire, crack, shadow of a bar), also painted over the digits.
        "has_line": torch.rand(n, generator=g) < 0.2,
        "line_angle": torch.rand(n, generator=g) * math.pi,
        "line_offset": _uniform(g, n, -12.0, 12.0),  # signed distance from the centre, pixels
        "line_width": _uniform(g, n, 0.6, 1.6),  # pixels
        "line_rgb": torch.rand(n, 3, generator=g),
        "blur": _uniform(g, n, 0.4, 1.5),  # Gaussian blur sigma for a 20-pixel digit, output pixels
        "noise": _uniform(g, n, 0.01, 0.1),  # pixel noise standard deviation, in units of contrast
        "pixel_noise": torch.randn(n, 3, _SIZE, _SIZE, generator=g),
    }


def _affine_grid(
    a_inv: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, warp: torch.Tensor
) -> torch.Tensor:
    """Sampling grid (n*3, 32, 32, 2) like F.affine_grid(align_corners=False), for the linear map
    a_inv (n, 2, 2) shared by the 3 slots of an image and per-slot shifts (n, 3), applied after
    displacing the output pixels by `warp` (n, 2, 32, 32) normalised units; faster than affine_grid."""
    c = (torch.arange(_SIZE, dtype=torch.float32) + 0.5) / (_SIZE / 2) - 1.0
    x = c[None, None, None, :] + warp[:, None, 0]  # (n, 1, 32, 32)
    y = c[None, None, :, None] + warp[:, None, 1]
    m = a_inv[:, None, :, :, None, None]  # (n, 1, 2, 2, 1, 1)
    gx = m[:, :, 0, 0] * x + m[:, :, 0, 1] * y + shift_x[:, :, None, None]
    gy = m[:, :, 1, 0] * x + m[:, :, 1, 1] * y + shift_y[:, :, None, None]
    return torch.stack([gx, gy], dim=-1).reshape(-1, _SIZE, _SIZE, 2)


def _ink_masks(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Ink coverage (n, 1, 32, 32) float32 of the centre digit and its cut-off neighbours."""
    masks, widths = glyph_bank()
    n = p["label"].shape[0]
    style = p["style"]
    digits = torch.stack([p["left"], p["label"], p["right"]], dim=1)  # (n, 3)
    w = widths[style[:, None], digits]  # (n, 3) bank pixels
    # Horizontal position of each slot's centre in the centre digit's frame (bank pixels).
    off_left = -(w[:, 0] / 2 + p["gap"] + w[:, 1] / 2)
    off_right = w[:, 1] / 2 + p["gap"] + w[:, 2] / 2
    offsets = torch.stack([off_left, torch.zeros(n), off_right], dim=1)
    # Forward map glyph frame -> output: A = R(angle) @ Shear @ diag(sx, s); we need A^{-1}.
    s = p["height"] / _GLYPH_HEIGHT
    sx = s * p["stretch"]
    cos, sin, sh = torch.cos(p["angle"]), torch.sin(p["angle"]), p["shear"]
    a = torch.stack(
        [
            torch.stack([cos * sx, (cos * sh - sin) * s], -1),
            torch.stack([sin * sx, (sin * sh + cos) * s], -1),
        ],
        dim=-2,
    )  # (n, 2, 2)
    a_inv = torch.linalg.inv(a)
    # affine_grid works in normalised coordinates ([-1, 1] across 32 pixels on both canvases):
    # glyph = A^{-1} (out - t) - offset, with t the centre digit's position relative to the centre.
    t = torch.stack([p["dx"], p["dy"]], dim=1) / (_SIZE / 2)
    base = -(a_inv @ t[:, :, None])[:, :, 0]  # (n, 2)
    shift_x = base[:, None, 0] - offsets / (_BANK / 2)  # (n, 3)
    shift_y = base[:, None, 1].expand(n, 3)
    src = masks[style[:, None].expand(n, 3), digits].reshape(n * 3, 1, _BANK, _BANK)
    up = _upsample_matrix(p["warp"].shape[-1], _SIZE)
    warp = up @ p["warp"] @ up.T / (_SIZE / 2)  # (n, 2, 32, 32), normalised units
    grid = _affine_grid(a_inv, shift_x, shift_y, warp)
    ink = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    present = torch.stack([p["has_left"], torch.ones(n, dtype=torch.bool), p["has_right"]], dim=1)
    ink = ink.reshape(n, 3, _SIZE, _SIZE) * present[:, :, None, None]
    return ink.amax(dim=1, keepdim=True)


def _colours(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and foreground RGB colours (n, 3) in [0, 1], with the drawn luminance contrast."""
    bg = p["bg_lum"]
    sign = torch.where(p["dark_on_light"], -1.0, 1.0)
    # Flip the direction when the drawn contrast does not fit into [0, 1].
    sign = torch.where(bg + sign * p["contrast"] > 1.0, -1.0, sign)
    sign = torch.where(bg + sign * p["contrast"] < 0.0, 1.0, sign)
    fg = (bg + sign * p["contrast"]).clamp(0.0, 1.0)
    # Zero-mean tints change the hue but keep the luminance (mean of R, G, B), hence the contrast.
    bg_tint = p["bg_tint"] - p["bg_tint"].mean(dim=1, keepdim=True)
    fg_tint = p["fg_tint"] - p["fg_tint"].mean(dim=1, keepdim=True)
    bg_rgb = (bg[:, None] + bg_tint).clamp(0.02, 0.98)
    fg_rgb = (fg[:, None] + fg_tint).clamp(0.02, 0.98)
    return bg_rgb, fg_rgb


def _blur(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur (7 taps, rows renormalised at the border) of img (n, 3, H, W)
    with standard deviation `sigma` (n,) in pixels, as two batched matrix products."""
    n, c, h, w = img.shape
    idx = torch.arange(h, dtype=torch.float32)
    d = idx[:, None] - idx[None, :]
    k = torch.exp(-(d[None] ** 2) / (2 * sigma[:, None, None] ** 2)) * (d.abs() <= 3)
    k = k / k.sum(dim=-1, keepdim=True)  # (n, H, H), banded
    img = (img.reshape(n, c * h, w) @ k.transpose(1, 2)).reshape(n, c, h, w)  # along rows
    return k[:, None] @ img  # along columns


def _upsample_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) matrix of bilinear interpolation (align_corners=False, edge-clamped)."""
    eye = torch.eye(size_in)[None]  # interpolate each basis vector
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T


def _signed_distance(phi: torch.Tensor) -> torch.Tensor:
    """Signed distance (n, 32, 32), in pixels, of each pixel centre from the line through the image
    centre whose normal points in direction `phi` (n,) radians (x right, y down)."""
    c = torch.arange(_SIZE, dtype=torch.float32) + 0.5 - _SIZE / 2  # pixel centres, centred
    return (
        torch.cos(phi)[:, None, None] * c[None, None, :]
        + torch.sin(phi)[:, None, None] * c[None, :, None]
    )


def _distractor_masks(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage (n, 1, 32, 32) of the region beyond the straight edge, and of the thin line
    (1-pixel antialiased; all zero for images without them)."""
    side = torch.tensor([-math.pi, 0.0, -math.pi / 2, math.pi / 2])[p["edge_side"]]
    dist = _signed_distance(side + p["edge_angle"]) - p["edge_dist"][:, None, None]
    edge = (dist + 0.5).clamp(0.0, 1.0) * p["has_edge"][:, None, None]
    dist = (_signed_distance(p["line_angle"]) - p["line_offset"][:, None, None]).abs()
    line = (p["line_width"][:, None, None] / 2 - dist + 0.5).clamp(0.0, 1.0) * p["has_line"][
        :, None, None
    ]
    return edge[:, None], line[:, None]


def _compose(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Render the images (n, 3, 32, 32) uint8 described by the parameters `p`."""
    n = p["label"].shape[0]
    ink = _ink_masks(p)
    bg, fg = _colours(p)
    img = bg[:, :, None, None] * (1.0 - ink) + fg[:, :, None, None] * ink
    edge, line = _distractor_masks(p)
    img = img * (1.0 - edge) + p["edge_rgb"][:, :, None, None] * edge
    img = img * (1.0 - line) + p["line_rgb"][:, :, None, None] * line
    coords = (torch.arange(_SIZE, dtype=torch.float32) + 0.5) / (_SIZE / 2) - 1.0  # [-1, 1]
    light = 1.0 + (
        p["light_grad"][:, 0, None, None] * coords[None, None, :]
        + p["light_grad"][:, 1, None, None] * coords[None, :, None]
    )  # (n, 32, 32)
    up4 = _upsample_matrix(p["clutter"].shape[-1], _SIZE)
    up8 = _upsample_matrix(p["texture"].shape[-1], _SIZE)
    clutter = up4 @ p["clutter"] @ up4.T + up8 @ p["texture"] @ up8.T
    img = img * light[:, None] + clutter * p["contrast"][:, None, None, None]
    img = _blur(img, p["blur"] * (p["height"] / 20.0).clamp(max=1.0))  # small digits: less blur
    img = img + (p["noise"] * p["contrast"])[:, None, None, None] * p["pixel_noise"]
    return (img.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8).reshape(n, 3, _SIZE, _SIZE)


def _generate_stream(n: int, seed: int, stream: int, progress: bool = False):
    """Images and labels 0..n-1 of one random stream, composed chunk by chunk."""
    images = torch.empty(n, 3, _SIZE, _SIZE, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    chunks = range(-(-n // _CHUNK))
    if progress:
        chunks = tqdm(chunks, desc="synthetic stand-in", unit="chunk", leave=False)
    for c in chunks:
        lo, hi = c * _CHUNK, min(n, (c + 1) * _CHUNK)
        params = _draw_params(_chunk_generator(stream, seed, c), _CHUNK)
        params = {k: v[: hi - lo] for k, v in params.items()}
        images[lo:hi] = _compose(params)
        labels[lo:hi] = params["label"]
    return images, labels


def generate(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate `n` images of the synthetic stand-in, deterministically for `seed`.

    Args:
        n: number of images (>= 1).
        seed: an integer in [0, 2**32 - 1]; the same seed gives the same images, and the first
            k images of ``generate(m, seed)`` equal ``generate(k, seed)`` for k <= m.

    Returns:
        (images, labels): images uint8 tensor (n, 3, 32, 32) RGB with values 0..255 on the CPU;
        labels int64 tensor (n,) with values 0..9 (the centre digit), drawn with the class
        frequencies of SVHN's train split (`SVHN_CLASS_PROBS`).

    Raises:
        ValueError: n is not an integer >= 1, or seed not an integer in [0, 2**32 - 1].

    Takes about 0.1 ms per image on one CPU core after the glyph bank is rendered (first call).
    `load_synthetic` uses separate random streams per split, so its images differ from these.
    """
    n, seed = validate.positive_int("n", n), validate.seed("seed", seed)
    return _generate_stream(n, seed, _STREAM_GENERATE)


# ----------------------------------------------------------------------------- splits + cache


def cache_path(split: str, n: int, seed: int, data_dir: str | os.PathLike | None = None) -> Path:
    """Cache file of a synthetic split:
    ``<data_dir>/synthetic/synthetic-v<version>-<split>-n<n>-seed<seed>.pt``."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return root / "synthetic" / f"synthetic-v{GENERATOR_VERSION}-{split}-n{n}-seed{seed}.pt"


def _load_cached(path: Path, n: int):
    """(images, labels) from a cache file, or None if it is missing, unreadable or inconsistent."""
    want = {"images": (torch.uint8, (n, 3, _SIZE, _SIZE)), "labels": (torch.int64, (n,))}
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        found = {key: (payload[key].dtype, tuple(payload[key].shape)) for key in want}
    except Exception:  # truncated or foreign file (pickle, zip, key errors...): generate again
        return None
    ok = payload.get("version") == GENERATOR_VERSION and found == want
    return (payload["images"], payload["labels"]) if ok else None


def load_synthetic(
    split: str,
    n: int | None = None,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic split `split` ("train" or "test"), from the on-disk cache or freshly generated.

    Args:
        split: "train" or "test". The two splits come from different random streams, so they
            never share images.
        n: number of images, at most SVHN's size of the split (train 73,257 / test 26,032);
            None means that size. A smaller n gives the first n images of the full split.
        seed: an integer in [0, 2**32 - 1] selecting the data set; same (split, n, seed) ->
            same tensors.
        data_dir: root of the data directory; default :func:`nbhelpers.env.default_data_dir`.
            The cache file is `cache_path(split, n, seed, data_dir)`.
        cache: if True, read the cache file when it exists and is valid, else generate and write it
            (atomically: temporary file + rename). If False, always generate and write nothing.
        progress: show a tqdm progress bar while generating.

    Returns:
        (images, labels): images uint8 (n, 3, 32, 32) CPU tensor, labels int64 (n,) in 0..9.
        The full-size train split takes about 225 MB on disk and in memory.

    Raises:
        ValueError: unknown split; n not an integer in [1, the split's size]; bad seed.
    """
    validate.one_of("split", split, SVHN_SPLIT_SIZES)
    size = SVHN_SPLIT_SIZES[split]
    n = size if n is None else validate.integer("n", n, 1, size)
    seed = validate.seed("seed", seed)
    path = cache_path(split, n, seed, data_dir)
    hit = _load_cached(path, n) if cache and path.exists() else None
    if hit is not None:
        return hit
    images, labels = _generate_stream(n, seed, _SPLIT_STREAMS[split], progress=progress)
    if cache:
        payload = {"images": images, "labels": labels, "version": GENERATOR_VERSION}
        with atomic_path(path) as tmp:
            torch.save({**payload, "split": split, "n": n, "seed": seed}, tmp)
    return images, labels
