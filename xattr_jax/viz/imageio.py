"""Image files and the one image resizer, through Pillow (and matplotlib for figures).

* :func:`read_image` — any file Pillow reads (PNG, JPEG, PPM/PGM, BMP, GIF, TIFF, WebP, ...) as
  float32 RGB ``[H, W, 3]`` in [0, 1], whatever the file's pixel mode:

  ============================  ==========================================================
  file                          what is read
  ============================  ==========================================================
  8-bit RGB / grey ``L``        value / 255 (grey replicated to the three channels)
  16-bit grey (``I;16``,        value / 65535 (not / 255: a 16-bit PNG is not read as
  ``I;16B``, ``I;16L``, ``I``)  near-white); ``I`` is Pillow's 32-bit integer mode, clipped
  float ``F``                   the values, clipped to [0, 1]
  1-bit ``1``                   0 or 1
  palette ``P`` / ``PA``        the palette colours (with their transparency, see below)
  ``RGBA``, ``LA``, ``PA``      **composited over white**: ``a·rgb + (1 − a)·1``; a
                                transparent pixel is white, as a viewer shows it on a page
  CMYK, YCbCr, LAB, HSV         Pillow's conversion to RGB
  ============================  ==========================================================

  The EXIF orientation tag is applied first (a phone photo is read upright), and a
  multi-frame file (GIF, TIFF) gives its first frame. Pillow stores 16-bit RGB PNGs as 8-bit
  RGB, so those come back with 8-bit precision.
* :func:`write_image` — a NumPy image or a matplotlib ``Figure`` to ``.png``, ``.jpg``/``.jpeg``,
  ``.pdf`` or ``.svg``, chosen by the file's extension; parent folders are created.
* :func:`resize` — the antialiased resizer that every figure of :mod:`xattr_jax.viz` uses.

Every problem with a path or a file is raised as one line that names the file, what is wrong and
what to do: :class:`FileNotFoundError` (no such file), :class:`PathIsFolderError` (a folder where
a file is expected; both an :class:`IsADirectoryError` and a :class:`ValueError`) or
:class:`ValueError` (empty, truncated or damaged file, not an image, unknown extension).

Example:
  >>> from xattr_jax.viz.imageio import read_image, resize, write_image
  >>> img = read_image("cat.jpg")                  # float32 [H, W, 3] in [0, 1]
  >>> write_image("cat_small.png", resize(img, (64, 64)))
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "read_image",
    "write_image",
    "resize",
    "to_uint8",
    "PathIsFolderError",
    "IMAGE_EXTENSIONS",
]

#: Extensions :func:`write_image` writes, and the format each one selects.
IMAGE_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}

# Errors a damaged file can raise from inside Pillow's decoders.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, IndexError)


class PathIsFolderError(IsADirectoryError, ValueError):
    """A folder was given where a file is expected (caught by ``except ValueError`` as well)."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ----------------------------------------------------------------------------------------------
# reading


def _check_readable(path: Path) -> None:
    if path.is_dir():
        raise PathIsFolderError(f"{path} is a folder, not an image file; give the path of an image "
                                "file inside it")  # fmt: skip
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}; check the path (relative paths start "
                                f"at {Path.cwd()})")  # fmt: skip
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is an empty file (0 bytes); the file was not written completely: "
                         "copy or export it again")  # fmt: skip


def _composite_over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return rgb * a + (1.0 - a)


def _pixels(im) -> np.ndarray:
    """float RGB [H, W, 3] in [0, 1] of a loaded Pillow image, by its mode (see the module table)."""
    mode = im.mode
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode.startswith("I;16"):
        g = np.asarray(im).astype(np.float64) / 65535.0
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "I":
        g = np.clip(np.asarray(im).astype(np.float64) / 65535.0, 0, 1)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "F":
        g = np.clip(np.nan_to_num(np.asarray(im, np.float64)), 0, 1)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    if mode == "L":
        g = np.asarray(im, np.float64) / 255.0
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "LA":
        a = np.asarray(im, np.float64) / 255.0
        g = _composite_over_white(a[..., :1], a[..., 1])
        return np.repeat(g, 3, axis=-1)
    if mode in ("RGBA", "RGBa", "La"):
        im = im.convert("RGBA")
        a = np.asarray(im, np.float64) / 255.0
        return _composite_over_white(a[..., :3], a[..., 3])
    if mode != "RGB":  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        im = im.convert("RGB")
    return np.asarray(im, np.float64) / 255.0


