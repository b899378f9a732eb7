"""GGUF models from the Hugging Face Hub: ``Llama.from_pretrained(repo_id, filename)``.

:func:`hub_model_path` finds ``filename`` (a name or an ``fnmatch`` pattern such as
``"*Q4_K_M.gguf"``) among the files of ``repo_id``, downloads it with ``huggingface_hub`` into the
hub cache (or ``local_dir``) and returns its local path. A split GGUF
(``name-00001-of-00003.gguf``) is downloaded whole and the first part's path is returned:
llama.cpp opens the other parts itself.

Downloads are ``huggingface_hub``'s own: its cache (``HF_HOME``, ``HF_HUB_CACHE``), its token
(``HF_TOKEN``, ``hf auth login``), its progress bars (``HF_HUB_DISABLE_PROGRESS_BARS=1`` turns
them off), its endpoint (``HF_ENDPOINT``) and its offline mode (``HF_HUB_OFFLINE=1``), in which
the cached file is returned without any request. ``huggingface_hub`` is optional:
``pip install "llamacpp-integrations[hub]"``.

Every failure is a :class:`~llamacpp_integrations.errors.ModelLoadError` (or
:class:`~llamacpp_integrations.errors.InvalidParameterError` for a malformed argument) whose
message names the cause: a missing repository, revision or file, a gated or private repository,
an unreachable Hub, or an interrupted download (calling again downloads the file again).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .errors import InvalidParameterError, ModelLoadError

__all__ = ["HUB_OPTIONS", "from_hub", "hub_model_path", "split_gguf_parts"]

logger = logging.getLogger("llamacpp_integrations")

_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "true", "yes", "on"}
_TRANSPORT_MODULES = {"httpx", "httpx2", "requests", "urllib3", "h11", "httpcore"}
_INSTALL = 'pip install "llamacpp-integrations[hub]"'


def hub_model_path(
    repo_id: str,
    filename: str,
    *,
    additional_files: Sequence[str] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    local_dir_use_symlinks: bool | str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> str:
    """Downloads a GGUF model from the Hugging Face Hub (once) and returns its local path.

    Args:
        repo_id: The model repository, ``"owner/name"``.
        filename: A file of the repository, or an ``fnmatch`` pattern (``"*Q4_K_M.gguf"``)
            matched against its paths; it must match exactly one file, or the parts of one
            split GGUF (``name-00001-of-00003.gguf``; all parts are downloaded).
        additional_files: More files (names or patterns, each matching one file or split set)
            to download next to the model, e.g. a multimodal projector.
        local_dir: Put the files in this folder (mirroring the repository's paths) instead of
            the hub cache.
        local_dir_use_symlinks: Accepted for llama-cpp-python compatibility. ``huggingface_hub``
            always places real files in ``local_dir`` now; a value other than ``"auto"`` warns.
        cache_dir: The hub cache folder; None uses ``huggingface_hub``'s (``HF_HUB_CACHE``).
        revision: A branch, tag or commit hash; None is the default branch.
        token: A Hub token; None uses the saved login or ``HF_TOKEN``; False sends none.
        local_files_only: Never ask the Hub: return the cached file or raise. None follows
            ``HF_HUB_OFFLINE``.

    Returns:
        The local path of ``filename`` (of the first part for a split GGUF).

    Raises:
        ImportError: ``huggingface_hub`` is not installed.
        InvalidParameterError: An argument is malformed (an empty name, an invalid repo id).
        ModelLoadError: The repository, revision or file does not exist, matches several files,
            is gated or private without a valid token, the Hub cannot be reached and the file
            is not cached, offline mode is on and the file is not cached, or the download was
            interrupted (call again to download it again).
    """
    hf = _import_hub()
    _check_name(repo_id, "repo_id")
    _check_name(filename, "filename")
    patterns = [filename, *_additional(additional_files)]
    if local_dir_use_symlinks != "auto":
        warnings.warn(
            "local_dir_use_symlinks has no effect: huggingface_hub places real files in "
            "local_dir (and symlinks into its own cache otherwise)",
            UserWarning,
            stacklevel=2,
        )
    try:
        hf.utils.validate_repo_id(repo_id)
    except ValueError as e:
        raise InvalidParameterError(f"repo_id {repo_id!r} is not a valid repository id: {e}") from e
    if revision is not None:
        _check_name(revision, "revision")

    offline = bool(local_files_only) or _offline_mode(hf)
    reason = _offline_reason(local_files_only)
    files, where = _list_files(hf, repo_id, revision, token, cache_dir, local_dir, offline, reason)
    names: list[str] = []
    for pattern in patterns:
        for name in _select(files, pattern, where, offline=offline):
            if name not in names:
                names.append(name)
    paths = [
        _download(
            hf,
            repo_id,
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            token=token,
            offline=offline,
            reason=reason,
        )
        for name in names
    ]
    return paths[0]


def split_gguf_parts(name: str) -> list[str] | None:
    """All part names of the split GGUF that ``name`` belongs to, first part first.

    Args:
        name: A file name such as ``dir/model-00002-of-00003.gguf``.

    Returns:
        ``[dir/model-00001-of-00003.gguf, ...]``, or None when ``name`` is not a split part.
    """
    m = _SPLIT.match(name)
    if m is None or int(m["count"]) < 1:
        return None
    count = int(m["count"])
    return [f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


# ---------------------------------------------------------------------------------- internals


class _HubUnreachable(Exception):
    """Listing the repository failed for a reason the cache may answer (network, 5xx)."""


def _import_hub() -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.file_download
        import huggingface_hub.utils  # the submodules are used as attributes below
    except ImportError as e:
        raise ImportError(
            f"Llama.from_pretrained and hub_model_path need huggingface_hub: {_INSTALL}"
        ) from e
    return huggingface_hub


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(f"{what} must be a non-empty string, got {value!r}")


def _additional(additional_files: Sequence[str] | None) -> list[str]:
    if additional_files is None:
        return []
    items = [additional_files] if isinstance(additional_files, str) else list(additional_files)
    for item in items:
        _check_name(item, "each of additional_files")
    return items


def _list_files(
    hf: ModuleType,
    repo_id: str,
    revision: str | None,
    token: str | bool | None,
    cache_dir: str | os.PathLike[str] | None,
    local_dir: str | os.PathLike[str] | None,
    offline: bool,
    reason: str,
) -> tuple[list[str], str]:
    """The repository's paths, and where they were listed (for messages): from the Hub, or from
    the local copy when offline or when the Hub cannot be reached."""
    ref = f"{repo_id}" + (f" (revision {revision})" if revision else "")
    if offline:
        files = _cached_files(hf, repo_id, revision, cache_dir, local_dir)
        if files is None:
            raise ModelLoadError(
                f"{ref} is not in {_cache_location(hf, cache_dir, local_dir)} and offline mode "
                f"is on ({reason}): download it once online first"
            )
        return files, f"the local copy of {ref}"
    try:
        return _remote_files(hf, repo_id, revision, token), ref
    except _HubUnreachable as e:
        cached = _cached_files(hf, repo_id, revision, cache_dir, local_dir)
        if cached is None:
            raise ModelLoadError(
                f"could not reach the Hub to list the files of {ref} ({e}), and it is not "
                f"in {_cache_location(hf, cache_dir, local_dir)}"
            ) from e.__cause__
        logger.warning("could not reach the Hub (%s); using the cached copy of %s", e, ref)
        return cached, f"the local copy of {ref} (the Hub could not be reached: {e})"


def _offline_mode(hf: ModuleType) -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub read it at import, or as set since."""
    if bool(getattr(hf.constants, "HF_HUB_OFFLINE", False)):
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _offline_reason(local_files_only: bool | None) -> str:
    return "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"


def _cache_location(
    hf: ModuleType,
    cache_dir: str | os.PathLike[str] | None,
    local_dir: str | os.PathLike[str] | None,
) -> str:
    if local_dir is not None:
        return f"local_dir {os.fspath(local_dir)}"
    return f"the hub cache {_cache_root(hf, cache_dir)}"


def _cache_root(hf: ModuleType, cache_dir: str | os.PathLike[str] | None) -> Path:
    root = cache_dir if cache_dir is not None else hf.constants.HF_HUB_CACHE
    return Path(root).expanduser()


def _cached_files(
    hf: ModuleType,
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_dir: str | os.PathLike[str] | None,
) -> list[str] | None:
    """The repository paths present locally (in ``local_dir``, or in the cache's snapshot of
    ``revision``), or None when no file of it is there."""
    if local_dir is not None:
        root = Path(local_dir).expanduser()
        if not root.is_dir():
            return None
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != ".cache"
        )
        return files or None
    folder = hf.file_download.repo_folder_name(repo_id=repo_id, repo_type="model")
    storage = _cache_root(hf, cache_dir) / folder
    rev = revision or hf.constants.DEFAULT_REVISION
    commit = rev
    if not _COMMIT.match(rev):
        try:
            commit = (storage / "refs" / rev).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    return files or None  # an interrupted first download leaves an empty snapshot folder


