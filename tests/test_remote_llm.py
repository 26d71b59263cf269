"""``llm.backend: openai`` against real servers on loopback: llama-cpp-python's OpenAI-compatible server with the
project's GGUF (module-scoped, killed and restarted by the last test), a listener that never answers, and an HTTP
server that answers garbage. The fallback is the real local model.

Each LLM call costs seconds on this shared 2-core machine (the server's first request evaluates the whole fixed
prefix: tens of seconds under load), so the deadlines for the real server are generous and the fault deadlines short.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from edge_agent.brain import SORRY_LLM, Brain
from edge_agent.config import LlmSettings, Settings
from edge_agent.errors import LlmError
from edge_agent.llm import Llm, LocalLlamaBackend
from edge_agent.llm_backend import LLM_BACKENDS, create_backend
from edge_agent.llm_openai import OpenAiBackend, to_chat
from edge_agent.preflight import FAIL, OK, WARN, check_llm_server

from .conftest import ROOT, require_model
from .remote_servers import LlamaServer, ScriptedHttpServer, SilentServer, wait_for

HOME = str(ROOT / "tests" / "data" / "home.yaml")
SERVER_WAIT_S = 120.0  # first token from the real server: the whole prefix on a busy shared CPU
FAULT_WAIT_S = 1.5  # first token from a faulty server before the turn falls back


def remote_settings(base_url: str, *, fallback: str = "none", **openai: object) -> Settings:
    s = Settings()
    o = dataclasses.replace(s.llm.openai, base_url=base_url,
                            **{"first_token_timeout_s": SERVER_WAIT_S, "read_timeout_s": 60.0, **openai})
    llm = dataclasses.replace(s.llm, backend="openai", openai=o, fallback=fallback, threads=1, timeout_s=300.0,
                              prefix_cache_dir=None)
    return dataclasses.replace(s, llm=llm)


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    srv = LlamaServer(require_model(store, "qwen2_5_coder_0_5b"), tmp_path_factory.mktemp("llm") / "server.log")
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def local(store):
    m = Llm(require_model(store, "qwen2_5_coder_0_5b"), LlmSettings(threads=1))
    m.load()
    yield LocalLlamaBackend(m)
    m.close()


@pytest.fixture()
def make_brain(monkeypatch, local):
    """A Brain from settings whose ``openai`` backend falls back to the module's loaded local model."""
    made: list[OpenAiBackend] = []

    def build(settings: Settings) -> tuple[Brain, OpenAiBackend, list]:
        def factory(s: Settings) -> OpenAiBackend:
            b = OpenAiBackend(s.llm.openai, s.llm, fallback=local if s.llm.fallback == "local" else None)
            b.close = b.health.close  # the module's local model outlives each brain
            made.append(b)
            return b

        monkeypatch.setitem(LLM_BACKENDS, "openai", factory)
        brain = Brain.from_settings(settings, home_file=HOME)
        brain.fast_path = False  # the LLM path is under test (as `ask --llm-only`)
        published: list = []
        brain.on_intent = lambda call, result: published.append(call)
        return brain, made[-1], published

    yield build
    for b in made:
        b.health.close()


def _calls(resp) -> list[dict]:
    return resp.timings.get("llm_calls", [])


# --------------------------------------------------------------------------------------------------- the real server


def test_question_answered_in_words_through_the_server(server, make_brain):
    brain, backend, published = make_brain(remote_settings(server.base_url))
    t0 = time.monotonic()
    resp = brain.respond("what is the capital of France?")
    pieces = list(resp)
    print(f"\nreply: {resp.text!r} in {time.monotonic() - t0:.1f} s; {json.dumps(resp.timings)}")
    assert "paris" in resp.text.lower()
    assert pieces and all(p.endswith(" ") for p in pieces) and "{" not in resp.text and "<" not in resp.text
    assert resp.used_llm and resp.intents == [] and published == []
    assert [c["backend"] for c in _calls(resp)] == ["openai"] and "fallback_reason" not in _calls(resp)[0]
    assert resp.t_first_token is not None and _calls(resp)[0]["n_gen"] > 0
    assert backend.health.up


def test_device_command_through_the_server(server, make_brain):
    brain, backend, published = make_brain(remote_settings(server.base_url))
    resp = brain.respond("turn on the kitchen light")
    reply = resp.wait()
    print(f"\nreply: {reply!r}; {json.dumps(resp.timings)}")
    assert [(c.name, c.entities) for c in resp.intents] == [("HassTurnOn", ["light.kitchen"])]
    assert [c.name for c in published] == ["HassTurnOn"]
    assert _calls(resp)[-1]["phase"] == "tool_call" and _calls(resp)[-1]["backend"] == "openai"
    assert "kitchen light" in reply.lower()


