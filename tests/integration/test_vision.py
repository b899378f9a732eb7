"""Images in chat through llama.cpp's mtmd, end to end on a generated SmolVLM projector.

No small vision model can be downloaded, so ``tests/vision_model.py`` writes one: a projector of
SmolVLM's real architecture (idefics3: a SigLIP tower and a pixel-shuffle connector) with random
weights, and a copy of the default model whose vocabulary holds the image tokens SmolVLM wraps
images in. The real mtmd pipeline runs (preprocessing, tiling, the encoder, the embeddings in the
language model's KV); the answers mean nothing, so the tests check what the pipeline guarantees:
token counts, determinism, that different images differ, the prefix cache, no cross-talk between
concurrent requests, and a clear error for every bad image.
"""

from __future__ import annotations

import base64
import http.server
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from engine_source import engine_models_dir
from vision_model import (
    expected_image_tokens,
    expected_marker_tokens,
    write_png,
    write_projector,
    write_text_model,
)

from llamacpp_integrations import Llama, default_model_path
from llamacpp_integrations.errors import InvalidParameterError, ModelLoadError

pytestmark = pytest.mark.integration

TEST_JPEG = engine_models_dir().parent / "tools" / "mtmd" / "test-1.jpeg"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vision")
    out = {"projector": d / "mmproj.gguf", "text": d / "smollm2-vlm.gguf"}
    write_projector(out["projector"], seed=0)
    write_text_model(default_model_path(), out["text"])
    rng = np.random.default_rng(7)
    drawn = {
        "noise": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "red": np.tile(np.array([220, 30, 30], np.uint8), (40, 40, 1)),
        "blue": np.tile(np.array([20, 40, 230], np.uint8), (40, 40, 1)),
        "wide": rng.integers(0, 256, (100, 300, 3), dtype=np.uint8),
    }
    for name, pixels in drawn.items():
        out[name] = d / f"{name}.png"
        write_png(out[name], pixels)
    return out


@pytest.fixture(scope="module")
def vlm(files: dict[str, Path]) -> Iterator[Llama]:
    llm = Llama(files["text"], mmproj_path=files["projector"], n_ctx=1024, n_seq_max=4, n_threads=2)
    yield llm
    llm.close()


