"""The OpenAI-compatible server, started for real on 127.0.0.1 and driven by real clients: the
``openai`` package, LangChain's ``ChatOpenAI``, and raw HTTP for SSE framing, errors and auth."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest
from chat_data import ADD, WEATHER, user

pytestmark = pytest.mark.integration

openai = pytest.importorskip("openai")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "llamacpp_integrations.server", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd + args,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not become healthy")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(model_path: str) -> Iterator[Server]:
    s = Server(["--n-ctx", "8192", "--n-seq-max", "8", "--max-queue", "4", "--n-threads", "2"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def model_id(client: Any) -> str:
    return str(client.models.list().data[0].id)


def post(server: Server, path: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    timeout = kw.pop("timeout", 120)
    return httpx.post(server.url + path, content=content, headers=headers, timeout=timeout, **kw)


# --------------------------------------------------------------------------- endpoints


def test_models_health_docs(server: Server, client: Any, model_id: str) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_id]
    assert client.models.retrieve(model_id).id == model_id
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert httpx.get(server.url + "/docs").status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]
    missing = httpx.get(server.url + "/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_chat_and_stream_equal_at_temperature_0(client: Any, model_id: str) -> None:
    """Greedy output depends, in the last bits, on whether the prompt came from the prefix
    cache (its last token decoded alone) or was decoded whole; so the prompt is cached first,
    and the stream is compared with a request in that same state."""
    messages = user("Name three colours.")
    client.chat.completions.create(model=model_id, messages=messages, max_tokens=1)
    whole = client.chat.completions.create(
        model=model_id, messages=messages, temperature=0, max_tokens=24
    )
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model=model_id,
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [whole.choices[0].finish_reason]


def test_chat_tools_schema_logprobs_n(client: Any, model_id: str) -> None:
    out = client.chat.completions.create(
        model=model_id,
        messages=user("What is 2 plus 3?"),
        tools=[ADD, WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    call = out.choices[0].message.tool_calls[0]
    assert out.choices[0].finish_reason == "tool_calls" and call.id.startswith("call_")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (ADD, WEATHER)}
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])

    stream = client.chat.completions.create(
        model=model_id,
        messages=user("Weather in Paris?"),
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    args, names = "", ""
    for c in stream:
        for tc in c.choices[0].delta.tool_calls or []:
            names += tc.function.name or ""
            args += tc.function.arguments or ""
    assert names == "get_weather"
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])  # type: ignore[index]

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    out = client.chat.completions.create(
        model=model_id,
        messages=user("A city and its country."),
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        temperature=0,
        max_tokens=60,
    )
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)

    out = client.chat.completions.create(
        model=model_id,
        messages=user("Say hi."),
        logprobs=True,
        top_logprobs=2,
        max_completion_tokens=4,
        temperature=0,
    )
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens and len(content[0].top_logprobs) == 2

    out = client.chat.completions.create(
        model=model_id, messages=user("Tell me a word."), n=2, seed=1, temperature=1.0, max_tokens=8
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert all(c.message.content for c in out.choices)
    assert out.usage.completion_tokens >= 2  # both choices were generated and counted


def test_completions(server: Server, client: Any, model_id: str) -> None:
    out = client.completions.create(
        model=model_id, prompt="The sky is", max_tokens=5, temperature=0, echo=True, logprobs=1
    )
    assert out.choices[0].text.startswith("The sky is")
    assert out.choices[0].logprobs.tokens
    many = client.completions.create(model=model_id, prompt=["A", "B"], max_tokens=3)
    assert [c.index for c in many.choices] == [0, 1]
    tokens = post(server, "/tokenize", {"content": "The sky is"}).json()["tokens"]
    by_ids = client.completions.create(model=model_id, prompt=tokens, max_tokens=5, temperature=0)
    by_text = client.completions.create(
        model=model_id, prompt="The sky is", max_tokens=5, temperature=0
    )
    assert by_ids.choices[0].text == by_text.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=model_id, prompt="The sky is", max_tokens=5, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == by_text.choices[0].text
    fim = post(server, "/v1/completions", {"prompt": "def f(", "suffix": "):", "max_tokens": 4})
    # SmolLM2 has no fill-in-the-middle tokens: a 400 naming the cause, not a crash
    assert fim.status_code == 400 and "suffix" in fim.json()["error"]["message"]


def test_embeddings_tokenize(server: Server, client: Any, model_id: str) -> None:
    out = client.embeddings.create(model=model_id, input=["hello world", "goodbye"])
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 576
    b64 = post(server, "/v1/embeddings", {"input": "hello world", "encoding_format": "base64"})
    raw = base64.b64decode(b64.json()["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(out.data[0].embedding)
    tokens = post(server, "/tokenize", {"content": "hello world"}).json()["tokens"]
    by_tokens = post(server, "/v1/embeddings", {"input": tokens}).json()
    assert by_tokens["data"][0]["embedding"] == pytest.approx(out.data[0].embedding, abs=1e-5)
    assert post(server, "/detokenize", {"tokens": tokens}).json()["content"] == "hello world"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ("{bad json", None, "not valid JSON"),
        ({"model": None}, "messages", "missing required field"),
        ({"messages": "hi"}, "messages", "invalid value"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokn": 3}, "max_tokn", "unknown"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, None, "unknown role"),
        ({"messages": [{"role": "user", "content": "x"}], "top_p": 9}, "top_p", ""),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature", ""),
        (
            {"messages": [{"role": "user", "content": "x"}], "grammar": 'root ::= ("a"'},
            "grammar",
            "invalid GBNF",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 7}}},
            },
            None,
            "",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            None,
            "",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"},
            None,
            "tool_choice",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_cause(
    server: Server, body: Any, param: str | None, needle: str
) -> None:
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert needle in error["message"]


def test_context_length_exceeded(server: Server) -> None:
    r = post(server, "/v1/chat/completions", {"messages": user("word " * 9000), "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_body_over_the_limit_is_413(server: Server) -> None:
    big = json.dumps({"messages": user("x" * (9 * 1024 * 1024))})
    r = post(server, "/v1/chat/completions", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# --------------------------------------------------------------------------- concurrency


def test_eight_streams_all_start_before_any_ends(server: Server, model_id: str) -> None:
    first: list[float] = []
    ends: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        body = {
            "model": model_id,
            "messages": user(f"Story number {i}:"),
            "max_tokens": 48,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
            got_first = False
            for line in r.iter_lines():
                if got_first or not line.startswith("data: {"):
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    got_first = True
                    with lock:
                        first.append(time.monotonic())
        with lock:
            ends.append(time.monotonic())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(run, range(8)))
    assert len(first) == 8 and len(ends) == 8
    assert max(first) < min(ends)


def metric(server: Server, name: str) -> float:
    total = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_dropped_streams_free_their_slots(server: Server, model_id: str) -> None:
    """4 endless streams are dropped after a few chunks and 4 endless requests that do not stream
    are abandoned; if their generations went on, every slot would stay busy for minutes and the
    next requests would wait (and time out here)."""
    body = {
        "model": model_id,
        "messages": user("Write forever."),
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": True,
    }

    def drop(i: int) -> None:
        if i % 2:  # a request that does not stream, abandoned by a client that gives up
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    server.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=2
                )
            return
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
            for n, _line in enumerate(r.iter_lines()):
                if n > 6:
                    break

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(drop, range(8)))
    deadline = time.monotonic() + 30
    while metric(server, "llamacpp_active_slots") > 0:
        assert time.monotonic() < deadline, "the dropped streams still hold their slots"
        time.sleep(0.1)

    def short(i: int) -> int:
        r = post(
            server,
            "/v1/chat/completions",
            {"messages": user(f"Hi {i}"), "max_tokens": 8, "ignore_eos": True},
            timeout=30,
        )
        return int(r.json()["usage"]["completion_tokens"])

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(short, range(8))) == [8] * 8


def test_sixty_four_at_once_get_200_or_503(server: Server, model_id: str) -> None:
    def run(i: int) -> tuple[int, str | None]:
        r = post(
            server,
            "/v1/chat/completions",
            {"model": model_id, "messages": user(f"Count to {i}."), "max_tokens": 16},
            timeout=120,
        )
        return r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(run, range(64)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    assert all(ra == "1" for c, ra in results if c == 503)
    # the server keeps serving
    assert (
        post(server, "/v1/chat/completions", {"messages": user("Hi"), "max_tokens": 4}).status_code
        == 200
    )
    assert metric(server, "llamacpp_requests_total") > 64


def test_langchain_chat_openai(server: Server, model_id: str) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    llm = ChatOpenAI(
        base_url=server.url + "/v1", api_key="unused", model=model_id, temperature=0, max_tokens=32
    )
    llm.invoke("Say hello.", max_tokens=1)  # the prompt cached, as for every call below
    reply = llm.invoke("Say hello.")
    assert reply.content and reply.usage_metadata["output_tokens"] > 0
    streamed = "".join(str(c.content) for c in llm.stream("Say hello."))
    assert streamed == reply.content

    class Add(BaseModel):
        """Add two integers."""

        a: int
        b: int

    # room for the grammar-constrained call (the 135M model repeats it until max_tokens)
    roomy = llm.model_copy(update={"max_tokens": 120})
    call = roomy.bind_tools([Add], tool_choice="Add").invoke("What is 2 plus 3?")
    assert call.tool_calls and call.tool_calls[0]["name"] == "Add"
    assert set(call.tool_calls[0]["args"]) == {"a", "b"}

    class City(BaseModel):
        name: str
        country: str

    city = roomy.with_structured_output(City).invoke("Paris is a city in which country?")
    assert isinstance(city, City)


# --------------------------------------------------------------------------- a second server


@pytest.fixture(scope="module")
def secured(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("cfg") / "models.yaml"
    config.write_text(
        "models:\n"
        f"  - path: {model_path}\n    alias: small\n    n_ctx: 512\n    n_seq_max: 1\n"
        f"  - path: {model_path}\n    alias: big\n    n_ctx: 2048\n"
    )
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("key-from-file\n")
    s = Server(
        [
            "--config",
            str(config),
            "--api-key-file",
            str(keys),
            "--cors-origin",
            "http://ok.test",
            "--request-timeout",
            "2",
        ],
        env={"LLAMACPP_SERVER_API_KEY": "key-from-env"},
    )
    yield s
    s.stop()


def test_two_models_from_a_config_file(secured: Server) -> None:
    c = openai.OpenAI(base_url=secured.url + "/v1", api_key="key-from-file", max_retries=0)
    assert sorted(m.id for m in c.models.list().data) == ["big", "small"]
    for name, n_ctx in (("small", 512), ("big", 2048)):
        assert c.models.retrieve(name).model_extra["meta"]["n_ctx"] == n_ctx
        out = c.chat.completions.create(model=name, messages=user("Hi"), max_tokens=4)
        assert out.model == name
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="medium", messages=user("Hi"), max_tokens=4)
    r = post(
        secured, "/v1/chat/completions", {"messages": user("Hi")}, headers=_auth("key-from-env")
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"  # two models: name one


def test_request_timeout_is_504(secured: Server) -> None:
    body = {"model": "big", "messages": user("Write forever."), "max_tokens": 1900,
            "ignore_eos": True}  # fmt: skip
    r = post(secured, "/v1/chat/completions", body, headers=_auth("key-from-env"))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    lines = []
    with httpx.stream(
        "POST", secured.url + "/v1/chat/completions", json={**body, "stream": True},
        headers=_auth("key-from-env"), timeout=60,
    ) as s:  # fmt: skip
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[-1][6:])["error"]["code"] == "timeout"


def test_stop_and_seed(client: Any, model_id: str) -> None:
    out = client.chat.completions.create(
        model=model_id, messages=user("Count from 1 to 10."), stop=["5"], temperature=0,
        max_tokens=60,
    )  # fmt: skip
    assert "5" not in out.choices[0].message.content and out.choices[0].finish_reason == "stop"
    client.chat.completions.create(model=model_id, messages=user("A word."), max_tokens=1)
    a, b = (  # both with the prompt cached (see test_chat_and_stream_equal_at_temperature_0)
        client.chat.completions.create(
            model=model_id, messages=user("A word."), seed=42, temperature=1.0, max_tokens=8
        )
        .choices[0]
        .message.content
        for _ in range(2)
    )
    assert a == b


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_keys_and_cors(secured: Server) -> None:
    assert httpx.get(secured.url + "/health").status_code == 200  # public
    r = httpx.get(secured.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(secured.url + "/v1/models", headers=_auth("wrong")).status_code == 401
    assert httpx.get(secured.url + "/metrics").status_code == 401
    for key in ("key-from-env", "key-from-file"):
        assert httpx.get(secured.url + "/v1/models", headers=_auth(key)).status_code == 200
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    ok = httpx.options(
        secured.url + "/v1/chat/completions", headers={"Origin": "http://ok.test", **preflight}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://ok.test"
    bad = httpx.options(
        secured.url + "/v1/chat/completions", headers={"Origin": "http://evil.test", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers


def test_no_cors_by_default(server: Server) -> None:
    r = httpx.options(
        server.url + "/v1/chat/completions",
        headers={"Origin": "http://any.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers


def test_cli_entry_point_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llamacpp_integrations", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for flag in ("--model", "--config", "--api-key", "--cors-origin", "--max-queue", "--n-ctx"):
        assert flag in out.stdout
