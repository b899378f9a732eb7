"""Downloading a GGUF file from a URL into the cache: ``model_url=`` of every adapter.

Used by the LlamaIndex ``LlamaCPP(model_url=...)`` and usable by any caller that has a URL
instead of a path (the LangChain adapters, scripts)::

    from llamacpp_integrations import Llama
    from llamacpp_integrations.download import download_model

    llm = Llama(model_path=download_model("https://example.com/model.gguf"))

The file goes to ``<cache>/downloads/<hash of the URL>/<file name>`` (the cache is
:func:`llamacpp_integrations.models.cache_dir`, moved with ``LLAMACPP_INTEGRATIONS_CACHE``).
Bytes arrive in ``<file name>.part`` next to it; an interrupted download resumes from there with
an HTTP ``Range`` request, and only a complete (and, when a SHA-256 is given, verified) file is
renamed into place. Later calls return the cached file at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from .errors import InvalidParameterError, ModelLoadError
from .models import cache_dir

__all__ = ["DEFAULT_TIMEOUT_S", "download_model", "model_url_cache_path"]

DEFAULT_TIMEOUT_S = 30.0
"""Seconds to wait for a connection or for the next bytes before giving up."""

_BLOCK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def model_url_cache_path(url: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`download_model` keeps the file of ``url``.

    Args:
        url: The model URL.
        cache: The cache directory; None uses the package cache.

    Returns:
        The path of the (possibly not yet downloaded) file.
    """
    parsed = _parse(url)
    name = Path(urllib.parse.unquote(parsed.path)).name or "model.gguf"
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    root = Path(cache).expanduser() if cache is not None else cache_dir() / "downloads"
    return root / key / name


def download_model(
    url: str,
    *,
    sha256: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Downloads ``url`` into the cache (once) and returns the local path.

    An interrupted download resumes where it stopped. The file is only moved into place once
    complete, and once its SHA-256 matched when ``sha256`` is given.

    Args:
        url: An ``http://`` or ``https://`` URL of a GGUF file.
        sha256: The expected SHA-256 (hex) of the file; a mismatch raises and deletes the file.
        cache: The directory to download into; None uses the package cache.
        progress: Draw a progress bar on stderr.
        timeout: Seconds to wait for the connection and for each read.

    Returns:
        The path of the downloaded file.

    Raises:
        InvalidParameterError: The URL is not http(s), or ``sha256`` is not 64 hex digits.
        ModelLoadError: The server cannot be reached, answers with an error, sends fewer bytes
            than announced, or the file fails its SHA-256 check.
    """
    if sha256 is not None and not _SHA256.match(sha256):
        raise InvalidParameterError(f"sha256 must be 64 hex digits, got {sha256!r}")
    expected = sha256.lower() if sha256 is not None else None
    target = model_url_cache_path(url, cache)
    marker = target.with_name(target.name + ".sha256")
    if target.is_file():
        if expected is None:
            return target
        if _marker_matches(marker, target, expected):
            return target
        if _file_sha256(target) == expected:
            _write_marker(marker, target, expected)
            return target
        target.unlink()  # a different file under the same URL: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    _fetch(url, partial, progress=progress, timeout=timeout)
    if expected is not None:
        digest = _file_sha256(partial)
        if digest != expected:
            partial.unlink()
            raise ModelLoadError(
                f"{url} failed its SHA-256 check (expected {expected}, got {digest}); "
                "the download was deleted. Check the URL and the sha256 you passed."
            )
    os.replace(partial, target)
    if expected is not None:
        _write_marker(marker, target, expected)
    return target


def _parse(url: str) -> urllib.parse.ParseResult:
    if not isinstance(url, str) or not url:
        raise InvalidParameterError(f"model_url must be a non-empty string, got {url!r}")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidParameterError(
            f"model_url must be an http:// or https:// URL, got {url!r}; "
            "pass a local file as model_path instead"
        )
    return parsed


def _fetch(url: str, partial: Path, *, progress: bool, timeout: float) -> None:
    """Downloads into ``partial``, resuming from its current size."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "llamacpp-integrations"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # nothing left to send: the partial file may already be whole
            total = _total_from_content_range(e.headers.get("Content-Range"))
            e.close()
            if total == have:
                return
            partial.unlink()
            return _fetch(url, partial, progress=progress, timeout=timeout)
        e.close()
        raise ModelLoadError(f"could not download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise ModelLoadError(f"could not download {url}: {reason}") from e
    with response:
        status = response.status
        if have and status == 206:
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the server sends the whole file (it may not support ranges)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        with open(partial, mode) as out:
            done = _copy(response, out, have, total, url, progress)
    if total is not None and done != total:
        raise ModelLoadError(
            f"could not download {url}: the connection closed after {done} of {total} bytes; "
            "call again to resume"
        )


def _copy(
    response: http.client.HTTPResponse,
    out: IO[bytes],
    done: int,
    total: int | None,
    url: str,
    progress: bool,
) -> int:
    name = Path(urllib.parse.urlparse(url).path).name or url
    last_draw = 0.0
    try:
        while block := response.read(_BLOCK):
            out.write(block)
            done += len(block)
            now = time.monotonic()
            if progress and (now - last_draw > 0.1 or (total is not None and done >= total)):
                _draw(name, done, total)
                last_draw = now
    except (OSError, http.client.HTTPException) as e:  # timeouts included
        out.flush()
        what = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else str(e)
        raise ModelLoadError(
            f"could not download {url}: {what} after {done} bytes; call again to resume"
        ) from e
    finally:
        if progress:
            sys.stderr.write("\n")
            sys.stderr.flush()
    return done


def _draw(name: str, done: int, total: int | None) -> None:
    if total:
        frac = min(done / total, 1.0)
        filled = int(frac * 30)
        bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:7.1f}/{total / 1e6:.1f} MB"
    else:
        bar = f"{done / 1e6:7.1f} MB"
    sys.stderr.write(f"\r  downloading {name} {bar}")
    sys.stderr.flush()


def _total_from_content_range(value: str | None) -> int | None:
    """The total size in ``Content-Range: bytes 100-199/200`` (or ``bytes */200``)."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _marker_matches(marker: Path, target: Path, expected: str) -> bool:
    try:
        return marker.read_text(encoding="utf-8").split() == [expected, _stamp(target)]
    except OSError:
        return False


def _write_marker(marker: Path, target: Path, digest: str) -> None:
    with contextlib.suppress(OSError):  # only a cache of the check
        marker.write_text(f"{digest} {_stamp(target)}\n", encoding="utf-8")