def data_url(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user(*parts: str | dict[str, Any]) -> list[dict[str, Any]]:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return [{"role": "user", "content": content}]


def image(url: str | Path) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": str(url)}}


def ask(llm: Llama, messages: list[dict[str, Any]], cold: bool = True, **kw: Any) -> Any:
    if cold:
        llm.reset()  # greedy output from a cold cache, as the comparisons below need
    kw.setdefault("max_tokens", 12)
    return llm.create_chat_completion(messages, temperature=0, **kw)


def text(response: Any) -> str:
    return str(response["choices"][0]["message"]["content"])


# --------------------------------------------------------------------------- loading


def test_projector_loads_and_reports_vision(vlm: Llama, files: dict[str, Path]) -> None:
    assert vlm.supports_vision
    assert vlm.native_engine.vision is not None
    assert vlm.native_engine.vision.path == str(files["projector"])
    plain = Llama(files["text"], n_ctx=256, n_threads=2)
    try:
        assert not plain.supports_vision
    finally:
        plain.close()


def test_projector_load_errors(files: dict[str, Path], tmp_path: Path) -> None:
    # a projector for another embedding width
    wide = tmp_path / "wide.gguf"
    write_projector(wide, projection_dim=640)
    with pytest.raises(ModelLoadError, match=r"n_embd = 576.*n_embd = 640"):
        Llama(files["text"], mmproj_path=wide, n_ctx=256, n_threads=2)
    # the stock model lacks the image tokens SmolVLM wraps images in
    with pytest.raises(ModelLoadError, match="vocabulary lacks"):
        Llama(default_model_path(), mmproj_path=files["projector"], n_ctx=256, n_threads=2)
    with pytest.raises(ModelLoadError, match="not found"):
        Llama(files["text"], mmproj_path=tmp_path / "missing.gguf", n_ctx=256, n_threads=2)
    # a GGUF that is no projector (the language model itself)
    with pytest.raises(ModelLoadError, match="failed to load the projector"):
        Llama(files["text"], mmproj_path=files["text"], n_ctx=256, n_threads=2)


# --------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize(("name", "size"), [("jpeg", (640, 488)), ("wide", (300, 100))])
def test_image_adds_the_tokens_the_architecture_implies(
    vlm: Llama, files: dict[str, Path], name: str, size: tuple[int, int]
) -> None:
    path = TEST_JPEG if name == "jpeg" else files[name]
    with_image = ask(vlm, user("What is this?", image(path)), max_tokens=1)
    without = ask(vlm, [{"role": "user", "content": "What is this?"}], max_tokens=1)
    assert (
        vlm.count_chat_tokens(user("What is this?", image(path)))
        == (with_image["usage"]["prompt_tokens"])
    )
    added = with_image["usage"]["prompt_tokens"] - without["usage"]["prompt_tokens"]
    assert added == expected_image_tokens(*size) + expected_marker_tokens(*size)
    # each tile and the overview is one encoded chunk
    assert with_image["timings"]["image_n"] == expected_image_tokens(*size) // 16
    assert with_image["timings"]["image_encode_ms"] > 0


def test_same_image_same_output_and_different_images_differ(
    vlm: Llama, files: dict[str, Path]
) -> None:
    outputs = {}
    for name in ("noise", "red", "blue"):
        first = text(ask(vlm, user("Describe the image.", image(files[name]))))
        again = text(ask(vlm, user("Describe the image.", image(files[name]))))
        assert first == again, name
        outputs[name] = first
    assert len(set(outputs.values())) == 3, outputs


def test_image_is_placed_where_its_part_stands(vlm: Llama, files: dict[str, Path]) -> None:
    def placeholders_at(messages: list[dict[str, Any]]) -> tuple[int, int]:
        ask(vlm, messages, max_tokens=1)
        cached = vlm.native_engine.cached_tokens(0)
        first = next(i for i, t in enumerate(cached) if t < -1)
        return first, len(cached) - first

    before = placeholders_at(user(image(files["red"]), "A long question about colours here?"))
    after = placeholders_at(user("A long question about colours here?", image(files["red"])))
    assert after[0] > before[0]  # the text's tokens come first
    # nothing but the image's tokens and the template's tail follow it
    assert after[1] < before[1]


def test_same_image_hits_the_prefix_cache_by_content(vlm: Llama, files: dict[str, Path]) -> None:
    cold = ask(vlm, user("Describe the image.", image(files["noise"])))
    # the same pixels as a data: URL instead of a file: recognised by content
    warm = ask(vlm, user("Describe the image.", image(data_url(files["noise"]))), cold=False)
    assert warm["usage"]["prompt_tokens"] == cold["usage"]["prompt_tokens"]
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] == (
        cold["usage"]["prompt_tokens"] - 1
    )
    assert warm["timings"]["image_n"] == 0 and cold["timings"]["image_n"] > 0
    # another image after the same text: the cache holds up to the image only
    other = ask(vlm, user("Describe the image.", image(files["red"])), cold=False)
    assert other["timings"]["image_n"] > 0
    assert other["usage"]["prompt_tokens_details"]["cached_tokens"] < (
        other["usage"]["prompt_tokens"] - 80
    )


def test_streaming_with_an_image_equals_the_response(vlm: Llama, files: dict[str, Path]) -> None:
    full = text(ask(vlm, user("Describe the image.", image(files["blue"]))))
    vlm.reset()
    chunks = vlm.create_chat_completion(
        user("Describe the image.", image(files["blue"])),
        temperature=0,
        max_tokens=12,
        stream=True,
    )
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)  # type: ignore[union-attr]
    assert streamed == full


def test_four_concurrent_image_requests_do_not_cross(vlm: Llama, files: dict[str, Path]) -> None:
    names = ["noise", "red", "blue", "wide"]
    alone = {n: text(ask(vlm, user("Describe the image.", image(files[n])))) for n in names}
    vlm.reset()
    with ThreadPoolExecutor(4) as pool:
        together = dict(
            zip(
                names,
                pool.map(
                    lambda n: text(ask(vlm, user("Describe the image.", image(files[n])), False)),
                    names,
                ),
                strict=True,
            )
        )
    assert together == alone


