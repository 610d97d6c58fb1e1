"""Image references in prompt rows, read into the encoded files a :class:`~longrl.types.Prompt` carries.

Vision-RL data stores images the way verl and EasyR1 do: an ``images`` column (a list, or one
value) and one ``<image>`` placeholder per image in the prompt, in order. Each element is

* a path to an image file, relative to the data file's folder (or absolute; ``file://`` allowed);
* the file's bytes (Parquet), a base64 string, or a ``data:image/...;base64,`` URI (JSONL);
* a dict ``{"bytes": ..., "path": ...}``, as a Hugging Face ``datasets`` ``Image`` feature stores
  it in Parquet (bytes win; a path is read when bytes are null);
* a ``PIL.Image`` (a ``datasets`` folder decodes its ``Image`` columns), stored as PNG.

Chat messages may carry the images themselves, as HF content lists:
``{"role": "user", "content": [{"type": "image", "image"|"url"|"path": ...}, {"type": "text", "text": ...}]}``.
:func:`flatten_image_parts` turns such a message into text with ``<image>`` at each image part, so
everything after the loader sees one convention. A part with no source (``{"type": "image"}``)
is a placeholder, filled from the ``images`` column.

Every image is decoded once with PIL here, so a corrupt file stops the load (naming the row)
instead of a rollout; the bytes are kept as they are. Each function raises ``ValueError`` with a
short reason; the row loop adds ``file:line``.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (4, 4)).save(buf, "PNG")
    >>> png = buf.getvalue()
    >>> row_images({"images": [{"bytes": png, "path": None}]}, None) == [png]
    True
    >>> flatten_image_parts([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Area?"}]}])
    ([{'role': 'user', 'content': '<image>Area?'}], [])
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from pathlib import Path
from typing import Any

IMAGE = "<image>"  # the placeholder of one image in a prompt's text (verl / EasyR1)
IMAGES_KEY = "images"  # the column holding a row's images
_PART_SOURCES = ("image", "url", "path", "image_url")  # where an HF image part keeps its image
_FILE_NAME = re.compile(r"\.(png|jpe?g|gif|bmp|webp|tiff?)$", re.IGNORECASE)


def decode_image(data: bytes):
    """The RGB ``PIL.Image`` of an encoded image file; ``ValueError`` when PIL cannot decode it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image ({e})") from None


def image_bytes(value: Any, folder: Path | None, what: str = "image") -> bytes:
    """The encoded file of one image reference (module docstring), validated as decodable."""
    data = _raw_bytes(value, folder, what)
    try:
        decode_image(data)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    return data