def read_image(path) -> np.ndarray:
    """Read an image file as float32 RGB ``[H, W, 3]`` in [0, 1] (see the module's table of modes).

    Raises:
      FileNotFoundError: no such file.
      PathIsFolderError: ``path`` is a folder (an ``IsADirectoryError`` and a ``ValueError``).
      ValueError: an empty, truncated or damaged file, or a file that is not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_readable(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode everything now: a truncated file fails here, not later
            im = ImageOps.exif_transpose(im)
            px = _pixels(im)
    except PermissionError:
        raise ValueError(f"{path}: permission denied; make the file readable (chmod) or copy it "
                         "somewhere you can read") from None  # fmt: skip
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file Pillow can read (PNG, JPEG, PPM, BMP, TIFF, "
                         "...); check that the file really is the image you meant") from None  # fmt: skip
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: {_one_line(err)}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust "
                         "the file") from None  # fmt: skip
    except _DECODE_ERRORS as err:
        what = "truncated" if "truncat" in str(err).lower() else "damaged"
        raise ValueError(f"{path}: the image file is {what} ({_one_line(err)}); copy or export it "
                         "again") from None  # fmt: skip
    return np.ascontiguousarray(px, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# writing


def _target(path) -> tuple[Path, str]:
    path = Path(path)
    if path.is_dir():
        raise PathIsFolderError(f"{path} is a folder; give a file name inside it, e.g. "
                                f"{path / 'figure.png'}")  # fmt: skip
    fmt = IMAGE_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        valid = ", ".join(IMAGE_EXTENSIONS)
        got = path.suffix or "no extension"
        raise ValueError(f"{path}: cannot write {got!s}; end the file name with one of {valid}")
    return path, fmt


def to_uint8(image) -> np.ndarray:
    """``uint8`` pixels of an image: floats are taken in [0, 1] (clipped, NaN → 0), integers as 0..255.

    Accepts ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` and ``[H, W, 4]``; ``[H, W, 1]`` becomes ``[H, W]``.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"an image must be [H, W], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"cannot write an empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "f":
        return np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
    if a.dtype.kind in "iu":
        return np.clip(a, 0, 255).astype(np.uint8)
    raise ValueError(f"cannot write an image of dtype {a.dtype}; give floats in [0, 1] or uint8")


def _array_figure(px: np.ndarray, dpi: float):
    """A figure that shows ``px`` pixel for pixel (no axes, no margins)."""
    from matplotlib.figure import Figure

    h, w = px.shape[:2]
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(px, cmap="gray" if px.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    return fig


def write_image(path, image, *, metadata: Optional[Mapping[str, str]] = None,
                dpi: Optional[float] = None, quality: int = 95) -> Path:  # fmt: skip
    """Write an image array or a matplotlib figure; the format follows ``path``'s extension.

    Args:
      path: ``*.png``, ``*.jpg`` / ``*.jpeg``, ``*.pdf`` or ``*.svg``. Parent folders are created.
      image: a matplotlib ``Figure`` (saved with ``Figure.savefig``), a Pillow image, or an array
        (see :func:`to_uint8`): PNG and JPEG through Pillow, pixel for pixel; PDF and SVG as a
        figure of the array's size. JPEG has no alpha: an RGBA array is composited over white.
      metadata: text chunks for PNG files (``tEXt``), e.g. ``{"panels": "a,b"}``; for figures
        also PDF/SVG metadata as matplotlib accepts it.
      dpi: resolution of a figure (default: the figure's own).
      quality: JPEG quality (1–95).

    Returns:
      the path written.

    Raises:
      ValueError: an unknown extension (the message lists the valid ones), an array that is not an
        image; :class:`PathIsFolderError` when ``path`` is an existing folder.
    """
    from matplotlib.figure import Figure, SubFigure

    path, fmt = _target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, SubFigure):
        image = image.figure
    if isinstance(image, Figure):
        kw = {"format": fmt}
        if dpi is not None:
            kw["dpi"] = dpi
        if metadata and fmt in ("png", "pdf", "svg"):
            kw["metadata"] = dict(metadata)
        if fmt == "jpeg":
            kw["pil_kwargs"] = {"quality": int(quality)}
        image.savefig(path, **kw)
        return path

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if isinstance(image, Image.Image):
        pil = image
        px = None
    else:
        px = to_uint8(image)
        pil = Image.fromarray(px)
    if fmt == "png":
        info = None
        if metadata:
            info = PngInfo()
            for k, v in metadata.items():
                info.add_text(str(k), str(v))
        pil.save(path, format="PNG", pnginfo=info)
    elif fmt == "jpeg":
        if pil.mode in ("RGBA", "LA", "PA", "P"):
            rgba = np.asarray(pil.convert("RGBA"), np.float64) / 255.0
            pil = Image.fromarray(to_uint8(_composite_over_white(rgba[..., :3], rgba[..., 3])))
        elif pil.mode not in ("RGB", "L"):
            pil = pil.convert("RGB")
        pil.save(path, format="JPEG", quality=int(quality))
    else:
        if px is None:
            px = np.asarray(pil.convert("RGBA" if "A" in pil.mode else "RGB"))
        fig = _array_figure(px, 100.0 if dpi is None else float(dpi))
        fig.savefig(path, format=fmt, metadata=dict(metadata) if metadata else None)
    return path


# ----------------------------------------------------------------------------------------------
# resizing


def resize(array, size: Sequence[int], antialias: bool = True) -> np.ndarray:
    """Resize ``[H, W]`` or ``[H, W, C]`` to ``size = (h, w)``; float32 out.

    ``antialias=True`` (default): Pillow's bilinear filter on float32 planes (mode ``F``), one
    channel at a time. Enlarging is bilinear with half-pixel centres (PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``); reducing widens the triangle filter to
    the reduction, so every input pixel contributes (no aliasing of fine detail such as
    gradient maps). ``antialias=False``: :func:`xattr_jax.metrics.resize_map`, PyTorch's
    bilinear sampling without averaging (the evaluation protocols' resizer); the same as
    ``True`` when enlarging.
    """
    a = np.asarray(array)
    if a.ndim not in (2, 3):
        raise ValueError(f"resize needs [H, W] or [H, W, C], got shape {a.shape}")
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (h, w) of ints, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {(h, w)}")
    a = a.astype(np.float32)
    if a.shape[:2] == (h, w):
        return a
    if not antialias:
        from xattr_jax.metrics import resize_map

        planes = a if a.ndim == 2 else np.moveaxis(a, -1, 0)
        out = np.asarray(resize_map(planes, (h, w)), np.float32)
        return out if a.ndim == 2 else np.moveaxis(out, 0, -1)

    from PIL import Image

    def one(p):
        im = Image.fromarray(np.ascontiguousarray(p, dtype=np.float32))  # mode "F"
        return np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), np.float32)

    if a.ndim == 2:
        return one(a)
    return np.stack([one(a[..., c]) for c in range(a.shape[-1])], axis=-1)

