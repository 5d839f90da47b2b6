"""A local OpenAI-compatible chat-completions server for tests: the one external service tests may stand in for.

It answers ragas' structured prompts with a valid instance of the JSON schema the prompt embeds (verdicts 1,
`noncommittal` 0), and any other prompt with a fixed answer. As a judge it can be strict or lenient and obey or not:
`verdict` is the value of every integer verdict field (0: a judge that rejects every statement); `obey` names a text
(an injected instruction) on seeing which in a judge prompt the judge gives 1 whatever `verdict` says; `verdict_noise`
flips each integer verdict (0/1) with that probability, drawn from one random generator seeded by `seed` and shared
by all requests, so that identical evaluations against one server get different judgements (run-to-run noise).

As a golden-set writer (`ragops golden generate`'s prompts) it answers from the passages in the prompt: evidence
copied from them, an answer made of that evidence, a paraphrase question built of words the passage lacks, an
off-topic unanswerable question; `golden_faults` (kind → fault) makes every item of a kind fail one check:
"fabricate" (a citation not in the document), "overlap" (a paraphrase sharing the evidence's words), "answerable"
(an "unanswerable" question the corpus answers), "unsupported" (the support check says no).

It can misbehave the ways real endpoints do: `fail_with` makes every call return that status; `failure` picks a
failure mode (FAILURES) for the answer prompts, the ragas judge prompts or all of them; `fail_every` fails every n-th
request with a 500; `api_key` makes it refuse any request without that bearer key. Every request is recorded with its
arrival time and what was sent back.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from evaluations.golden_checks import content_words
from evaluations.golden_generate import GENERATE_HEAD, SUPPORT_PROMPT, UNANSWERABLE_ANSWER
from tasks.serve.answering import PROMPT

SCHEMA = re.compile(r"following schema as specified in JSON Schema:\n(.*?)Do not use single quotes", re.S)
ANSWER = "According to the context, the documented behaviour answers the question."
ANSWER_PROMPT_START = PROMPT.split("{context}")[0]
QUESTION = re.compile(r"\nQuestion: (.*)\nAnswer:$")
NON_JSON = "Sure! Here is what I think: the statement is mostly supported, roughly speaking."
FAILURES = ("timeout", "rate_limit", "server_error", "malformed_json", "non_json")
Failure = Literal["timeout", "rate_limit", "server_error", "malformed_json", "non_json"]
Scope = Literal["all", "answer", "judge"]
GENERATE_START = GENERATE_HEAD.split("{kind}")[0]
SUPPORT_START = SUPPORT_PROMPT.split("\n")[0]
KIND = re.compile(r"Kind: (\w+)\.")
PASSAGES = re.compile(r'<passage number="(\d+)" doc="[^"]*">\n(.*?)\n</passage>', re.S)
# Words for paraphrase questions (a question uses those its passage lacks) and off-topic unanswerable questions.
PLAIN_WORDS = [
    "gadget",
    "contraption",
    "widget",
    "gizmo",
    "apparatus",
    "mechanism",
    "device",
    "implement",
    "tool",
    "instrument",
    "thingamajig",
    "doohickey",
    "whatsit",
    "contrivance",
    "appliance",
    "utensil",
    "artifact",
    "object",
    "item",
    "piece",
]
OFF_TOPIC = [
    "Which chemical element has the atomic number seventy-nine?",
    "How many moons orbit the planet Neptune?",
    "Who painted the ceiling of the Sistine Chapel?",
    "What is the boiling point of liquid nitrogen in kelvin?",
    "Which river flows through the city of Budapest?",
    "What is the tallest mountain on the continent of Africa?",
    "In which year did the Battle of Hastings take place?",
    "How many strings does a standard concert harp have?",
    "Which bird lays the largest egg of any living species?",
    "What is the capital city of the Canadian province of Alberta?",
    "Which composer wrote the opera The Magic Flute?",
]


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    at: float  # time.monotonic() on arrival
    kind: str  # "answer" (the answerer's prompt) or "judge" (a ragas prompt)
    call: str  # hash of the request body: a client's retries of one call share it
    retry_count: int  # the OpenAI client's x-stainless-retry-count header
    authorization: str
    status: int  # what was sent back (0: nothing, the client had hung up)


def instance(
    schema: dict[str, Any], defs: dict[str, Any], name: str = "", verdict: Callable[[], int] = lambda: 1
) -> Any:
    """A small valid value for a (pydantic-generated) JSON schema; integer fields but `noncommittal` get `verdict()`."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].split("/")[-1]], defs, name, verdict)
    if "anyOf" in schema:
        return instance(next(s for s in schema["anyOf"] if s.get("type") != "null"), defs, name, verdict)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: instance(sub, defs, key, verdict) for key, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items", {"type": "string"}), defs, name, verdict)]
    if kind == "integer":
        return 0 if name == "noncommittal" else verdict()
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return f"The context states the fact about {name or 'the question'}."


