"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol.

Used instead of mocks so the ``openai`` client's real transport (and its retries) are exercised, by
the LLM describer, composer and :mod:`saerad.llm` tests. Replies come from ``script(prompt, n) ->
(status, content, headers)``, where ``n`` counts earlier requests with the same prompt, or, without
a script, from the ``replies`` queue (status 200). Every request body is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, script=None) -> None:
        self.script = script or self._next_reply
        self.replies: list[str] = []
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append(body)
                    n = server.seen.get(prompt, 0)
                    server.seen[prompt] = n + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    status, content, headers = server.script(prompt, n)
                    payload = (
                        {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                         "created": int(time.time()), "model": body.get("model", "test"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                        if status == 200 else {"error": {"message": "scripted failure", "type": "server_error"}}
                    )
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _next_reply(self, prompt: str, n: int) -> tuple[int, str, dict]:
        return 200, (self.replies.pop(0) if self.replies else "{}"), {}

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
