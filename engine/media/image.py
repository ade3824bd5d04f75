"""Still images: safe loading (type by magic bytes, size checked from the header before any
pixel is decoded, EXIF orientation applied, colour profile converted to sRGB, every piece of
metadata dropped) and metadata-free atomic saving.

Supported: JPEG (incl. MPO phone photos: first picture), PNG (APNG: first frame), WebP
(animated: first frame) and, for reading only, HEIC/HEIF phone photos (primary image, through
pillow-heif's libheif). GIF is rejected by :func:`load_image` (the video layer decodes animated
GIFs); so is everything else (AVIF, TIFF, BMP, SVG, ...).
"""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, UnidentifiedImageError

from engine.errors import CorruptMedia, MediaTooLarge, UnsupportedMedia

DEFAULT_MAX_PIXELS = 50_000_000

#: Canonical format names, as used in :attr:`Image.format` and by :func:`save_image`.
IMAGE_FORMATS = ("jpeg", "png", "webp")
#: What :func:`load_image` decodes: the above, and HEIC/HEIF (read only).
INPUT_FORMATS = (*IMAGE_FORMATS, "heic")
# ISO-BMFF major brands of HEIF still images (HEVC-coded), as written by phones and cameras.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})

_FORMAT_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "jpe": "jpeg", "png": "png", "webp": "webp"}
_PIL_NAMES = {"jpeg": ("JPEG", "MPO"), "png": ("PNG",), "webp": ("WEBP",), "heic": ("HEIF",)}

NOT_AN_IMAGE = "This file is not a JPEG, PNG, WebP or HEIC image"
EMPTY_IMAGE = "The image file is empty"
DAMAGED_IMAGE = "The image file is damaged or incomplete and cannot be opened"

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# EXIF orientations that need a transform (1 = already upright).
_ORIENTATION_OPS = frozenset(range(2, 9))

_SRGB_PROFILE = None


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded image.

    ``pixels``: (H, W, 3) uint8 RGB, C-contiguous, upright. When the source had transparency
    the colour is composited over white here and the straight alpha is kept in ``alpha``
    ((H, W) uint8) so a PNG/WebP round trip can restore it; ``alpha`` is ``None`` for opaque
    images. ``format`` is the detected source type: ``"jpeg"``, ``"png"`` or ``"webp"``.
    No metadata of the source (EXIF, GPS, XMP, ICC, comments) is kept.
    """

    pixels: np.ndarray
    format: str
    alpha: np.ndarray | None = None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), like Pillow."""
        return self.width, self.height

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    def rgba(self) -> np.ndarray:
        """(H, W, 4) straight-alpha RGBA (opaque when there is no alpha)."""
        alpha = self.alpha if self.alpha is not None else np.full(self.pixels.shape[:2], 255, np.uint8)
        return np.dstack([_uncomposite(self.pixels, alpha), alpha])


# --------------------------------------------------------------------------- type sniffing


def sniff_image_format(head: bytes) -> str | None:
    """The real image type from magic bytes: ``jpeg``/``png``/``webp``/``gif``/``heic`` or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heic"
    return None


_heif_ready = False


def _register_heif() -> None:
    """Teaches Pillow to open HEIF (once, on first use: the import loads libheif)."""
    global _heif_ready
    if not _heif_ready:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_ready = True


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) read from the file header without decoding, or None if not found."""
    try:
        if fmt == "png":
            if data[12:16] == b"IHDR":
                return struct.unpack(">II", data[16:24])
        elif fmt == "webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L" and data[20] == 0x2F:
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                w = int.from_bytes(data[26:28], "little") & 0x3FFF
                h = int.from_bytes(data[28:30], "little") & 0x3FFF
                return w, h
        elif fmt == "jpeg":
            return _jpeg_size(data)
    except (IndexError, struct.error):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan: no frame header found
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def _too_large(width: int, height: int, max_pixels: int) -> MediaTooLarge:
    return MediaTooLarge(
        f"This image is too large: {width} x {height} pixels "
        f"({width * height / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:g} megapixels)"
    )