# --------------------------------------------------------------------------- bad images


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no pixel data to speak of."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def b64(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return image(f"data:{mime};base64," + base64.b64encode(data).decode())


BAD_IMAGES: dict[str, tuple[Any, str]] = {
    "not an image": (lambda f: b64(b"hello, I am text"), "could not be read as an image"),
    "empty": (lambda f: b64(b""), "is empty"),
    "truncated jpeg": (
        lambda f: b64(TEST_JPEG.read_bytes()[:4000], "image/jpeg"),
        "truncated",
    ),
    "truncated png": (lambda f: b64(f["noise"].read_bytes()[:-40]), "truncated"),
    "corrupt png": (
        lambda f: b64(f["noise"].read_bytes()[:60] + b"\xff" * 200 + b"IEND\xaeB`\x82"),
        "could not be",
    ),
    "unsupported format (webp)": (
        lambda f: b64(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\0" * 40, "image/webp"),
        "could not be read as an image",
    ),
    "huge by its header": (lambda f: b64(png_header_only(10_000, 10_000)), "pixels, more"),
    "invalid base64": (lambda f: image("data:image/png;base64,@@@"), "base64 is invalid"),
    "missing file": (lambda f: image("/nonexistent/x.png"), "cannot read the image file"),
    "http off by default": (lambda f: image("http://127.0.0.1:9/x.png"), "fetching http"),
    "no url": (lambda f: {"type": "image_url", "image_url": {}}, "needs image_url.url"),
    "unknown scheme": (lambda f: image("ftp://127.0.0.1/x.png"), "unsupported URL scheme"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_raises_and_the_engine_keeps_serving(
    vlm: Llama, files: dict[str, Path], case: str
) -> None:
    make, why = BAD_IMAGES[case]
    with pytest.raises(InvalidParameterError, match=why):
        ask(vlm, user("Describe the image.", make(files)))
    assert text(ask(vlm, user("Describe the image.", image(files["red"])), max_tokens=2))


def test_image_limits_and_roles(files: dict[str, Path]) -> None:
    llm = Llama(
        files["text"],
        mmproj_path=files["projector"],
        n_ctx=512,
        n_threads=2,
        max_image_bytes=1000,
        max_image_pixels=10_000,
        allow_image_files=False,
    )
    try:
        with pytest.raises(InvalidParameterError, match="more than 1000 bytes"):
            ask(llm, user("x", b64(TEST_JPEG.read_bytes(), "image/jpeg")))
        with pytest.raises(InvalidParameterError, match="reading local image files is off"):
            ask(llm, user("x", image(files["red"])))
        with pytest.raises(InvalidParameterError, match=r"200x100 pixels, more than the limit"):
            ask(llm, user("x", b64(png_header_only(200, 100))))
        small = b64(files["red"].read_bytes())  # 40 x 40, 100s of bytes
        assistant = {"role": "assistant", "content": [{"type": "text", "text": "hi"}, small]}
        with pytest.raises(InvalidParameterError, match="only user messages"):
            ask(llm, [*user("x"), assistant, *user("y")])
        assert text(ask(llm, user("What is this?", small), max_tokens=2))
    finally:
        llm.close()


def test_image_to_a_model_without_projector(llm: Llama, files: dict[str, Path]) -> None:
    with pytest.raises(InvalidParameterError, match="no vision projector"):
        llm.create_chat_completion(user("What is this?", image(files["red"])), max_tokens=1)


# --------------------------------------------------------------------------- URLs


class _Images(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, bytes]] = {}
    # /held.png: the request is noted (asked), and answered once hold is set
    asked: ClassVar[threading.Event] = threading.Event()
    hold: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/held.png":
            self.asked.set()
            self.hold.wait(120)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_server(files: dict[str, Path]) -> Iterator[str]:
    noise = files["noise"].read_bytes()
    _Images.routes = {"/noise.png": noise, "/held.png": noise, "/big.png": b"\0" * 300_000}
    _Images.hold.set()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_image_urls_when_allowed(files: dict[str, Path], image_server: str) -> None:
    llm = Llama(
        files["text"],
        mmproj_path=files["projector"],
        n_ctx=512,
        n_threads=2,
        allow_image_urls=True,
        max_image_bytes=200_000,
    )
    try:
        fetched = ask(llm, user("Describe the image.", image(image_server + "/noise.png")))
        local = ask(llm, user("Describe the image.", image(files["noise"])))
        assert text(fetched) == text(local)
        for path, why in [
            ("/missing.png", "HTTP 404 Not Found"),
            ("/big.png", "more than 200000 bytes"),
        ]:
            with pytest.raises(InvalidParameterError, match=why):
                ask(llm, user("x", image(image_server + path)))
        with pytest.raises(InvalidParameterError, match="could not fetch"):
            ask(llm, user("x", image("http://127.0.0.1:9/unreachable.png")))
    finally:
        llm.close()


# --------------------------------------------------------------------------- adapters


def test_langchain_image_blocks(vlm: Llama, files: dict[str, Path]) -> None:
    from langchain_core.messages import HumanMessage

    from llamacpp_integrations.langchain import ChatLlamaCpp

    chat = ChatLlamaCpp(client=vlm, temperature=0, max_tokens=12)
    assert chat.profile is not None and chat.profile["image_inputs"] is True
    expected = text(ask(vlm, user("Describe the image.", image(files["noise"]))))
    data = base64.b64encode(files["noise"].read_bytes()).decode()
    blocks: list[Any] = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image", "base64": data, "mime_type": "image/png"},
        {"type": "image", "source_type": "base64", "data": data, "mime_type": "image/png"},
    ]
    for block in blocks:
        vlm.reset()
        reply = chat.invoke(
            [HumanMessage(content=[{"type": "text", "text": "Describe the image."}, block])]
        )
        assert reply.content == expected, block["type"]
        assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 80
    message = HumanMessage(content=[{"type": "text", "text": "Describe the image."}, blocks[1]])
    assert chat.get_num_tokens_from_messages([message]) == reply.usage_metadata["input_tokens"]
    plain = ChatLlamaCpp(model_path=default_model_path(), n_ctx=256, share_client=True)
    assert plain.profile is not None and plain.profile["image_inputs"] is False


def test_llama_index_image_blocks(vlm: Llama, files: dict[str, Path]) -> None:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

    from llamacpp_integrations.llama_index import LlamaCPP

    llm = LlamaCPP(client=vlm, temperature=0, max_new_tokens=12)
    expected = text(ask(vlm, user("Describe the image.", image(files["noise"]))))
    for block in (ImageBlock(image=files["noise"].read_bytes()), ImageBlock(path=files["noise"])):
        vlm.reset()
        message = ChatMessage(role="user", blocks=[TextBlock(text="Describe the image."), block])
        assert llm.chat([message]).message.content == expected


# --------------------------------------------------------------------------- server


def test_server_image_parts(files: dict[str, Path], image_server: str) -> None:
    """Images over HTTP; a fetch in progress holds no one else up (the image stand-in answers
    only once the test has seen the server answer /health meanwhile)."""
    import httpx
    from test_server import Server, post

    server = Server(
        ["--model", str(files["text"]), "--mmproj", str(files["projector"]), "--allow-image-urls",
         "--n-ctx", "1024", "--n-seq-max", "2", "--n-threads", "2"]
    )  # fmt: skip
    try:
        body = {
            "messages": user("Describe the image.", image(data_url(files["noise"]))),
            "max_tokens": 12,
            "temperature": 0,
        }
        ok = post(server, "/v1/chat/completions", body)
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["prompt_tokens"] > 80
        for bad, why in [
            (image(str(files["noise"])), "reading local image files is off"),
            (b64(b"not an image"), "could not be read as an image"),
            (image("http://127.0.0.1:9/x.png"), "could not fetch"),
        ]:
            r = post(server, "/v1/chat/completions", {**body, "messages": user("x", bad)})
            assert r.status_code == 400, r.text
            assert why in r.json()["error"]["message"]

        _Images.asked.clear()
        _Images.hold.clear()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                post,
                server,
                "/v1/chat/completions",
                {**body, "messages": user("x", image(image_server + "/held.png"))},
            )
            assert _Images.asked.wait(60)  # the server is fetching the image now
            health = httpx.get(server.url + "/health", timeout=30)
            assert health.status_code == 200 and not slow.done()
            _Images.hold.set()
            assert slow.result().status_code == 200
    finally:
        _Images.hold.set()
        server.stop()