class FakeLLM:
    """Start with `with FakeLLM() as llm:`; `llm.base_url` goes into RAGOPS_LLM_BASE_URL."""

    def __init__(
        self,
        fail_with: int | None = None,
        delay_s: float = 0.0,
        *,
        failure: Failure | None = None,
        scope: Scope = "all",
        hang_s: float = 30.0,
        retry_after_s: int = 1,
        fail_every: int = 0,
        api_key: str | None = None,
        answer_with_question: bool = False,
        verdict: int = 1,
        obey: str | None = None,
        verdict_noise: float = 0.0,
        seed: int = 0,
        golden_faults: dict[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.fail_with = fail_with
        self.delay_s = delay_s
        self.failure = failure
        self.scope = scope
        self.hang_s = hang_s  # "timeout": how long a reply takes (longer than the client waits)
        self.retry_after_s = retry_after_s  # "rate_limit": the Retry-After header
        self.fail_every = fail_every
        self.api_key = api_key
        self.answer_with_question = answer_with_question  # answers differ, so judge prompts on them differ too
        self.verdict = verdict  # integer verdict fields of judge replies (0: reject every statement)
        self.obey = obey  # a judge prompt holding this text gets verdicts 1, whatever `verdict` says
        self.verdict_noise = verdict_noise  # the probability that each integer verdict is flipped
        self.obeyed = 0  # how many judge replies obeyed `obey`
        self.golden_faults = golden_faults or {}  # kind → the check every generated item of that kind fails
        self._off_topic = 0  # the next off-topic question to hand out
        self._rng = random.Random(seed)  # one generator for all requests: noise differs from run to run
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                at = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not raw:  # a connection closed before any request body came (seen once on a busy CI machine)
                    return
                body = json.loads(raw or b"{}")
                prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
                kind = "answer" if ANSWER_PROMPT_START in prompt else "judge"
                if prompt.startswith(GENERATE_START):
                    kind = "generate"
                elif prompt.startswith(SUPPORT_START):
                    kind = "support"
                with outer._lock:
                    outer.requests.append(body)
                    outer.authorization.append(self.headers.get("Authorization", ""))
                    number = len(outer.requests)
                status = outer._reply(self, body, prompt, kind, number)
                with outer._lock:
                    outer.seen.append(
                        Seen(
                            at,
                            kind,
                            hashlib.sha256(raw).hexdigest()[:16],
                            int(self.headers.get("x-stainless-retry-count", 0)),
                            self.headers.get("Authorization", ""),
                            status,
                        )
                    )

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _reply(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], prompt: str, kind: str, number: int) -> int:
        """Send the response for one request; returns its status."""
        time.sleep(self.delay_s)
        if self.api_key is not None and handler.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            error = {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return _send(handler, 401, {"error": error})
        if self.fail_with:
            return _send(handler, self.fail_with, {"error": {"message": "injected failure", "type": "server_error"}})
        if self.fail_every and number % self.fail_every == 0:
            return _send(handler, 500, {"error": {"message": "injected failure", "type": "server_error"}})
        failure = self.failure if self.scope in ("all", kind) else None
        if failure == "timeout":
            self._stopping.wait(self.hang_s)
        elif failure == "rate_limit":
            headers = {"Retry-After": str(self.retry_after_s)}
            return _send(handler, 429, {"error": {"message": "Rate limit reached", "type": "requests"}}, headers)
        elif failure == "server_error":
            return _send(handler, 500, {"error": {"message": "injected failure", "type": "server_error"}})
        elif failure == "malformed_json":
            return _send(handler, 200, b'{"id": "chatcmpl-test", "object": "chat.completion", "choices": [{"ind')
        match = SCHEMA.search(prompt)
        if failure == "non_json":
            content = NON_JSON
        elif kind == "generate":
            content = json.dumps(self._golden_item(prompt))
        elif kind == "support":
            supported = "unsupported" not in self.golden_faults.values() and self.verdict == 1
            content = json.dumps({"supported": supported, "reason": "checked against the evidence"})
        elif match:
            schema = json.loads(match.group(1))
            content = json.dumps(instance(schema, schema.get("$defs", {}), verdict=self._judge(prompt)))
        elif self.answer_with_question and (asked := QUESTION.search(prompt)):
            content = f"{ANSWER} It concerns: {asked.group(1)}"
        else:
            content = ANSWER
        choices = [
            {"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            for i in range(int(body.get("n") or 1))
        ]
        completion = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return _send(handler, 200, completion)

    def _golden_item(self, prompt: str) -> dict[str, Any]:
        """A golden-set item made from the passages of a generation prompt (see `golden_faults`)."""
        kind = m.group(1) if (m := KIND.search(prompt)) else "factoid"
        fault = self.golden_faults.get(kind)
        passages = [(int(n), text) for n, text in PASSAGES.findall(prompt)]
        sentences = {n: _sentences(text) for n, text in passages}
        first = sentences[1][0] if sentences.get(1) else passages[0][1][:200]
        if kind == "unanswerable":
            if fault == "answerable":
                return {
                    "question": f"Is it true that {first.rstrip('.')}?",
                    "answer": UNANSWERABLE_ANSWER,
                    "evidence": [],
                }
            with self._lock:
                question = OFF_TOPIC[self._off_topic % len(OFF_TOPIC)]
                self._off_topic += 1
            return {"question": question, "answer": UNANSWERABLE_ANSWER, "evidence": []}
        if kind == "multi_document":
            cited = [(n, sentences[n][0]) for n, _ in passages if sentences.get(n)]
        elif kind == "multi_sentence":
            cited = [(1, s) for s in sentences.get(1, [first])[:2]]
        else:
            cited = [(1, first)]
        if fault == "fabricate":
            cited = [(n, "It is never the case that " + text[0].lower() + text[1:]) for n, text in cited]
        answer = " ".join(text for _, text in cited)
        words = first.split()
        if kind == "paraphrase":
            own = content_words(" ".join(text for _, text in passages))
            plain = [w for w in PLAIN_WORDS if w not in own and w.rstrip("s") not in own]
            pick = int(hashlib.sha256(first.encode()).hexdigest(), 16)
            chosen = [plain[(pick >> (4 * i)) % len(plain)] for i in range(3)]
            question = f"Which {chosen[0]}, {chosen[1]} or {chosen[2]} is this about?"
            if fault == "overlap":
                question = f"How does one handle the {' '.join(words[:4])}?"
        else:
            question = f"What does the documentation say about {' '.join(words[:8]).rstrip('.,;:')}?"
        return {"question": question, "answer": answer, "evidence": [{"passage": n, "text": t} for n, t in cited]}

    def _judge(self, prompt: str) -> Callable[[], int]:
        """The verdict of each integer field of one judge reply: `verdict`, or 1 when obeying; then maybe flipped."""
        obeying = self.obey is not None and self.obey in prompt
        if obeying:
            with self._lock:
                self.obeyed += 1
        base = 1 if obeying else self.verdict

        def verdict() -> int:
            if not self.verdict_noise:
                return base
            with self._lock:  # requests are served by threads; the generator is shared
                flip = self._rng.random() < self.verdict_noise
            return 1 - base if flip else base

        return verdict

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of this server."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def calls(self, kind: str | None = None) -> dict[str, list[Seen]]:
        """Requests grouped by call (identical bodies: one call and its retries), each in arrival order."""
        groups: dict[str, list[Seen]] = {}
        for seen in sorted(self.seen, key=lambda s: s.at):
            if kind is None or seen.kind == kind:
                groups.setdefault(seen.call, []).append(seen)
        return groups

    def count(self, *, kind: str | None = None, status: int | None = None) -> int:
        """How many requests of this kind got this status."""
        return sum(1 for s in self.seen if (kind is None or s.kind == kind) and (status is None or s.status == status))

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # release hanging replies
        self.server.shutdown()
        self.server.server_close()


def _sentences(text: str) -> list[str]:
    """Sentences of a passage long enough to cite (20–300 characters), whitespace as in the passage."""
    pieces = re.split(r"(?<=[.!?])\s+|\n{2,}", text)
    plain = [p.strip() for p in pieces if 20 <= len(p.strip()) <= 300 and "\n" not in p.strip()]
    return [p for p in plain if not p.startswith(("#", "<", "*", "|", "`", "-"))]


def _send(
    handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None
) -> int:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
        return 0
    return status


if __name__ == "__main__":  # try `ragops golden generate` or an LLM-judged evaluation without a model
    import argparse

    parser = argparse.ArgumentParser(description="A local fake OpenAI-compatible server (template answers).")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    with FakeLLM(port=parser.parse_args().port) as fake:
        print(f"export RAGOPS_LLM_BASE_URL={fake.base_url} RAGOPS_LLM_MODEL=fake", flush=True)
        threading.Event().wait()