def _remote_files(
    hf: ModuleType, repo_id: str, revision: str | None, token: str | bool | None
) -> list[str]:
    try:
        info = hf.HfApi().model_info(repo_id, revision=revision, token=token)
    except Exception as e:
        if _is_unreachable(hf, e):
            raise _HubUnreachable(_describe(e)) from e
        raise _model_load_error(hf, e, repo_id, None, revision) from e
    return sorted(s.rfilename for s in (info.siblings or []))


def _select(files: list[str], pattern: str, where: str, *, offline: bool) -> list[str]:
    """The file ``pattern`` names among ``files``: one file, or every part of one split GGUF."""
    matches = (
        [pattern] if pattern in files else [f for f in files if fnmatch.fnmatchcase(f, pattern)]
    )
    if not matches:
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        listed = ", ".join(ggufs) if ggufs else "none"
        hint = "; offline mode is on, so only cached files were looked at" if offline else ""
        raise ModelLoadError(
            f"no file in {where} matches {pattern!r}{hint}. Its GGUF files: {listed}"
        )
    groups: dict[str, list[str]] = {}
    for name in matches:
        parts = split_gguf_parts(name)
        groups.setdefault(parts[0] if parts else name, []).append(name)
    if len(groups) > 1:
        raise ModelLoadError(
            f"{pattern!r} matches {len(groups)} models in {where}: {', '.join(groups)}. "
            "Pass one file name, or a pattern that matches only one"
        )
    (first,) = groups
    parts = split_gguf_parts(first)
    if parts is None:
        return [first]
    missing = [p for p in parts if p not in files]
    if missing:
        raise ModelLoadError(
            f"the split model {first} in {where} lacks {len(missing)} of its {len(parts)} parts: "
            f"{', '.join(missing)}"
        )
    return parts