def _raw_bytes(value: Any, folder: Path | None, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return _raw_bytes(value["bytes"], folder, what)
        if value.get("path") is not None:
            return _file_bytes(str(value["path"]), folder, what)
        if isinstance(value.get("url"), str):  # OpenAI-style {"image_url": {"url": ...}}
            return _raw_bytes(value["url"], folder, what)
        raise ValueError(f"{what}: an image object needs 'bytes' or 'path', got keys {sorted(value)}")
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("data:"):
            head, _, body = s.partition(",")
            if not head.startswith("data:image/") or not head.endswith(";base64"):
                raise ValueError(f"{what}: a data URI must be data:image/...;base64,..., got {head[:40]!r}")
            return _b64(body, what)
        if s.startswith(("http://", "https://")):
            raise ValueError(f"{what}: {s[:80]!r} is a URL; longrl reads local files only (download it first)")
        if s.startswith("file://"):
            return _file_bytes(s[len("file://"):], folder, what)
        if _FILE_NAME.search(s) or _is_file(_resolve(s, folder)):
            return _file_bytes(s, folder, what)
        return _b64(s, what)
    if type(value).__module__.startswith("PIL."):  # a datasets folder decodes Image columns to PIL
        buf = io.BytesIO()
        value.save(buf, "PNG")
        return buf.getvalue()
    raise ValueError(f"{what}: expected a path, bytes, base64 text or {{'bytes', 'path'}}, "
                     f"got {type(value).__name__}")


def _resolve(path: str, folder: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or folder is None else folder / p


def _is_file(p: Path) -> bool:
    """``p.is_file()``, False where the OS refuses the name: base64 text is often no valid path (a
    run of over 255 bytes between its ``/`` raises ENAMETOOLONG, which pathlib does not swallow)."""
    try:
        return p.is_file()
    except OSError:
        return False


def _file_bytes(path: str, folder: Path | None, what: str) -> bytes:
    p = _resolve(path, folder)
    if not p.is_file():
        where = f" (relative paths are read from {folder})" if folder is not None and not Path(path).is_absolute() else ""
        raise ValueError(f"{what}: no such image file {path!r}{where}")
    return p.read_bytes()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: {text[:40]!r} is neither an image file nor base64 data") from None


def row_images(row: dict[str, Any], folder: Path | None) -> list[bytes]:
    """The images of a row's ``images`` column (empty when absent or null), each validated."""
    value = row.get(IMAGES_KEY)
    if value is None:
        return []
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        value = [value]
    return [image_bytes(v, folder, f"{IMAGES_KEY}[{i}]") for i, v in enumerate(value)]


def has_image_parts(messages: Any) -> bool:
    """Whether chat messages hold HF content lists (the form :func:`flatten_image_parts` reads)."""
    return isinstance(messages, list) and any(isinstance(m, dict) and isinstance(m.get("content"), list)
                                              for m in messages)


def flatten_image_parts(messages: list[Any], folder: Path | None = None) -> tuple[list[Any], list[bytes]]:
    """Messages with content lists -> messages with text content, ``<image>`` at each image part.

    Returns the messages and the images the parts carried, in order (none for source-less
    placeholder parts). Text parts are joined as they are, as HF chat templates render them; a
    message with text content passes through; anything else is left for the message check.
    """
    out: list[Any] = []
    images: list[bytes] = []
    bare = 0
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("content"), list)):
            out.append(m)
            continue
        text = []
        for j, part in enumerate(m["content"]):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                text.append(part["text"])
            elif kind in ("image", "image_url"):
                text.append(IMAGE)
                source = next((part[k] for k in _PART_SOURCES if part.get(k) is not None), None)
                if source is None:
                    bare += 1
                else:
                    images.append(image_bytes(source, folder, f"messages[{i}].content[{j}]"))
            else:
                raise ValueError(f"messages[{i}].content[{j}] must be a {{'type': 'text', 'text': str}} or "
                                 f"{{'type': 'image', ...}} part, got {str(part)[:60]!r}")
        out.append({**m, "content": "".join(text)})
    if images and bare:
        raise ValueError(f"the messages carry {len(images)} image(s) and {bare} image part(s) without one; "
                         "either every image part names its image or the 'images' column holds them all")
    return out, images


def count_placeholders(text: str, messages: list[dict[str, str]] | None = None) -> int:
    """``<image>`` placeholders in a prompt: in its messages when it has them, else in its text."""
    if messages is not None:
        return sum(str(m.get("content", "")).count(IMAGE) for m in messages)
    return text.count(IMAGE)


def check_placeholders(n_placeholders: int, n_images: int) -> None:
    """One ``<image>`` per image (verl asserts the same); ``ValueError`` naming both counts."""
    if n_placeholders != n_images:
        raise ValueError(f"the prompt has {n_placeholders} {IMAGE} placeholder(s) but {n_images} image(s); "
                         f"put one {IMAGE} where each image goes, in order")


def encode_base64(data: bytes) -> str:
    """An image's bytes as the base64 text a JSONL row stores (read back by :func:`image_bytes`)."""
    return base64.b64encode(data).decode("ascii")


def pixel_digest(data: bytes) -> str:
    """SHA-256 of an image's decoded RGB pixels and size: the same picture whatever file holds it
    (PNG re-compressed, metadata stripped, another lossless format), unlike a hash of the bytes."""
    img = decode_image(data)
    return hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).hexdigest()


def images_digest(images: list[bytes] | None) -> str:
    """One SHA-256 of a prompt's images in order ("" for none): prompts with equal text are the same
    problem only when this is equal too (every ``countdown_image`` prompt has the same text)."""
    if not images:
        return ""
    digest = hashlib.sha256()
    for image in images:
        digest.update(hashlib.sha256(image).digest())
    return digest.hexdigest()
