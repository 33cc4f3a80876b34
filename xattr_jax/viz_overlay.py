"""Heat-map overlays and a minimal PNG / PPM codec (numpy + zlib; no Pillow or matplotlib needed).

* :func:`colorize` — a map ``[H, W]`` to RGB with a jet-like colour map (max-normalised).
* :func:`overlay` — blend a colourised map over an image.
* :func:`write_png` / :func:`read_png` — 8-bit RGB / grey PNG files (any colour type and filter on
  reading, no interlacing).
* :func:`read_image` — PNG and PPM/PGM (P5/P6) natively; other formats (JPEG, ...) through Pillow
  when it is installed, otherwise an ImportError that says so.

Example:
  >>> from xattr_jax.viz_overlay import overlay, write_png
  >>> write_png("map.png", overlay(image, res.map[0]))
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "colorize",
    "overlay",
    "tile",
    "upscale",
    "write_png",
    "read_png",
    "read_ppm",
    "read_image",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# jet-like anchors (value, r, g, b)
_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.0, 0.5],
        [0.125, 0.0, 0.0, 1.0],
        [0.375, 0.0, 1.0, 1.0],
        [0.625, 1.0, 1.0, 0.0],
        [0.875, 1.0, 0.0, 0.0],
        [1.0, 0.5, 0.0, 0.0],
    ]
)


def _normalise(m: np.ndarray, mode: str) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, np.float64))
    if mode == "signed":  # 0 -> 0.5, symmetric scale
        top = np.max(np.abs(m))
        return 0.5 + 0.5 * m / top if top > 0 else np.full_like(m, 0.5)
    if mode == "minmax":
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    top = m.max()  # "max": positive part over the maximum
    return np.clip(m, 0, None) / top if top > 0 else np.zeros_like(m)


def colorize(map, mode: str = "max") -> np.ndarray:
    """RGB float ``[H, W, 3]`` in [0, 1] of a 2-D map with a jet-like colour map.

    Args:
      map: ``[H, W]`` array.
      mode: ``"max"`` (positive part / maximum; default), ``"minmax"`` or ``"signed"``.
    """
    m = np.asarray(map)
    if m.ndim != 2:
        raise ValueError(f"map must be 2-D [H, W], got shape {m.shape}")
    t = _normalise(m, mode)
    rgb = [np.interp(t, _ANCHORS[:, 0], _ANCHORS[:, k]) for k in (1, 2, 3)]
    return np.stack(rgb, axis=-1)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[H, W, ...]`` by an integer factor."""
    f = int(factor)
    return image if f <= 1 else np.repeat(np.repeat(image, f, axis=0), f, axis=1)


def overlay(image, map, alpha: float = 0.5, mode: str = "max") -> np.ndarray:
    """Blend the colourised ``map`` over ``image`` (``[H, W, 3]`` in [0, 1]).

    The map is resized (bilinear, ``align_corners=False``) to the image size when they differ.
    Returns float ``[H, W, 3]`` in [0, 1].
    """
    img = np.clip(np.asarray(image, np.float64), 0, 1)
    m = np.asarray(map, np.float64)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {img.shape}")
    if m.shape != img.shape[:2]:
        from xattr_jax.metrics import resize_map

        m = np.asarray(resize_map(m.astype(np.float32), img.shape[:2]), np.float64)
    heat = colorize(m, mode)
    return (1 - alpha) * img + alpha * heat