def _download(
    hf: ModuleType,
    repo_id: str,
    name: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    offline: bool,
    reason: str,
) -> str:
    try:
        path = hf.hf_hub_download(
            repo_id,
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            token=token,
            local_files_only=offline,
        )
    except Exception as e:
        if offline and isinstance(e, hf.errors.LocalEntryNotFoundError):
            raise ModelLoadError(
                f"{name} of {repo_id} is not in {_cache_location(hf, cache_dir, local_dir)} "
                f"and offline mode is on ({reason}): download it once online first"
            ) from e
        raise _model_load_error(hf, e, repo_id, name, revision) from e
    return str(path)


def _model_load_error(
    hf: ModuleType, e: Exception, repo_id: str, name: str | None, revision: str | None
) -> Exception:
    """Our exception for an exception of huggingface_hub (or its HTTP client); an unrelated
    exception is returned unchanged, to be re-raised as it is."""
    errors = hf.errors
    ref = f"{repo_id}" + (f" (revision {revision})" if revision else "")
    what = f"{name} of {ref}" if name else ref
    login = "pass token=... or log in with `hf auth login`"
    if isinstance(e, errors.GatedRepoError):
        return ModelLoadError(
            f"{ref} is gated: accept its conditions on its Hub page with your account, then "
            f"{login} ({_describe(e)})"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return ModelLoadError(
            f"repository {repo_id} was not found on the Hub (HTTP {_status(e)}); "
            f"if it is private, {login}"
        )
    if isinstance(e, errors.RevisionNotFoundError):
        return ModelLoadError(f"revision {revision!r} does not exist in {repo_id}")
    if isinstance(e, errors.LocalEntryNotFoundError):
        cause = e.__cause__ or e.__context__
        return ModelLoadError(
            f"could not reach the Hub for {what} ({_describe(cause or e)}), and it is not cached"
        )
    if isinstance(e, errors.EntryNotFoundError):
        return ModelLoadError(f"{name} is not a file of {ref}")
    if isinstance(e, errors.HfHubHTTPError):
        status = _status(e)
        if status == 401:
            return ModelLoadError(f"the Hub refused the token for {what} (HTTP 401); {login}")
        if status == 403:
            return ModelLoadError(
                f"the Hub denied access to {what} (HTTP 403): the token lacks read access "
                f"to it ({_describe(e)})"
            )
        return ModelLoadError(f"the Hub failed on {what}: {_describe(e)}; call again")
    if isinstance(e, ValueError) and type(e).__module__.startswith("huggingface_hub"):
        return InvalidParameterError(f"{what}: {e}")
    if _is_transport(e) or isinstance(e, OSError):
        return ModelLoadError(
            f"the download of {what} was interrupted ({_describe(e)}); call again to download "
            "it again"
        )
    return e


def _is_transport(e: BaseException) -> bool:
    """An error of the HTTP client (connection refused or dropped, timeout, protocol)."""
    return type(e).__module__.split(".")[0] in _TRANSPORT_MODULES


def _is_unreachable(hf: ModuleType, e: BaseException) -> bool:
    if isinstance(e, hf.errors.OfflineModeIsEnabled) or _is_transport(e):
        return True
    if isinstance(e, hf.errors.HfHubHTTPError):
        status = _status(e)
        return isinstance(status, int) and status >= 500
    return False


def _status(e: BaseException) -> int | None:
    status = getattr(getattr(e, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


HUB_OPTIONS = (
    "additional_files",
    "local_dir",
    "local_dir_use_symlinks",
    "cache_dir",
    "revision",
    "token",
    "local_files_only",
)
"""The keywords of :func:`hub_model_path` that an adapter's ``from_pretrained`` passes on."""

T = TypeVar("T")


def from_hub(cls: Callable[..., T], repo_id: str, filename: str, kwargs: dict[str, Any]) -> T:
    """The adapters' ``from_pretrained``: downloads a GGUF file from the Hugging Face Hub (once,
    as :func:`hub_model_path`; ``filename`` may be a pattern) and returns
    ``cls(model_path=<the file>, **kwargs)``. The :data:`HUB_OPTIONS` among ``kwargs``
    (``additional_files``, ``local_dir``, ``cache_dir``, ``revision``, ``token``,
    ``local_files_only``) go to the download, every other keyword to ``cls``; ``mmproj_filename``
    names a vision projector of the same repository, downloaded too and passed as
    ``mmproj_path``."""
    hub = {k: kwargs.pop(k) for k in HUB_OPTIONS if k in kwargs}
    mmproj = kwargs.pop("mmproj_filename", None)
    path = hub_model_path(repo_id, filename, **hub)
    if mmproj is not None:
        hub.pop("additional_files", None)
        kwargs["mmproj_path"] = hub_model_path(repo_id, mmproj, **hub)
    return cls(model_path=path, **kwargs)
