"""What the bytes of an image say: format, size, animation; and its first frame.

Formats are recognised by their bytes, never by a file name: real memes come
with no extension or the wrong one.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

from PIL import Image

#: Pillow format name -> our format (also the storage key's extension)
FORMATS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}

CONTENT_TYPES: dict[str, str] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
}

# Magic numbers of the formats we ingest; enough to tell a meme from a README.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),
)

SNIFF_BYTES = 16


class ImageError(ValueError):
    """The bytes are not an image we can ingest; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    md5: str
    format: str
    width: int
    height: int
    is_animated: bool
    file_size: int


def sniff_format(head: bytes) -> str | None:
    """Our format name if ``head`` (the first bytes of a file) starts an image."""
    for magic, offset, fmt in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if fmt == "webp" and not head.startswith(b"RIFF"):
                continue
            return fmt
    return None


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """MD5 of the original bytes plus what Pillow reads from them.

    Decodes the first frame fully (a truncated file fails here, not in the
    describer) and walks the frames of an animation, but never decodes an
    image whose declared size is over ``max_pixels``.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    digest = hashlib.md5(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = FORMATS.get(im.format or "")
                if fmt is None:
                    raise ImageError(f"unsupported image format {im.format} (accepted: jpg, png, gif, webp)")
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"refused by the decompression-bomb guard: {width}x{height} pixels is over "
                        f"ingest.max_pixels={max_pixels}"
                    )
                im.load()
                animated = bool(getattr(im, "is_animated", False))
                if animated:
                    # Seeking decodes every frame: a truncated animation fails here.
                    for frame in range(1, getattr(im, "n_frames", 1)):
                        im.seek(frame)
                        im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"refused by the decompression-bomb guard: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image (starts with {data[:8]!r})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"broken or truncated image: {exc}") from None
    return ImageInfo(digest, fmt, width, height, animated, len(data))


def first_frame_rgb(data: bytes) -> Image.Image:
    """The first frame as RGB, transparency flattened onto white (what a viewer shows)."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        frame = im.convert("RGBA")
    background = Image.new("RGBA", frame.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, frame).convert("RGB")



def read_image(body: bytes | None, path: str | None, max_bytes: int, max_pixels: int) -> tuple[bytes, ImageInfo]:
    """The item's bytes (``body``, else the file at ``path``) and what they hold."""
    if body is None:
        if not path:
            raise ImageError("the item has neither body nor path")
        try:
            size = os.stat(path).st_size
            if size > max_bytes:
                raise ImageError(f"file of {size} bytes is over ingest.max_image_bytes={max_bytes}")
            with open(path, "rb") as f:
                body = f.read()
        except OSError as exc:
            raise ImageError(f"cannot read the file: {exc.strerror or exc}") from None
    elif len(body) > max_bytes:
        raise ImageError(f"body of {len(body)} bytes is over ingest.max_image_bytes={max_bytes}")
    return body, probe(body, max_pixels)
