"""``hub_model_path`` and ``Llama.from_pretrained`` against a stand-in Hub on 127.0.0.1.

The stand-in answers what huggingface_hub asks: the model info API
(``/api/models/{repo}[/revision/{rev}]``) and ``/{repo}/resolve/{rev}/{path}`` (HEAD with the
commit, ETag and size headers, GET with ``Range``), and fails with the ``X-Error-Code`` header
(``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) as the Hub does.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported,
so each call runs in a fresh Python process with those set, while the server (and its request
log) lives in the test process.
"""

from __future__ import annotations

import ast
import hashlib
import http.server
import inspect
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from engine_source import engine_models_dir

pytest.importorskip("huggingface_hub")

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"


def _payload(seed: str, size: int) -> bytes:
    """``size`` bytes that differ per ``seed`` (a wrong file or a shifted resume shows)."""
    block = hashlib.sha256(seed.encode()).digest()
    return (bytes(range(256)) + block) * (size // 288) + block[: size % 288]


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = COMMIT
    gated: bool = False


@dataclass
class FakeHub:
    """The stand-in Hub: ``repos`` by id; ``requests`` logs ``(method, path, headers)`` (header
    names in lower case).

    ``cuts[path]`` lists, for the next GETs of that repository path, how many body bytes to
    send before closing the connection (the full length is announced each time).
    """

    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    cuts: dict[str, list[int]] = field(default_factory=dict)
    httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def file_gets(self) -> list[str]:
        return [p for m, p, _ in self.requests if m == "GET" and "/resolve/" in p]

    def start(self) -> None:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.requests.append(("HEAD", self.path, self._headers()))
                self._route(body=False)

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path, self._headers()))
                self._route(body=True)

            def _headers(self) -> dict[str, str]:
                return {k.lower(): v for k, v in self.headers.items()}

            def _route(self, body: bool) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
                    self._info("/".join(parts[2:4]), parts[5] if len(parts) == 6 else "main")
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
                else:
                    self._error(404, None, body)

            def _error(self, code: int, error_code: str | None, body: bool) -> None:
                data = json.dumps({"error": error_code or "Not Found"}).encode()
                self.send_response(code)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                    self.send_header("X-Error-Message", error_code)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _repo(self, repo_id: str, revision: str, body: bool) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(401, "RepoNotFound", body)
                    return None
                if revision not in ("main", repo.commit):
                    self._error(404, "RevisionNotFound", body)
                    return None
                return repo

            def _info(self, repo_id: str, revision: str) -> None:
                repo = self._repo(repo_id, revision, True)
                if repo is None:
                    return
                info = {
                    "_id": "0" * 24,
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.commit,
                    "private": False,
                    "gated": "auto" if repo.gated else False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                }
                data = json.dumps(info).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _resolve(self, repo_id: str, revision: str, name: str, body: bool) -> None:
                repo = self._repo(repo_id, revision, body)
                if repo is None:
                    return
                if repo.gated and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._error(401, "GatedRepo", body)
                    return
                data = repo.files.get(name)
                if data is None:
                    self._error(404, "EntryNotFound", body)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and body:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                etag = hashlib.sha256(data).hexdigest()
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return
                cuts = hub.cuts.get(name)
                if cuts:
                    self.wfile.write(data[start : start + cuts.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return  # the connection closes before the announced length
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    h = FakeHub()
    h.start()
    try:
        yield h
    finally:
        h.stop()


_RUNNER = r"""
import json, sys
args = json.loads(sys.argv[1])
call = args.pop("_call")
if args.pop("_no_backoff", False):
    # huggingface_hub sleeps 1 s before each of its 5 resume attempts; the test needs no wait
    import types, huggingface_hub.file_download as fd
    fd.time = types.SimpleNamespace(sleep=lambda s: None)
if args.pop("_without_hub", False):
    sys.modules["huggingface_hub"] = None
try:
    if call == "hub":
        from llamacpp_integrations.hub import hub_model_path
        out = {"path": hub_model_path(**args)}
    elif call == "adapters":
        from llamacpp_integrations.langchain import ChatLlamaCpp, LlamaCppEmbeddings
        from llamacpp_integrations.llama_index import LlamaCPP
        chat = ChatLlamaCpp.from_pretrained(**args, vocab_only=True, temperature=0.1)
        emb = LlamaCppEmbeddings.from_pretrained(**args, vocab_only=True)
        li = LlamaCPP.from_pretrained(**args, model_kwargs={"vocab_only": True})
        out = {"paths": [chat.llama.model_path, emb.llama.model_path, li.model_path],
               "temperature": chat.temperature, "shared": chat.llama is emb.llama,
               "tokens": li.tokenize("Hello world")}
    elif call == "vision":
        from llamacpp_integrations import Llama
        from llamacpp_integrations.langchain import ChatLlamaCpp
        from llamacpp_integrations.llama_index import LlamaCPP
        llm = Llama.from_pretrained(**args, n_ctx=256, n_threads=2)
        chat = ChatLlamaCpp.from_pretrained(**args, n_ctx=256)
        li = LlamaCPP.from_pretrained(**args, context_window=256)
        out = {"path": llm.model_path, "mmproj": llm.mmproj_path, "vision": [
            llm.supports_vision, chat.llama.supports_vision, li._client.supports_vision]}
    else:
        from llamacpp_integrations import Llama
        direct = args.pop("_direct")
        llm = Llama.from_pretrained(**args)
        ref = Llama(direct, vocab_only=True)
        text = "Hello world, the quick brown fox"
        out = {"path": llm.model_path, "tokens": llm.tokenize(text.encode()),
               "expected": ref.tokenize(text.encode()), "text": llm.detokenize(
                   llm.tokenize(text.encode(), add_bos=False)).decode()}
except Exception as e:
    out = {"error": type(e).__name__, "message": str(e),
           "mro": [c.__name__ for c in type(e).__mro__]}
print("RESULT " + json.dumps(out))
"""


@dataclass
class Env:
    hub: FakeHub
    home: Path

    @property
    def cache(self) -> Path:
        return self.home / "hub"

    def call(self, *, offline: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Runs ``hub_model_path(**kwargs)`` (or ``Llama.from_pretrained`` with
        ``_call="llama"``) in a fresh process pointed at the stand-in Hub."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=self.hub.url,
            HF_HOME=str(self.home),
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1",
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        args = {"_call": "hub", **kwargs}
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER, json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, f"no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
        return result


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> Env:
    return Env(hub, tmp_path / "hf")


def _error(result: dict[str, Any]) -> str:
    """The message of a ModelLoadError (which must be one of ours)."""
    assert "error" in result, f"expected an error, got {result}"
    assert result["error"] == "ModelLoadError", result
    assert "LlamaError" in result["mro"]
    message: str = result["message"]
    return message


Q4 = _payload("q4", 300_000)
Q8 = _payload("q8", 200_000)
PARTS = [_payload(f"part{i}", 100_000 + i) for i in range(1, 4)]


def _quants_repo() -> Repo:
    return Repo(
        {
            "README.md": b"# model\n",
            "model-Q4_K_M.gguf": Q4,
            "model-Q8_0.gguf": Q8,
            "split/big-00001-of-00003.gguf": PARTS[0],
            "split/big-00002-of-00003.gguf": PARTS[1],
            "split/big-00003-of-00003.gguf": PARTS[2],
        }
    )


def test_glob_filename_downloads_its_one_match_into_the_hub_cache(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    result = env.call(repo_id="owner/model-GGUF", filename="*Q4_K_M.gguf")
    path = Path(result["path"])
    assert path.name == "model-Q4_K_M.gguf"
    assert path.read_bytes() == Q4
    assert path.parent == env.cache / "models--owner--model-GGUF" / "snapshots" / COMMIT
    assert env.hub.file_gets() == ["/owner/model-GGUF/resolve/main/model-Q4_K_M.gguf"]


def test_split_gguf_downloads_every_part_and_returns_the_first(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    result = env.call(repo_id="owner/model-GGUF", filename="split/big-*.gguf")
    first = Path(result["path"])
    assert first.name == "big-00001-of-00003.gguf"
    for i, data in enumerate(PARTS, 1):
        assert (first.parent / f"big-{i:05d}-of-00003.gguf").read_bytes() == data
    assert len(env.hub.file_gets()) == 3
    # naming any one part fetches the set too, and still answers with the first part
    again = env.call(repo_id="owner/model-GGUF", filename="split/big-00003-of-00003.gguf")
    assert again["path"] == result["path"]


def test_a_split_model_with_a_missing_part_is_refused(env: Env) -> None:
    repo = _quants_repo()
    del repo.files["split/big-00002-of-00003.gguf"]
    env.hub.repos["owner/model-GGUF"] = repo
    message = _error(env.call(repo_id="owner/model-GGUF", filename="split/big-*.gguf"))
    assert "split/big-00002-of-00003.gguf" in message
    assert env.hub.file_gets() == []


def test_second_call_is_answered_from_the_cache_without_a_file_request(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    first = env.call(repo_id="owner/model-GGUF", filename="model-Q8_0.gguf")
    assert len(env.hub.file_gets()) == 1
    second = env.call(repo_id="owner/model-GGUF", filename="model-Q8_0.gguf")
    assert second["path"] == first["path"]
    assert len(env.hub.file_gets()) == 1  # only the metadata was asked again
    assert Path(second["path"]).read_bytes() == Q8


def test_local_dir_receives_real_files_and_additional_files(env: Env, tmp_path: Path) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    local = tmp_path / "models"
    result = env.call(
        repo_id="owner/model-GGUF",
        filename="model-Q4_K_M.gguf",
        additional_files=["README.md"],
        local_dir=str(local),
    )
    path = Path(result["path"])
    assert path == local / "model-Q4_K_M.gguf"
    assert not path.is_symlink() and path.read_bytes() == Q4
    assert (local / "README.md").read_bytes() == b"# model\n"
    assert not (env.cache / "models--owner--model-GGUF" / "blobs").exists()
    # offline, the local folder answers alone
    count = len(env.hub.requests)
    again = env.call(
        repo_id="owner/model-GGUF", filename="*Q4*", local_dir=str(local), local_files_only=True
    )
    assert again["path"] == str(path)
    assert len(env.hub.requests) == count


def test_offline_mode_returns_the_cached_file_without_any_request(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    online = env.call(repo_id="owner/model-GGUF", filename="*Q4_K_M.gguf")
    count = len(env.hub.requests)
    for kwargs in ({"offline": True}, {"local_files_only": True}):
        result = env.call(repo_id="owner/model-GGUF", filename="*Q4_K_M.gguf", **kwargs)
        assert result["path"] == online["path"]
    assert len(env.hub.requests) == count


def test_offline_mode_without_a_cached_copy_is_a_clear_error(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    message = _error(env.call(offline=True, repo_id="owner/model-GGUF", filename="*Q4_K_M.gguf"))
    assert "offline" in message and "HF_HUB_OFFLINE=1" in message
    # the repository is cached but this file is not: the message lists what is
    env.call(repo_id="owner/model-GGUF", filename="model-Q8_0.gguf")
    count = len(env.hub.requests)
    message = _error(
        env.call(repo_id="owner/model-GGUF", filename="*Q4_K_M.gguf", local_files_only=True)
    )
    assert "offline" in message and "model-Q8_0.gguf" in message
    assert len(env.hub.requests) == count


def test_missing_repository_is_named(env: Env) -> None:
    message = _error(env.call(repo_id="owner/nothing-here", filename="*.gguf"))
    assert "owner/nothing-here" in message and "not found" in message


def test_missing_revision_is_named(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    message = _error(env.call(repo_id="owner/model-GGUF", filename="*Q8*", revision="v9"))
    assert "'v9'" in message and "does not exist" in message


def test_missing_file_lists_the_gguf_files_of_the_repo(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    message = _error(env.call(repo_id="owner/model-GGUF", filename="*Q5_K_M.gguf"))
    assert "'*Q5_K_M.gguf'" in message
    for name in ("model-Q4_K_M.gguf", "model-Q8_0.gguf", "split/big-00001-of-00003.gguf"):
        assert name in message
    assert "README.md" not in message
    assert env.hub.file_gets() == []


def test_several_matches_are_listed_and_nothing_is_downloaded(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    message = _error(env.call(repo_id="owner/model-GGUF", filename="*.gguf"))
    assert "matches 3 models" in message
    for name in ("model-Q4_K_M.gguf", "model-Q8_0.gguf", "split/big-00001-of-00003.gguf"):
        assert name in message
    assert env.hub.file_gets() == []


def test_gated_repository_needs_the_token(env: Env) -> None:
    env.hub.repos["owner/gated-GGUF"] = Repo({"m.gguf": Q8}, gated=True)
    message = _error(env.call(repo_id="owner/gated-GGUF", filename="m.gguf"))
    assert "gated" in message and "token" in message
    result = env.call(repo_id="owner/gated-GGUF", filename="m.gguf", token=TOKEN)
    assert Path(result["path"]).read_bytes() == Q8
    assert env.hub.requests[-1][2].get("authorization") == f"Bearer {TOKEN}"


def test_a_dropped_connection_is_resumed_with_a_range_request(env: Env) -> None:
    """What arrived before the drop is not fetched again. huggingface_hub 1.x resumes within
    the call (after its last whole 10 MiB chunk, hence a file larger than that); 0.x raises,
    and the next call resumes from the partial blob."""
    big = _payload("big", 11 * 1024 * 1024 + 7)
    env.hub.repos["owner/model-GGUF"] = Repo({"big.gguf": big})
    env.hub.cuts["big.gguf"] = [len(big) - 100_000]
    result = env.call(repo_id="owner/model-GGUF", filename="big.gguf", _no_backoff=True)
    if "error" in result:
        assert "interrupted" in _error(result)
        result = env.call(repo_id="owner/model-GGUF", filename="big.gguf")
    assert "path" in result, result
    assert Path(result["path"]).read_bytes() == big
    ranges = [h.get("range") for m, p, h in env.hub.requests if m == "GET" and "/resolve/" in p]
    assert len(ranges) == 2 and ranges[0] is None
    assert ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0


def test_an_interrupted_download_is_a_clear_error_and_the_next_call_completes(
    env: Env,
) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    # mid-body, then every resume attempt of huggingface_hub is cut before any byte
    env.hub.cuts["model-Q4_K_M.gguf"] = [150_000] + [0] * 10
    message = _error(
        env.call(repo_id="owner/model-GGUF", filename="model-Q4_K_M.gguf", _no_backoff=True)
    )
    assert "model-Q4_K_M.gguf" in message and "interrupted" in message
    assert "call again" in message
    snapshot = env.cache / "models--owner--model-GGUF" / "snapshots" / COMMIT
    assert not (snapshot / "model-Q4_K_M.gguf").exists()  # no partial file passes for the model
    env.hub.cuts.clear()
    result = env.call(repo_id="owner/model-GGUF", filename="model-Q4_K_M.gguf")
    assert Path(result["path"]).read_bytes() == Q4


def test_unreachable_hub_falls_back_to_the_cache_or_says_so(env: Env) -> None:
    env.hub.repos["owner/model-GGUF"] = _quants_repo()
    cached = env.call(repo_id="owner/model-GGUF", filename="*Q8_0.gguf")
    env.hub.stop()  # connections are refused from now on
    assert env.call(repo_id="owner/model-GGUF", filename="*Q8_0.gguf")["path"] == cached["path"]
    message = _error(env.call(repo_id="owner/other-GGUF", filename="*.gguf"))
    assert "could not reach the Hub" in message and "owner/other-GGUF" in message


def test_malformed_arguments_are_invalid_parameters(env: Env) -> None:
    result = env.call(repo_id="not a repo id!", filename="*.gguf")
    assert result["error"] == "InvalidParameterError", result
    result = env.call(repo_id="owner/model-GGUF", filename="")
    assert result["error"] == "InvalidParameterError", result
    assert env.hub.requests == []


def test_without_huggingface_hub_the_error_names_the_extra(env: Env) -> None:
    result = env.call(repo_id="owner/model-GGUF", filename="*.gguf", _without_hub=True)
    assert result["error"] == "ImportError"
    assert 'pip install "llamacpp-integrations[hub]"' in result["message"]


# ------------------------------------------------------------------ end to end with a real GGUF


@pytest.fixture(scope="module")
def vocab_gguf() -> Path:
    """llama.cpp's ``ggml-vocab-llama-spm.gguf`` from the pinned engine source."""
    path: Path = engine_models_dir() / "ggml-vocab-llama-spm.gguf"
    assert path.is_file()
    return path


def test_from_pretrained_loads_a_real_gguf_from_the_hub(env: Env, vocab_gguf: Path) -> None:
    data = vocab_gguf.read_bytes()
    env.hub.repos["ggml-org/vocabs"] = Repo(
        {"ggml-vocab-llama-spm.gguf": data, "ggml-vocab-gpt-2.gguf": b"not this one"}
    )
    result = env.call(
        _call="llama",
        _direct=str(vocab_gguf),
        repo_id="ggml-org/vocabs",
        filename="*llama-spm.gguf",
        vocab_only=True,
    )
    assert "error" not in result, result
    path = Path(result["path"])
    assert path.parent == env.cache / "models--ggml-org--vocabs" / "snapshots" / COMMIT
    assert path.read_bytes() == data
    assert len(result["tokens"]) > 5
    assert result["tokens"] == result["expected"]
    assert result["text"].lstrip() == "Hello world, the quick brown fox"


def test_the_adapters_load_from_the_hub_too(env: Env, vocab_gguf: Path) -> None:
    data = vocab_gguf.read_bytes()
    env.hub.repos["ggml-org/vocabs"] = Repo({"ggml-vocab-llama-spm.gguf": data})
    result = env.call(_call="adapters", repo_id="ggml-org/vocabs", filename="*.gguf")
    assert "error" not in result, result
    paths = {Path(p) for p in result["paths"]}
    assert len(paths) == 1 and next(iter(paths)).read_bytes() == data
    assert result["temperature"] == 0.1  # the other keywords are the adapter's fields
    assert result["shared"] is True  # one engine for the same file and settings
    assert len(result["tokens"]) > 1


def test_the_readme_example_calls_from_pretrained_with_real_parameters() -> None:
    """The README's example needs the real Hub, so the README test does not run it; its call is
    checked against the signatures here, so a renamed parameter shows."""
    from llamacpp_integrations import Llama

    section = (
        (ROOT / "README.md")
        .read_text(encoding="utf-8")
        .split("### Models from the Hugging Face Hub", 1)[1]
    )
    match = re.search(r"```py\n(.*?)```", section, flags=re.S)
    assert match is not None
    calls = [
        node
        for node in ast.walk(ast.parse(match.group(1)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "from_pretrained"
    ]
    assert len(calls) == 1
    known = set(inspect.signature(Llama.from_pretrained).parameters)
    known |= set(inspect.signature(Llama.__init__).parameters)
    assert {"repo_id", "filename"} <= {kw.arg for kw in calls[0].keywords}
    assert {kw.arg for kw in calls[0].keywords} <= known
