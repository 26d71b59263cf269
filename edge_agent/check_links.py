"""The doctor's checks of what the agent talks to: the audio devices, the OpenAI-compatible LLM server and the Wyoming
STT and TTS servers when configured, and the MQTT broker (a real connection: TCP, TLS, credentials)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .check_result import FAIL, OK, WARN, Check
from .config import MqttSettings, Settings
from .errors import AudioError, ConfigError

BROKER_TIMEOUT_S = 3.0  # the whole MQTT probe: TCP connect, TLS, CONNACK


# ------------------------------------------------------------------------------------------------ audio


def check_audio(s: Settings) -> list[Check]:
    from .audio_io import _sd, find_device

    out = []
    for kind, spec in (("input", s.audio.input_device), ("output", s.audio.output_device)):
        what = f"audio {kind}"
        try:
            idx = find_device(spec, kind)
            d = _sd().query_devices(idx)
            hostapi = _sd().query_hostapis(d["hostapi"])["name"]
            chans = d["max_input_channels"] if kind == "input" else d["max_output_channels"]
            how = "the system default" if spec is None else f"audio.{kind}_device = {spec!r}"
            out.append(Check(what, OK, f"#{idx} {d['name']!r} [{hostapi}], {chans} ch, "
                             f"{d['default_samplerate']:.0f} Hz ({how})"))
        except AudioError as e:
            fix = (e.fix + "; " if e.fix else "") + (
                "`arecord -l` / `aplay -l` list the sound cards ALSA sees. The service runs as user edge-agent "
                "through plain ALSA: check with `sudo -u edge-agent /opt/edge-agent/.venv/bin/edge-agent devices`")
            out.append(Check(what, FAIL, e.message, fix))
    return out


# ------------------------------------------------------------------------------------------------ broker


def _is_auth_failure(reason: Any) -> bool:
    # CONNACK codes: MQTT 3.1.1 return codes 4/5 (paho maps them to 134/135), MQTT 5 0x86/0x87/0x8C.
    return getattr(reason, "value", reason) in (4, 5, 0x86, 0x87, 0x8C)


def check_llm_server(s: Settings) -> Check | None:
    """``llm.backend: openai``: the server answers ``GET /models`` (TCP, TLS, the API key); its round-trip time."""
    if s.llm.backend != "openai":
        return None
    from .llm_http import Endpoint, Http, RemoteFailure, api_key

    o, what = s.llm.openai, "llm server"
    try:
        http, t0 = Http(Endpoint.parse(o.base_url), o, api_key(o)), time.monotonic()
        conn, resp = http.open("GET", "/models", None, timeout=o.first_token_timeout_s)
        conn.close()
    except ConfigError as e:
        return Check(what, FAIL, e.message, e.fix or "")
    except RemoteFailure as e:
        fallback = "turns fall back to the local model" if s.llm.fallback == "local" else "turns get an apology"
        return Check(what, WARN if s.llm.fallback == "local" else FAIL, f"{o.base_url}: {e}; {fallback}",
                     "start the server (README: One server, several rooms), or check llm.openai")
    return Check(what, OK, f"{o.base_url} answered in {(time.monotonic() - t0) * 1000:.0f} ms")


def check_stt_server(s: Settings) -> Check | None:
    """``stt.engine: wyoming``: the server answers Wyoming ``describe``; its round-trip time."""
    if s.stt.engine != "wyoming":
        return None
    from .errors import SttError
    from .stt_wyoming import WyomingSttEngine

    engine, what = WyomingSttEngine(s.stt.wyoming), "stt server"
    try:
        info, rtt = engine.describe()
    except SttError as e:
        if s.stt.fallback != "none":  # as the LLM server's check: turns still get an answer
            return Check(what, WARN, f"{e.message}; turns fall back to the local {s.stt.fallback} engine",
                         e.fix or "check stt.wyoming.host and port")
        return Check(what, FAIL, e.message, e.fix or "check stt.wyoming.host and port")
    names = [m.get("name") for a in info.get("asr") or [] for m in a.get("models") or []]
    return Check(what, OK, f"{engine.address} ({', '.join(map(str, names)) or 'no model listed'}) answered in "
                 f"{rtt * 1000:.0f} ms")


def check_tts_server(s: Settings) -> Check | None:
    """``tts.engine: wyoming``: the server answers Wyoming ``describe`` and speaks a short sentence; both times."""
    if s.tts.engine != "wyoming":
        return None
    from .errors import TtsError
    from .llm_http import RemoteFailure
    from .tts_wyoming import WyomingTts

    engine, what = WyomingTts(s.tts.wyoming, s.tts), "tts server"
    fix = "check tts.wyoming.host and port; start the server (README: One server, several rooms)"
    try:
        info, rtt = engine.describe()
        t0 = time.monotonic()
        audio = engine._remote("Hello.")
        speak_s = time.monotonic() - t0
    except (TtsError, RemoteFailure) as e:
        detail = e.message if isinstance(e, TtsError) else f"{engine.address} failed a sentence ({e})"
        if s.tts.fallback != "none":  # turns are still spoken
            return Check(what, WARN, f"{detail}; sentences fall back to the local voice", fix)
        return Check(what, FAIL, detail, fix)
    voices = [v.get("name") for p in info.get("tts") or [] for v in p.get("voices") or []]
    voice = s.tts.wyoming.voice
    if voice and voice not in voices:
        return Check(what, FAIL, f"{engine.address} does not list the voice {voice!r} ({len(voices)} voices)",
                     "set tts.wyoming.voice to a voice the server lists, or null for its default")
    rate = engine.server_rate or 0
    return Check(what, OK, f"{engine.address} ({'streaming, ' if engine.streaming else ''}{voice or 'default voice'}, "
                 f"{rate} Hz) answered describe in {rtt * 1000:.0f} ms; first audio of 'Hello.' after "
                 f"{(engine.last_first_audio_s or 0) * 1000:.0f} ms, {len(audio) / rate:.2f} s of speech in "
                 f"{speak_s * 1000:.0f} ms")


def check_broker(m: MqttSettings, site_id: str, timeout_s: float = BROKER_TIMEOUT_S) -> Check:
    """A real MQTT connection: TCP, TLS when configured, credentials (CONNACK), then a clean disconnect.

    The client id is our own (``edge-agent-check-…``): reusing the daemon's would make the broker drop the running
    daemon's session.
    """
    import socket
    import ssl

    import paho.mqtt.client as mqtt

    from .config import mqtt_password

    what = "mqtt broker"
    if not m.enabled:
        return Check(what, OK, "skipped (mqtt.enabled is false)")
    where = f"{m.host}:{m.port}{' (TLS)' if m.tls else ''}"
    try:
        password = mqtt_password(m)
    except ConfigError as e:
        return Check(what, FAIL, e.message, e.fix or "")
    if m.tls and m.ca_file and not Path(m.ca_file).expanduser().is_file():
        return Check(what, FAIL, f"mqtt.ca_file {m.ca_file} does not exist",
                     "set mqtt.ca_file to the broker's CA certificate (PEM), or null for the system store")
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-agent-check-{site_id}-{os.getpid()}",
                         protocol=protocol, reconnect_on_failure=False)
    client.connect_timeout = timeout_s
    if m.username is not None:
        client.username_pw_set(m.username, password)
    if m.tls:
        client.tls_set(ca_certs=str(Path(m.ca_file).expanduser()) if m.ca_file else None)
    got: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: got.setdefault("reason", reason)
    port_fix = (f"is the broker running and listening on {m.host}:{m.port}? (on the broker: `systemctl status "
                "mosquitto`; Mosquitto 2 listens only on localhost unless its config has a `listener 1883` line); "
                "else correct mqtt.host / mqtt.port")
    t0 = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except ConnectionRefusedError:
        return Check(what, FAIL, f"connection refused by {where}", port_fix)
    except socket.gaierror as e:
        return Check(what, FAIL, f"cannot resolve host {m.host!r}: {e.strerror}",
                     "correct mqtt.host (an IP address avoids depending on DNS/mDNS)")
    except TimeoutError:
        return Check(what, FAIL, f"timeout: no TCP connection to {where} within {timeout_s:g} s",
                     "check that the broker host is up and reachable (firewall?), and mqtt.host / mqtt.port")
    except ssl.SSLError as e:
        return Check(what, FAIL, f"TLS handshake with {where} failed: {e.reason or e}",
                     "set mqtt.ca_file to the CA that signed the broker's certificate, or mqtt.tls: false for a "
                     "plain listener")
    except OSError as e:
        return Check(what, FAIL, f"cannot connect to {where}: {e.strerror or e}", port_fix)
    try:
        while "reason" not in got and time.monotonic() - t0 < timeout_s:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS and "reason" not in got:
                return Check(what, FAIL, f"{where} closed the connection without answering the MQTT CONNECT",
                             "is this an MQTT port, and does mqtt.tls match the listener (TLS or plain)?")
        ms = (time.monotonic() - t0) * 1000
        if "reason" not in got:
            return Check(what, FAIL, f"timeout: {where} accepted TCP but sent no MQTT CONNACK within {timeout_s:g} s",
                         "is this an MQTT port, and does mqtt.tls match the listener (TLS or plain)?")
        reason = got["reason"]
        who = f"user {m.username!r}" if m.username is not None else "anonymous"
        if _is_auth_failure(reason):
            return Check(what, FAIL, f"not authorized: {where} refused {who} ({reason})",
                         "set mqtt.username and the password (mqtt.password_file or password_env) to an account of "
                         "the broker (Mosquitto: mosquitto_passwd), or allow this client in its ACL")
        if getattr(reason, "is_failure", False):
            return Check(what, FAIL, f"{where} refused the connection: {reason}",
                         "check mqtt.protocol and the broker's log")
        return Check(what, OK, f"connected to {where} as {who}, MQTT {m.protocol}, in {ms:.0f} ms")
    finally:
        try:
            client.disconnect()  # a clean DISCONNECT: the broker logs no "connection lost" for the probe
            client.loop(timeout=0.05)
        except Exception:  # noqa: BLE001 - best-effort goodbye; the verdict is already made
            pass
        sock = client.socket()
        if sock is not None:
            sock.close()


__all__ = ["BROKER_TIMEOUT_S", "check_audio", "check_broker", "check_llm_server", "check_stt_server"]