# --------------------------------------------------------------------------- loading


def _read_input(source: PathOrBytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        return source.read()
    with open(os.fspath(source), "rb") as handle:  # FileNotFoundError is the caller's problem
        return handle.read()


def load_image(source: PathOrBytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode an uploaded image safely (see module docstring).

    Raises ``UnsupportedMedia`` (not JPEG/PNG/WebP/HEIC by content, whatever the extension),
    ``MediaTooLarge`` (more than ``max_pixels``, checked from the header before decoding),
    ``CorruptMedia`` (empty, truncated or damaged).
    """
    data = _read_input(source)
    if not data:
        raise CorruptMedia(EMPTY_IMAGE)
    fmt = sniff_image_format(data[:16])
    if fmt not in INPUT_FORMATS:
        raise UnsupportedMedia(NOT_AN_IMAGE)
    if fmt == "heic":
        _register_heif()

    size = header_size(data, fmt)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _too_large(size[0], size[1], max_pixels)

    try:
        im = PILImage.open(io.BytesIO(data), formats=_PIL_NAMES[fmt])
        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise CorruptMedia(DAMAGED_IMAGE)
            if width * height > max_pixels:
                raise _too_large(width, height, max_pixels)
            im.load()  # the real decode; truncated data raises OSError here
            orientation = _exif_orientation(im)
            icc = im.info.get("icc_profile")
            pixels, alpha = _to_rgb(im, icc)
    except PILImage.DecompressionBombError as exc:
        if size is not None:
            raise _too_large(size[0], size[1], max_pixels) from exc
        raise MediaTooLarge("This image is too large to process") from exc
    except (CorruptMedia, MediaTooLarge):
        raise
    except UnidentifiedImageError as exc:
        raise CorruptMedia(DAMAGED_IMAGE) from exc
    except MemoryError as exc:
        raise MediaTooLarge("This image is too large to process") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        raise CorruptMedia(DAMAGED_IMAGE) from exc

    pixels, alpha = _apply_orientation(pixels, alpha, orientation)
    return Image(pixels=pixels, format=fmt, alpha=alpha)


def _exif_orientation(im: PILImage.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if int(value) in _ORIENTATION_OPS else 1
    except Exception:  # malformed EXIF: ignore it, it is dropped anyway
        return 1


def _apply_orientation(pixels: np.ndarray, alpha: np.ndarray | None, orientation: int):
    if orientation == 1:
        return pixels, alpha

    def fix(array: np.ndarray) -> np.ndarray:
        # The EXIF table expressed on arrays (rows = y): same result as Pillow's transpose.
        if orientation == 2:
            out = array[:, ::-1]
        elif orientation == 3:
            out = array[::-1, ::-1]
        elif orientation == 4:
            out = array[::-1]
        elif orientation == 5:
            out = array.swapaxes(0, 1)
        elif orientation == 6:
            out = np.rot90(array, -1)
        elif orientation == 7:
            out = array[::-1, ::-1].swapaxes(0, 1)
        else:  # 8
            out = np.rot90(array, 1)
        return np.ascontiguousarray(out)

    return fix(pixels), (fix(alpha) if alpha is not None else None)


def _srgb_profile():
    global _SRGB_PROFILE
    if _SRGB_PROFILE is None:
        _SRGB_PROFILE = ImageCms.createProfile("sRGB")
    return _SRGB_PROFILE


def _to_srgb(im: PILImage.Image, icc: bytes | None) -> PILImage.Image:
    """Convert an RGB/RGBA/CMYK image with an embedded profile to sRGB (best effort)."""
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").lower()
        if "srgb" in description and im.mode != "CMYK":
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, profile, _srgb_profile(), outputMode=out_mode)
    except Exception:  # a broken profile: fall back to assuming sRGB
        return im


def _to_rgb(im: PILImage.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (RGB uint8 composited over white, straight alpha or None)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(im)
        if gray.dtype != np.uint8:
            # 16-bit data: scale 0..65535 to 0..255 (Pillow's convert would clip instead).
            gray = np.clip((gray.astype(np.float32) / 257.0).round(), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        return np.ascontiguousarray(rgb), None
    if mode == "F":
        gray = np.asarray(im)
        scale = 255.0 if gray.max(initial=0.0) <= 1.0 else 1.0
        gray = np.clip(gray * scale, 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), None

    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")

    im = _to_srgb(im, icc)
    if im.mode == "RGBA":
        rgba = np.asarray(im)
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        if alpha.min(initial=255) == 255:
            return np.ascontiguousarray(rgba[:, :, :3]), None
        return _composite_over_white(rgba[:, :, :3], alpha), alpha
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8, copy=True, order="C"), None


def _composite_over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint16)[:, :, None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _uncomposite(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Undo :func:`_composite_over_white` (exact up to rounding where alpha > 0)."""
    a = alpha.astype(np.float32)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = (pixels.astype(np.float32) * 255.0 - 255.0 * (255.0 - a)) / a
    straight = np.where(a > 0, straight, 255.0)
    return np.clip(straight.round(), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- saving


def _format_of(target: str) -> str | None:
    return _FORMAT_ALIASES.get(target.lower().lstrip("."))


def save_image(
    image: Image | np.ndarray,
    path_or_format: str | os.PathLike,
    *,
    quality: int = 92,
    format: str | None = None,
) -> Path | bytes:
    """Encode ``image`` as JPEG/PNG/WebP with no metadata at all (no EXIF, GPS, XMP or ICC
    profile: pixels are sRGB by assumption).

    ``path_or_format``: a file path (the format comes from its suffix, or ``format=``) -> the
    file is written atomically (temp file in the same folder, then ``os.replace``) and its
    ``Path`` returned; or a bare format name (``"jpeg"``, ``"png"``, ``"webp"``) -> the encoded
    ``bytes`` are returned.

    ``image``: an :class:`Image` (its alpha, if any, is written to PNG/WebP; JPEG gets the
    colour composited over white) or a uint8 array: (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray.
    """
    if not 1 <= int(quality) <= 100:
        raise ValueError("quality must be between 1 and 100")
    if isinstance(path_or_format, str) and _format_of(path_or_format) is not None:
        fmt = _format_of(format or path_or_format)
        dst = None
    else:
        dst = Path(path_or_format)
        fmt = _format_of(format or dst.suffix)
    if fmt is None:
        raise ValueError(f"Cannot tell the image format of {path_or_format!r}: use .jpg, .png or .webp")

    pil = _to_pil(image, keep_alpha=fmt in ("png", "webp"))
    buffer = io.BytesIO()
    if fmt == "jpeg":
        if pil.mode not in ("RGB", "L"):
            pil = pil.convert("RGB")
        pil.save(buffer, "JPEG", quality=int(quality), optimize=False, progressive=False)
    elif fmt == "png":
        pil.save(buffer, "PNG", compress_level=3)
    else:
        pil.save(buffer, "WEBP", quality=int(quality), method=4, exif=b"", xmp=b"", icc_profile=None)
    data = buffer.getvalue()
    if dst is None:
        return data
    from engine.media._files import write_atomically

    return write_atomically(dst, data)


def _to_pil(image: Image | np.ndarray, *, keep_alpha: bool) -> PILImage.Image:
    if isinstance(image, Image):
        if keep_alpha and image.alpha is not None:
            return PILImage.fromarray(image.rgba(), "RGBA")
        return PILImage.fromarray(np.ascontiguousarray(image.pixels), "RGB")
    if not isinstance(image, np.ndarray):
        raise TypeError("save_image takes an engine.media.Image or a numpy array")
    array = image
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, not {array.dtype}")
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        return PILImage.fromarray(array, "L")
    if array.ndim == 3 and array.shape[2] == 3:
        return PILImage.fromarray(array, "RGB")
    if array.ndim == 3 and array.shape[2] == 4:
        if keep_alpha:
            return PILImage.fromarray(array, "RGBA")
        return PILImage.fromarray(_composite_over_white(array[:, :, :3], array[:, :, 3]), "RGB")
    raise ValueError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), not {array.shape}")
