"""A local OpenAI-compatible chat-completions server for tests: the one external service tests may stand in for.

It answers ragas' structured prompts with a valid instance of the JSON schema the prompt embeds (verdicts 1,
`noncommittal` 0), and any other prompt with a fixed answer. `fail_with` makes every call return that status.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SCHEMA = re.compile(r"following schema as specified in JSON Schema:\n(.*?)Do not use single quotes", re.S)
ANSWER = "According to the context, the documented behaviour answers the question."


def instance(schema: dict[str, Any], defs: dict[str, Any], name: str = "") -> Any:
    """A small valid value for a (pydantic-generated) JSON schema."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].split("/")[-1]], defs, name)
    if "anyOf" in schema:
        return instance(next(s for s in schema["anyOf"] if s.get("type") != "null"), defs, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: instance(sub, defs, key) for key, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {"type": "string"}), defs, name)]
    if kind == "integer":
        return 0 if name == "noncommittal" else 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return f"The context states the fact about {name or 'the question'}."


class FakeLLM:
    """Start with `with FakeLLM() as llm:`; `llm.base_url` goes into RAGOPS_LLM_BASE_URL."""

    def __init__(self, fail_with: int | None = None, delay_s: float = 0.0) -> None:
        self.fail_with = fail_with
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.requests.append(body)
                outer.authorization.append(self.headers.get("Authorization", ""))
                time.sleep(outer.delay_s)
                if outer.fail_with:
                    self._send(outer.fail_with, {"error": {"message": "injected failure", "type": "server_error"}})
                    return
                prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
                match = SCHEMA.search(prompt)
                if match:
                    schema = json.loads(match.group(1))
                    content = json.dumps(instance(schema, schema.get("$defs", {})))
                else:
                    content = ANSWER
                choices = [
                    {"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    for i in range(int(body.get("n") or 1))
                ]
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": choices,
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