def test_check_reports_reachability_and_rtt(server, tmp_path):
    ok = check_llm_server(remote_settings(server.base_url))
    assert ok is not None and ok.status == OK and ok.detail.endswith(" ms"), ok.line()
    srv = ScriptedHttpServer()  # closed at once: nothing listens on its port afterwards
    srv.close()
    down = f"http://127.0.0.1:{srv.port}/v1"
    assert check_llm_server(remote_settings(down)).status == FAIL
    assert check_llm_server(remote_settings(down, fallback="local")).status == WARN
    assert check_llm_server(Settings()) is None  # local backend: nothing to reach
    key = tmp_path / "key"
    key.write_text("sk-secret-123\n")
    # the key is sent, and never appears in the report
    line = check_llm_server(remote_settings(server.base_url, api_key_file=str(key))).line()
    assert "sk-secret" not in line


def test_factory_builds_the_remote_with_a_local_fallback():
    s = remote_settings("https://llm.example.invalid:8443/v1", fallback="local")
    backend = create_backend(s)
    assert isinstance(backend, OpenAiBackend) and isinstance(backend.fallback, LocalLlamaBackend)
    assert backend.endpoint.scheme == "https" and backend.endpoint.port == 8443 and backend.http._ssl is not None
    assert not backend.fallback.loaded  # loaded by load()/warm-up, not by construction
    assert isinstance(create_backend(remote_settings("http://127.0.0.1:1/v1")), OpenAiBackend)


def test_messages_keep_the_prompt_syntax():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "turn it off"},
            {"role": "assistant", "content": "Sure. ", "tool_call": '{"name": "HassTurnOff"}'},
            {"role": "tool", "content": '{"ok": true}'}, {"role": "assistant", "content": ""}]
    assert to_chat(msgs) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "turn it off"},
        {"role": "assistant", "content": 'Sure. <tool_call>\n{"name": "HassTurnOff"}\n</tool_call>'},
        {"role": "user", "content": '<tool_response>\n{"ok": true}\n</tool_response>'}]


# --------------------------------------------------------------------------------------------------- faults


def test_hung_server_apologises_in_bounded_time_then_skips_it(make_brain):
    hung = SilentServer()
    try:
        brain, backend, _ = make_brain(remote_settings(hung.base_url, first_token_timeout_s=FAULT_WAIT_S))
        t0 = time.monotonic()
        resp = brain.respond("what is the capital of France?")
        assert resp.wait() == SORRY_LLM
        took = time.monotonic() - t0
        assert took < FAULT_WAIT_S + 1.5, took
        assert _calls(resp)[0]["fallback_reason"] == "timeout" and resp.error.startswith("llm:")
        assert not backend.health.up
        # while it is down, the next turn does not wait on it again
        t0 = time.monotonic()
        assert brain.respond("what is the capital of Spain?").wait() == SORRY_LLM
        assert time.monotonic() - t0 < 0.5
    finally:
        hung.close()


def test_hung_server_falls_back_to_the_local_model(make_brain):
    hung = SilentServer()
    try:
        brain, backend, published = make_brain(remote_settings(hung.base_url, fallback="local",
                                                               first_token_timeout_s=FAULT_WAIT_S))
        resp = brain.respond("what is the capital of France?")
        reply = resp.wait()
        print(f"\nreply: {reply!r}; {json.dumps(resp.timings)}")
        assert "paris" in reply.lower()
        assert [(c["backend"], c["fallback_reason"]) for c in _calls(resp)] == [("local", "timeout")]
        # a device command while it is still down: the local model writes the call, at once
        resp = brain.respond("turn on the kitchen light")
        resp.wait()
        assert [(c.name, c.entities) for c in resp.intents] == [("HassTurnOn", ["light.kitchen"])]
        assert _calls(resp)[-1]["backend"] == "local" and _calls(resp)[-1]["ttft_s"] < FAULT_WAIT_S
    finally:
        hung.close()


MESSAGES = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "Is the sky blue?"}]
SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
          "additionalProperties": False}


def _chunk(text: str | None = None, finish: str | None = None) -> dict:
    delta = {} if text is None else {"content": text}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize("case", ["not-json-event", "not-sse", "http-500", "json-off-schema", "json-not-json",
                                  "cut-off"])