# --------------------------------------------------------------------------- the Hub


def test_from_pretrained_downloads_the_projector_too(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """``mmproj_filename`` on ``Llama.from_pretrained`` and the adapters', against the stand-in
    Hub of tests/unit/test_hub.py on 127.0.0.1."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_hub import Env, FakeHub, Repo

    hub = FakeHub()
    hub.start()
    try:
        projector = files["projector"].read_bytes()
        hub.repos["me/vlm-GGUF"] = Repo(
            {"vlm-Q4_1.gguf": files["text"].read_bytes(), "mmproj-vlm-f32.gguf": projector}
        )
        result = Env(hub, tmp_path / "hf").call(
            _call="vision",
            repo_id="me/vlm-GGUF",
            filename="vlm-*.gguf",
            mmproj_filename="mmproj-*.gguf",
        )
        assert "error" not in result, result
        assert Path(result["mmproj"]).read_bytes() == projector
        assert Path(result["path"]).name == "vlm-Q4_1.gguf"
        assert result["vision"] == [True, True, True]
    finally:
        hub.stop()


# --------------------------------------------------------------------------- langchain-tests


class TestLangChainStandardImageInputs:
    """langchain-tests' own ``test_image_inputs`` on ChatLlamaCpp with a projector: an OpenAI
    ``image_url`` part and LangChain's standard base64 image block. The suite downloads its
    image with ``httpx.get``; here that call answers with a local PNG (no network in CI). URL
    blocks are off, as fetching is by default (``allow_image_urls``)."""

    supports_image_inputs = True
    supports_image_urls = False

    def test_image_inputs(
        self, vlm: Llama, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import langchain_tests.integration_tests.chat_models as suite

        from llamacpp_integrations.langchain import ChatLlamaCpp

        class Local:
            content = files["noise"].read_bytes()

        urls: list[str] = []
        monkeypatch.setattr(suite.httpx, "get", lambda url, **kw: urls.append(url) or Local())
        chat = ChatLlamaCpp(client=vlm, temperature=0, max_tokens=8)
        vlm.reset()
        suite.ChatModelIntegrationTests.test_image_inputs(self, chat)  # type: ignore[arg-type]
        assert len(urls) == 1
        # the images reached the engine: a slot's cache holds image placeholders
        engine = vlm.native_engine
        cached = [engine.cached_tokens(i) for i in range(engine.n_seq_max)]
        assert any(t < -1 for tokens in cached for t in tokens)


async def test_async_paths_handle_images_off_the_event_loop(
    vlm: Llama, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """acreate_chat_completion (LlamaIndex's path) and ChatLlamaCpp's ainvoke/astream read,
    decode and preprocess images in a worker thread, never on the loop's."""
    from langchain_core.messages import HumanMessage

    import llamacpp_integrations._images as images
    from llamacpp_integrations.langchain import ChatLlamaCpp

    threads: list[threading.Thread] = []
    original = images.extract_images

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(images, "extract_images", spy)
    monkeypatch.setattr("llamacpp_integrations._chat.extract_images", spy)
    loop_thread = threading.current_thread()
    messages = user("Describe the image.", image(files["red"]))
    await vlm.acreate_chat_completion(messages, max_tokens=2)
    chat = ChatLlamaCpp(client=vlm, max_tokens=2)
    content: list[Any] = [{"type": "text", "text": "x"}, image(data_url(files["red"]))]
    await chat.ainvoke([HumanMessage(content=content)])
    async for _ in chat.astream([HumanMessage(content=content)]):
        pass
    assert len(threads) == 3 and loop_thread not in threads
    # without images, the request is submitted at once, on the loop's thread
    await vlm.acreate_chat_completion(user("Hello"), max_tokens=1)
    assert threads[-1] is loop_thread