def tile(images, columns: int | None = None, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """Arrange equally sized ``[H, W, 3]`` images in a grid (row-major), ``pad`` pixels apart."""
    ims = [np.asarray(i, np.float64) for i in images]
    if not ims:
        raise ValueError("tile needs at least one image")
    h, w = ims[0].shape[:2]
    cols = len(ims) if columns is None else max(1, int(columns))
    rows = -(-len(ims) // cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), fill)
    for k, im in enumerate(ims):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = im
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path, image) -> Path:
    """Write ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey) as an 8-bit PNG.

    Float images are taken in [0, 1] (clipped), integer images as 0..255.
    """
    a = np.asarray(image)
    if a.dtype.kind == "f":
        a = np.round(np.clip(np.nan_to_num(a), 0, 1) * 255)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        colour = 0
    elif a.ndim == 3 and a.shape[-1] == 3:
        colour = 2
    else:
        raise ValueError(f"image must be [H, W, 3] or [H, W], got shape {a.shape}")
    h, w = a.shape[:2]
    rows = a.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    data = (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _unfilter(raw: bytes, h: int, stride: int, bpp: int) -> np.ndarray:
    buf = np.frombuffer(raw, np.uint8)
    if buf.size < h * (stride + 1):
        raise ValueError("PNG image data is truncated")
    buf = buf[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ftype, line = int(buf[y, 0]), buf[y, 1:].astype(np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:  # up
            cur = (line + prev) & 255
        elif ftype == 1:  # sub: cumulative sum per byte lane, modulo 256
            cur = line.reshape(-1, bpp).cumsum(axis=0).reshape(-1) & 255
        elif ftype in (3, 4):  # average / Paeth: sequential along the row
            cur = np.zeros(stride, np.int64)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                if ftype == 3:
                    cur[i] = (line[i] + ((a + b) >> 1)) & 255
                else:
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                    cur[i] = (line[i] + pred) & 255
        else:
            raise ValueError(f"unknown PNG filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def read_png(path) -> np.ndarray:
    """Decode a non-interlaced PNG (grey, RGB, palette, with or without alpha; 8 or 16 bits).

    Returns float32 RGB ``[H, W, 3]`` in [0, 1] (alpha dropped).
    """
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, palette, header = 8, [], None, None
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: PNG without IHDR")
    w, h, depth, colour, _, _, interlace = header
    if interlace:
        raise ValueError(f"{path}: interlaced PNGs are not supported (install Pillow)")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (8, 16) or (colour == 3 and depth != 8):
        raise ValueError(f"{path}: PNG colour type {colour} / bit depth {depth} not supported "
                         "(install Pillow)")  # fmt: skip
    nbytes = depth // 8
    stride = w * channels * nbytes
    rows = _unfilter(zlib.decompress(b"".join(idat)), h, stride, channels * nbytes)
    if nbytes == 2:
        px = rows.reshape(h, w * channels, 2).astype(np.float64)
        px = (px[..., 0] * 256 + px[..., 1]).reshape(h, w, channels) / 65535.0
    else:
        px = rows.reshape(h, w, channels).astype(np.float64) / 255.0
    if colour == 3:
        if palette is None:
            raise ValueError(f"{path}: palette PNG without PLTE")
        return palette[rows.reshape(h, w)].astype(np.float32) / 255.0
    if channels in (1, 2):
        px = np.repeat(px[..., :1], 3, axis=-1)
    return px[..., :3].astype(np.float32)


def read_ppm(path) -> np.ndarray:
    """Decode a binary PPM (P6) or PGM (P5) file to float32 RGB ``[H, W, 3]`` in [0, 1]."""
    data = Path(path).read_bytes()
    magic = data[:2]
    if magic not in (b"P5", b"P6"):
        raise ValueError(f"{path} is not a binary PPM/PGM file (P5/P6)")
    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            while data[pos : pos + 1] not in (b"\n", b""):
                pos += 1
            continue
        start = pos
        while not data[pos : pos + 1].isspace():
            pos += 1
        fields.append(int(data[start:pos]))
    pos += 1  # one whitespace byte after maxval
    w, h, maxval = fields
    c = 3 if magic == b"P6" else 1
    dtype = np.dtype(">u2") if maxval > 255 else np.uint8
    px = np.frombuffer(data, dtype, count=w * h * c, offset=pos).reshape(h, w, c)
    px = px.astype(np.float32) / float(maxval)
    return np.repeat(px, 3, axis=-1) if c == 1 else px


def read_image(path) -> np.ndarray:
    """Read an image file as float32 RGB ``[H, W, 3]`` in [0, 1].

    PNG and PPM/PGM are decoded here; JPEG and other formats need Pillow (``pip install pillow``).

    Raises:
      FileNotFoundError: no such file.
      ImportError: the format needs Pillow and it is not installed.
      ValueError: a malformed or unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        from PIL import Image  # fast path for every format when available
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.float32) / 255.0
    if head.startswith(_PNG_SIGNATURE):
        return read_png(path)
    if head[:2] in (b"P5", b"P6"):
        return read_ppm(path)
    raise ImportError(
        f"{path.name}: reading this format (JPEG, ...) needs Pillow: pip install pillow "
        "(PNG and PPM are read without it)"
    )
