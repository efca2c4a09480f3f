"""What the bytes of an image say: format, size, animation; and its first frame.

Formats are recognised by their bytes, never by a file name: real memes come
with no extension or the wrong one.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

#: image formats memes come in that we do not ingest: named when skipped, never silent
UNSUPPORTED_SUFFIXES: dict[str, str] = {
    ".svg": "SVG", ".svgz": "SVG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".ico": "ICO",
    ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".psd": "PSD", ".jxl": "JPEG XL",
}
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"),
    (b"<svg", "SVG"), (b"8BPS", "PSD"),
)


class ImageError(ValueError):
    """The bytes are not an image we can ingest; the message says why.

    ``kind`` is the stats outcome: ``invalid`` (the bytes), ``unreadable`` (the file
    system refused), ``not_regular`` (a FIFO, device or socket, never opened for reading) or
    ``changed`` (another file, or a link, where the source listed one).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageInfo:
    md5: str
    format: str
    width: int
    height: int
    is_animated: bool
    file_size: int
    #: what ``probe``'s ``first_frame`` took of the decoded first frame (None: not asked)
    first_frame: Any = None


def sniff_format(head: bytes) -> str | None:
    """Our format name if ``head`` (the first bytes of a file) starts an image."""
    for magic, offset, fmt in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if fmt == "webp" and not head.startswith(b"RIFF"):
                continue
            return fmt
    return None


def sniff_unsupported(head: bytes) -> str | None:
    """The name of an image format we do not ingest, if ``head`` starts one."""
    return next((name for magic, name in _UNSUPPORTED_MAGIC if head.startswith(magic)), None)


def probe(data: bytes, max_pixels: int, max_frames: int | None = None,
          max_frame_pixels: int | None = None,
          first_frame: Callable[[Image.Image], Any] | None = None) -> ImageInfo:
    """MD5 of the original bytes plus what Pillow reads from them.

    Decodes the first frame fully (a truncated file fails here, not in the
    describer) and walks the frames of an animation, but never decodes an
    image whose declared size is over ``max_pixels``, nor an animation of more than
    ``max_frames`` frames or ``max_frame_pixels`` pixels over all its frames: frames are
    counted before any is decoded (a 57 KB GIF of 2,000 frames of 3000x3000 once took 86 s).
    ``first_frame``: called on the decoded first frame (for a stage that reads it next: the
    near-duplicate check), its answer kept in ``ImageInfo.first_frame``.
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
                kept = first_frame(im) if first_frame is not None else None
                animated = bool(getattr(im, "is_animated", False))
                if animated:
                    # Counted by parsing the frames' headers, not decoding them.
                    frames = int(getattr(im, "n_frames", 1))
                    if max_frames is not None and frames > max_frames:
                        raise ImageError(f"an animation of {frames} frames is over ingest.max_frames={max_frames}")
                    if max_frame_pixels is not None and frames * width * height > max_frame_pixels:
                        raise ImageError(f"an animation of {frames} frames of {width}x{height} pixels "
                                         f"({frames * width * height} in all) is over "
                                         f"ingest.max_frame_pixels={max_frame_pixels}")
                    # Seeking decodes every frame: a truncated animation fails here.
                    for frame in range(1, getattr(im, "n_frames", 1)):
                        im.seek(frame)
                        im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"refused by the decompression-bomb guard: {exc}") from None
    except Image.UnidentifiedImageError:
        # Never the bytes themselves: the file may be a secret a link pointed at.
        known = sniff_format(data[:SNIFF_BYTES])
        if known:  # the signature of one, but Pillow could not read its header (a bad PNG CRC)
            raise ImageError(f"broken {known} file: its header cannot be read") from None
        raise ImageError("not an image (no known image signature)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"broken or truncated image: {exc}") from None
    return ImageInfo(digest, fmt, width, height, animated, len(data), kept)


def first_frame_rgb(data: bytes) -> Image.Image:
    """The first frame as RGB, transparency flattened onto white (what a viewer shows)."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        frame = im.convert("RGBA")
    background = Image.new("RGBA", frame.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, frame).convert("RGB")



def thumbnail(data: bytes, max_px: int) -> bytes:
    """A small WebP of the image for a grid: its first frame, at most ``max_px`` a side."""
    frame = first_frame_rgb(data)
    frame.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    frame.save(out, "WEBP", quality=75, method=4)
    return out.getvalue()


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "a special file")


def read_file(path: str, max_bytes: int, identity: tuple[int, int] | None = None) -> bytes:
    """At most ``max_bytes`` of the regular file at ``path``.

    Opened without blocking and checked on the open descriptor: a FIFO or a device is
    refused before a single read (a FIFO would wait forever, /dev/zero never ends), and a
    file that changed between the walk and now is judged by what was opened. The read is
    bounded whatever ``stat`` says: /proc's files report 0 bytes. With ``identity`` (the
    (device, inode) a source listed), a link put in the file's place, or any other file, is
    refused: a tree cannot swap in a file from outside itself after the walk.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if identity else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and identity:
            raise ImageError("replaced by a link since it was listed: not read", "changed") from None
        raise ImageError(f"cannot read the file: {exc.strerror or exc}", "unreadable") from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            if identity and (st.st_dev, st.st_ino) != tuple(identity):
                raise ImageError("another file than the one listed is at this path now: not read", "changed")
            if not stat.S_ISREG(mode):
                raise ImageError(f"not a regular file ({file_kind(mode)}): refused", "not_regular")
            os.set_blocking(fd, True)
            chunks: list[bytes] = []
            size = 0
            while size <= max_bytes:
                chunk = f.read(min(1 << 20, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise ImageError(f"cannot read the file: {exc.strerror or exc}", "unreadable") from None
    if size > max_bytes:
        raise ImageError(f"file of more than {max_bytes} bytes is over ingest.max_image_bytes={max_bytes}")
    return b"".join(chunks)


def read_image(body: bytes | None, path: str | None, max_bytes: int, max_pixels: int,
               identity: tuple[int, int] | None = None, max_frames: int | None = None,
               max_frame_pixels: int | None = None,
               first_frame: Callable[[Image.Image], Any] | None = None) -> tuple[bytes, ImageInfo]:
    """The item's bytes (``body``, else the file at ``path``, which must be ``identity`` when
    given) and what they hold (``probe``'s limits and ``first_frame``)."""
    if body is None:
        if not path:
            raise ImageError("the item has neither body nor path")
        body = read_file(path, max_bytes, identity)
    elif len(body) > max_bytes:
        raise ImageError(f"body of {len(body)} bytes is over ingest.max_image_bytes={max_bytes}")
    return body, probe(body, max_pixels, max_frames, max_frame_pixels, first_frame)