def test_malformed_answers_fall_back_or_raise(case, local):
    srv = ScriptedHttpServer()
    try:
        if case == "not-json-event":
            srv.sse([_chunk("Hello"), "{this is not json"])
        elif case == "not-sse":
            srv.reply = (200, "text/html", b"<html><body>It works!</body></html>\n")
        elif case == "http-500":
            srv.reply = (500, "application/json", b'{"error": "model not loaded"}')
        elif case == "json-off-schema":
            srv.sse([_chunk('{"answer": "maybe"}'), _chunk(finish="stop"), "[DONE]"])
        elif case == "json-not-json":
            srv.sse([_chunk("The sky is blue."), _chunk(finish="stop"), "[DONE]"])
        else:  # the body ends in the middle of the reply: no finish_reason, no [DONE]
            srv.sse([_chunk("The sky is")])
        s = remote_settings(srv.base_url, first_token_timeout_s=FAULT_WAIT_S, read_timeout_s=FAULT_WAIT_S)
        bare = OpenAiBackend(s.llm.openai, s.llm)
        with pytest.raises(LlmError, match="failed"):
            if case.startswith("json"):
                bare.complete_json(MESSAGES, SCHEMA)
            else:
                with bare.stream(MESSAGES, mode="words") as st:
                    list(st)
        bare.health.close()
        backend = OpenAiBackend(s.llm.openai, s.llm, fallback=local)
        try:
            obj, stats = backend.complete_json(MESSAGES, SCHEMA)
            assert obj["answer"] in ("yes", "no")
            expect = {"http-500": "http"}.get(case, "connection" if case == "cut-off" else "malformed")
            assert (stats.backend, stats.fallback_reason) == ("local", expect)
        finally:
            backend.health.close()
        posts = [r for r in srv.requests if r[0] == "POST"]
        assert posts and {r[1] for r in posts} == {"/v1/chat/completions"}
        sent = json.loads(posts[-1][2])  # the complete_json call: its schema as the server's response_format
        assert sent["response_format"] == {"type": "json_object", "schema": SCHEMA} and sent["stream"] is True
    finally:
        srv.close()


def test_server_killed_mid_turn_then_restarted(server, make_brain):
    """Killed while it streams a reply (the brain's own prompt): the local model continues the words already said.
    While it is down a turn is the local model's at once; restarted on the same port, the background probe finds it
    and the next turn is the server's again."""
    brain, backend, _ = make_brain(remote_settings(server.base_url, fallback="local"))
    brain.warmup()
    messages = brain._messages("Count slowly from one to forty, in words, one number per sentence.", None)
    frags: list[str] = []
    with backend.stream(messages, mode="words") as st:
        for frag in st:
            frags.append(frag)
            if len(frags) == 3:
                server.kill()
    text = "".join(frags)
    print(f"\nreply: {text!r}\n{st.stats}")
    assert (st.stats.backend, st.stats.fallback_reason) == ("local", "connection")
    assert st.stats.n_gen > 0 and len(text) > len("".join(frags[:3]))
    assert not backend.health.up
    t0 = time.monotonic()
    resp = brain.respond("what is the capital of France?")
    assert "paris" in resp.wait().lower()
    assert [(c["backend"], c["fallback_reason"]) for c in _calls(resp)] == [("local", "connection")]
    print(f"while down: {resp.text!r} in {time.monotonic() - t0:.1f} s")
    server.start()
    assert wait_for(lambda: backend.health.up, timeout=60.0), "the background probe did not find the server again"
    resp = brain.respond("what is the capital of France?")
    reply = resp.wait()
    print(f"after the restart: {reply!r}; {json.dumps(resp.timings)}")
    assert "paris" in reply.lower()
    assert [c["backend"] for c in _calls(resp)] == ["openai"]
    assert backend.health.recoveries == 1


def test_cancel_closes_the_stream_at_once(make_brain):
    hung = SilentServer()
    try:
        s = remote_settings(hung.base_url, first_token_timeout_s=30.0)
        backend = OpenAiBackend(s.llm.openai, s.llm)
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        t0 = time.monotonic()
        with backend.stream(MESSAGES, mode="words", cancel=cancel) as st:
            assert list(st) == []
        assert time.monotonic() - t0 < 1.5 and st.stats.stopped == "cancelled"
        backend.health.close()
    finally:
        hung.close()
