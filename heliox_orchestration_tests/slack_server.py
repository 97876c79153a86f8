"""A loopback stand-in for Slack's Incoming Webhook endpoint, for the real ``WebhookClient``.

It answers ``ok`` like Slack, validates the JSON and the Block Kit limits (answering 400
``invalid_payload`` / ``invalid_blocks`` / ``no_text`` as Slack does), records every request with
its receive time, and can be scripted request by request: any status and Slack error string,
``Retry-After`` headers, or a hang past the client's timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXwxyz"

MAX_BLOCKS = 50
MAX_TEXT = 40_000
TEXT_LIMITS = {"header": 150, "section": 3000, "field": 2000, "context": 3000}
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCK_ID = 255


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_seconds: float = 0.0  # wait this long before answering

    @classmethod
    def error(cls, status: int, slack_error: str) -> Reply:
        return cls(status=status, body=slack_error)

    @classmethod
    def rate_limited(cls, retry_after: str = "1") -> Reply:
        return cls(status=429, body="rate_limited", headers={"Retry-After": retry_after})

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        return cls(hang_seconds=seconds)


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float  # time.monotonic() once the body was read
    status: int  # what the server answered
    answer: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def _text_problem(obj: Any, limit: int, *, plain_only: bool = False) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return True
    if obj.get("type") not in (("plain_text",) if plain_only else ("plain_text", "mrkdwn")):
        return True
    return not obj["text"] or len(obj["text"]) > limit


def _block_problem(block: Any) -> bool:
    if not isinstance(block, dict):
        return True
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID):
        return True
    kind = block.get("type")
    if kind == "header":
        return _text_problem(block.get("text"), TEXT_LIMITS["header"], plain_only=True)
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            return True
        if text is not None and _text_problem(text, TEXT_LIMITS["section"]):
            return True
        return fields is not None and (
            not isinstance(fields, list)
            or len(fields) > MAX_FIELDS
            or any(_text_problem(f, TEXT_LIMITS["field"]) for f in fields)
        )
    if kind == "context":
        elements = block.get("elements")
        return (
            not isinstance(elements, list)
            or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS
            or any(_text_problem(e, TEXT_LIMITS["context"]) for e in elements)
        )
    return kind != "divider"


def validate_payload(raw: bytes) -> str | None:
    """Slack's error string for a payload it would refuse, or None when it would post it."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "invalid_payload"
    if not isinstance(payload, dict):
        return "invalid_payload"
    text, blocks = payload.get("text"), payload.get("blocks")
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT):
        return "invalid_payload"
    if blocks is not None:
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= MAX_BLOCKS:
            return "invalid_blocks"
        ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
        if len(ids) != len(set(ids)) or any(_block_problem(b) for b in blocks):
            return "invalid_blocks"
    if not text and not blocks:
        return "no_text"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        reply = fake.next_reply()
        if reply is None:
            problem = None if self.path.startswith("/services/") else "no_service"
            problem = problem or validate_payload(body)
            reply = Reply.error(404 if problem == "no_service" else 400, problem) if problem else Reply()
        fake.record(
            ReceivedRequest(
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                received_at=time.monotonic(),
                status=reply.status,
                answer=reply.body,
            )
        )
        if reply.hang_seconds and fake.stopping.wait(reply.hang_seconds):
            return
        encoded = reply.body.encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(encoded)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(encoded)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the default writes the request line, the webhook's secret path, to stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeSlackWebhook

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a client that timed out and closed its socket is part of the tests."""


class FakeSlackWebhook:
    """The server, started on a free loopback port; use as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._outage: Reply | None = None
        self._requests: list[ReceivedRequest] = []
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = DEFAULT_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; then validate and answer ``ok``."""
        with self._lock:
            self._replies.extend(replies)

    def outage(self, reply: Reply | None) -> None:
        """Answer every request after the scripted ones with ``reply``; None ends the outage."""
        with self._lock:
            self._outage = reply

    def next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else self._outage

    def record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlackWebhook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
