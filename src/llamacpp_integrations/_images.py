"""Images in chat messages: OpenAI ``image_url`` content parts resolved to their bytes.

A part's URL may be a ``data:`` URL (base64), a local file (a path or a ``file://`` URL), or an
``http(s)`` URL. What may be read is the caller's choice (:class:`ImagePolicy`): in-process,
local files are allowed and fetching is off; the server allows neither by default, since its
clients must not read the server's files or make it fetch for them. The bytes go to the engine
as they are; it decodes them (JPEG, PNG, BMP, GIF, ...), checks the pixel count before decoding,
and places each image where its part stands in the message (``native/engine/vision.h``).
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameterError

__all__ = ["ImagePolicy", "extract_images", "has_images"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The default limit on one image's encoded size (OpenAI's is 20 MB)."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from, and how large they may be.

    Attributes:
        local_files: Read paths and ``file://`` URLs.
        remote: Fetch ``http(s)`` URLs.
        max_bytes: The most bytes one image may have, however it arrives.
        timeout: Seconds a fetch may take, connection and transfer together.
    """

    local_files: bool = True
    remote: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    timeout: float = 10.0


def _too_large(where: str, size: int, policy: ImagePolicy) -> InvalidParameterError:
    return InvalidParameterError(
        f"{where} has more than {policy.max_bytes} bytes ({size}); the limit is max_image_bytes"
    )


def _data_url(url: str, where: str, policy: ImagePolicy) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise InvalidParameterError(f"{where}: a data URL needs a ',' before its data")
    if not head.endswith(";base64"):
        data = urllib.parse.unquote_to_bytes(payload)
    else:
        if len(payload) * 3 // 4 > policy.max_bytes + 3:
            raise _too_large(where, len(payload) * 3 // 4, policy)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidParameterError(f"{where}: the data URL's base64 is invalid ({e})") from e
    if len(data) > policy.max_bytes:
        raise _too_large(where, len(data), policy)
    return data


def _local_file(path: str, where: str, policy: ImagePolicy) -> bytes:
    if not policy.local_files:
        raise InvalidParameterError(
            f"{where}: reading local image files is off here; send the image as a data: URL"
        )
    try:
        size = os.path.getsize(path)
        if size > policy.max_bytes:
            raise _too_large(where, size, policy)
        with open(path, "rb") as f:
            return f.read(policy.max_bytes + 1)
    except OSError as e:
        raise InvalidParameterError(f"{where}: cannot read the image file {path!r}: {e}") from e


def _fetch(url: str, where: str, policy: ImagePolicy) -> bytes:
    if not policy.remote:
        raise InvalidParameterError(
            f"{where}: fetching http(s) image URLs is off; allow it with allow_image_urls=True "
            "(server: --allow-image-urls), or send the image as a data: URL"
        )
    request = urllib.request.Request(url, headers={"User-Agent": "llamacpp-integrations"})
    try:
        with urllib.request.urlopen(request, timeout=policy.timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > policy.max_bytes:
                raise _too_large(where, int(length), policy)
            data = bytes(response.read(policy.max_bytes + 1))
    except InvalidParameterError:
        raise
    except urllib.error.HTTPError as e:
        raise InvalidParameterError(
            f"{where}: could not fetch {url!r}: HTTP {e.code} {e.reason}"
        ) from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise InvalidParameterError(f"{where}: could not fetch {url!r}: {reason}") from e
    if len(data) > policy.max_bytes:
        raise _too_large(where, len(data), policy)
    return data


def _resolve(url: Any, where: str, policy: ImagePolicy) -> bytes:
    if not isinstance(url, str) or not url:
        raise InvalidParameterError(f"{where} needs image_url.url (a data:, file or http(s) URL)")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return _data_url(url, where, policy)
    if scheme in ("http", "https"):
        return _fetch(url, where, policy)
    if scheme == "file":
        return _local_file(
            urllib.request.url2pathname(urllib.parse.urlparse(url).path), where, policy
        )
    if scheme and len(scheme) > 1:  # "C:" is a Windows drive, not a scheme
        raise InvalidParameterError(
            f"{where}: unsupported URL scheme {scheme!r} (expected data:, file: or http(s):)"
        )
    return _local_file(url, where, policy)


def has_images(messages: Sequence[Any]) -> bool:
    """Whether any message holds an ``image_url`` part."""
    return any(
        isinstance(m, Mapping)
        and isinstance(m.get("content"), list)
        and any(isinstance(p, Mapping) and p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def extract_images(
    messages: Sequence[Any], policy: ImagePolicy
) -> tuple[Sequence[Any], list[bytes]]:
    """The messages with each ``image_url`` part reduced to ``{"type": "image_url"}``, and
    the bytes of those images in order. Messages without images come back unchanged.

    Raises:
        InvalidParameterError: A part without a URL, an unreadable or unfetchable source, one
            the policy forbids, or one over ``policy.max_bytes``; the message names the image.
    """
    images: list[bytes] = []
    out: list[Any] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or not any(
            isinstance(p, Mapping) and p.get("type") == "image_url" for p in content
        ):
            out.append(message)
            continue
        parts: list[Any] = []
        for j, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "image_url"):
                parts.append(part)
                continue
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, Mapping) else spec
            where = f"messages[{i}].content[{j}] (image {len(images) + 1})"
            images.append(_resolve(url, where, policy))
            parts.append({"type": "image_url"})
        out.append({**message, "content": parts})
    return (out, images) if images else (messages, images)
