#!/usr/bin/env python3
"""lmlab serve as a client meets it (ctest -L serve): the server started by the test on a free
loopback port, spoken to with curl and with the official openai Python package, stopped with
SIGTERM / SIGINT. Every answer's tokens are checked against the same request alone (`lmlab
generate --json`), whatever else runs.

    .venv/bin/python harness/cli/serve_test.py LMLAB GOLDEN_DIR SHARED_DIR

Cases that need ../shared (stories260K) or a tokenizer the exporter copies from it say SKIPPED when
it is absent. Traffic goes to 127.0.0.1 only.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_common import Server, generate_alone, parse_metrics, sse_events  # noqa: E402

LMLAB, GOLDEN, SHARED = sys.argv[1:4] if len(sys.argv) >= 4 else (None,) * 3
MODELS = os.path.join(GOLDEN or "", "models")
TINY_LLAMA = os.path.join(MODELS, "tiny-llama.h5")
TINY_GPT2 = os.path.join(MODELS, "tiny-gpt2")
TINY_QWEN2 = os.path.join(MODELS, "tiny-qwen2")
STORIES = os.path.join(SHARED or "", "models", "stories260K", "stories260K.bin")


def curl(url, body=None, headers=(), method=None, timeout=60):
    """(status, body) of one request with curl."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-o", "-", "-w", "\n%{http_code}", url]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    for h in headers:
        cmd += ["-H", h]
    if method:
        cmd += ["-X", method]
    p = subprocess.run(cmd, input=body.encode() if isinstance(body, str) else body, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout + 10)
    assert p.returncode == 0, p.stderr.decode()
    text, _, status = p.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(status), text


def post(server, path, request, **kw):
    status, text = curl(server.url + path, json.dumps(request), **kw)
    return status, (json.loads(text) if text and not request.get("stream") else text)


def read_response(sock, with_headers=False):
    """(status, body) of one HTTP response with a Content-Length, read from a socket; with_headers:
    (status, {name: value}, body)."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, body = reply.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    status = int(head.split(b" ")[1])
    if not with_headers:
        return status, body
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, value = line.decode().split(": ", 1)
        assert name not in headers, f"the header {name} twice in one response:\n{head.decode()}"
        headers[name] = value
    return status, headers, body


def metrics(server):
    status, text = curl(server.url + "/metrics")
    assert status == 200
    return parse_metrics(text)


def wait_idle(server, timeout=10):
    """/metrics once nothing runs or waits and every page is free (None if that never happens)."""
    end = time.time() + timeout
    while time.time() < end:
        m = metrics(server)
        if m["lmlab_requests_running"] == 0 and m["lmlab_requests_waiting"] == 0 and m["lmlab_kv_pages_used"] == 0:
            return m
        time.sleep(0.05)
    return None


def has_tokenizer_json(model):
    return os.path.exists(os.path.join(model, "tokenizer.json"))


llama = None  # one server on the tiny LLaMA for most cases (setUpModule)
_shared = {}   # model -> a server the cases share (started when first asked for, stopped at the end)


def shared_server(model):
    if model not in _shared:
        _shared[model] = Server(LMLAB, model)
    return _shared[model]


def setUpModule():
    global llama
    llama = Server(LMLAB, TINY_LLAMA, "--max-running", 4, "--chunk", 16)
    _shared[TINY_LLAMA] = llama


def tearDownModule():
    for server in _shared.values():
        rc = server.stop()
        assert rc == 0, f"exit {rc}\n{server.stderr()}"


class Api(unittest.TestCase):
    """The endpoints with curl, each answer against the request alone."""

    def test_health_and_models(self):
        self.assertEqual(curl(llama.url + "/health"), (200, '{"status":"ok"}'))
        status, text = curl(llama.url + "/v1/models")
        self.assertEqual(status, 200)
        models = json.loads(text)
        self.assertEqual(models["object"], "list")
        self.assertEqual([m["id"] for m in models["data"]], ["tiny-llama.h5"])

    def completion(self, **fields):
        request = {"prompt": "In the beginning", "max_tokens": 12, "temperature": 0, "return_token_ids": True, **fields}
        status, body = post(llama, "/v1/completions", request)
        self.assertEqual(status, 200, body)
        return body

    def test_greedy_completion_is_the_request_alone(self):
        body = self.completion()
        choice = body["choices"][0]
        alone = generate_alone(LMLAB, TINY_LLAMA, choice["prompt_token_ids"], 12)
        self.assertEqual(choice["prompt_token_ids"], alone["prompt_ids"])
        self.assertEqual(choice["token_ids"], alone["ids"])
        self.assertEqual(choice["text"], alone["text"])
        self.assertEqual(choice["finish_reason"], "length")
        self.assertEqual(body["object"], "text_completion")
        self.assertEqual(body["model"], "tiny-llama.h5")
        self.assertEqual(body["usage"], {"prompt_tokens": len(alone["prompt_ids"]), "completion_tokens": 12,
                                         "total_tokens": len(alone["prompt_ids"]) + 12})

    def test_seeded_sampling_is_the_request_alone(self):
        for seed in (1, 2):
            body = self.completion(temperature=0.9, top_k=50, top_p=0.95, seed=seed, max_tokens=20,
                                   prompt=[1, 1046, 261, 2074])
            alone = generate_alone(LMLAB, TINY_LLAMA, [1, 1046, 261, 2074], 20, 0.9, 50, 0.95, seed)
            self.assertEqual(body["choices"][0]["token_ids"], alone["ids"], seed)

    def test_stream_is_one_event_per_token_then_done(self):
        whole = self.completion(max_tokens=10)["choices"][0]
        status, text = post(llama, "/v1/completions", {"prompt": "In the beginning", "max_tokens": 10, "temperature": 0,
                                                       "stream": True, "return_token_ids": True,
                                                       "stream_options": {"include_usage": True}})
        self.assertEqual(status, 200)
        events = sse_events(text)
        self.assertEqual(events[-1], "[DONE]")
        chunks = events[:-1]
        tokens = [c for c in chunks if c["choices"] and c["choices"][0].get("token_ids")]
        self.assertEqual(len(tokens), 10)  # one event per token ...
        self.assertEqual([t for c in tokens for t in c["choices"][0]["token_ids"]], whole["token_ids"])
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        self.assertEqual(finishes, ["length"])  # ... one that ends it, then usage and [DONE]
        self.assertEqual("".join(c["choices"][0]["text"] for c in chunks if c["choices"]), whole["text"])
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 10)
        self.assertEqual(chunks[-1]["choices"], [])

    def test_logprobs_come_from_the_logits(self):
        choice = self.completion(logprobs=3, max_tokens=6)["choices"][0]
        lp = choice["logprobs"]
        self.assertEqual(len(lp["tokens"]), 6)
        self.assertEqual("".join(lp["tokens"]), choice["text"])  # token strings: decode's rule, in context
        for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
            self.assertEqual(len(top), 3)
            self.assertLessEqual(chosen, 0)
            self.assertAlmostEqual(max(top.values()), chosen, places=5)  # greedy: the chosen one is the most probable
        self.assertEqual(lp["text_offset"][0], 0)

    def test_stop_string_cuts_the_text_before_it(self):
        full = self.completion(max_tokens=40)["choices"][0]
        text = full["text"]
        stop = text[len(text) // 2:len(text) // 2 + 3]
        cut = text[:text.find(stop)]
        for stream in (False, True):
            status, body = post(llama, "/v1/completions", {"prompt": "In the beginning", "max_tokens": 40, "temperature": 0,
                                                           "stop": [stop, "never appears"], "stream": stream,
                                                           "return_token_ids": True})
            self.assertEqual(status, 200)
            if stream:
                chunks = [e for e in sse_events(body) if e != "[DONE]"]
                got = "".join(c["choices"][0]["text"] for c in chunks)
                ids = [t for c in chunks for t in c["choices"][0].get("token_ids", [])]
                reason = chunks[-1]["choices"][0]["finish_reason"]
            else:
                got, ids, reason = body["choices"][0]["text"], body["choices"][0]["token_ids"], body["choices"][0]["finish_reason"]
            self.assertEqual(got, cut, (stop, stream))
            self.assertEqual(reason, "stop")
            self.assertEqual(ids, full["token_ids"][:len(ids)])  # the tokens up to the stop, as alone
        self.assertIsNotNone(wait_idle(llama))  # the stopped request was dropped and its pages freed

    def test_chat_needs_a_chat_template(self):
        status, body = post(llama, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["param"], "messages")
        self.assertEqual(body["error"]["code"], "chat_template_missing")
        self.assertIn("tiny-llama.h5", body["error"]["message"])


class BadInput(unittest.TestCase):
    """Each bad request gets a 4xx with an OpenAI-shaped error naming the field; nothing a client
    sends stops the server or changes another request's answer."""

    CASES = [  # (body, status, param, code, a part of the message)
        ('{"prompt": "a", "max_tokens": 3', 400, None, "invalid_json", "not JSON"),
        ('[1, 2]', 400, None, "invalid_json", "JSON object"),
        ('{"prompt": "a", "max_token": 3}', 400, "max_token", "unknown_parameter", "unknown field 'max_token'"),
        ('{"prompt": "a", "max_tokens": "3"}', 400, "max_tokens", "invalid_type", "must be an integer"),
        ('{"prompt": "a", "max_tokens": 3.5}', 400, "max_tokens", "invalid_type", "must be an integer"),
        ('{"prompt": "a", "temperature": "hot"}', 400, "temperature", "invalid_type", "must be a number"),
        ('{"prompt": "a", "temperature": 3}', 400, "temperature", "invalid_value", "expected 0 to 2"),
        ('{"prompt": "a", "stream": "yes"}', 400, "stream", "invalid_type", "true or false"),
        ('{"prompt": "a", "seed": -1}', 400, "seed", "invalid_value", "expected 0 to"),
        ('{"prompt": "a", "max_tokens": 0}', 400, "max_tokens", "invalid_value", "expected 1 to"),
        ('{"prompt": "a", "n": 0}', 400, "n", "invalid_value", "expected 1 to"),
        ('{"prompt": "a", "max_tokens": 100000}', 400, "max_tokens", "context_length_exceeded", "max_tokens is 100000"),
        ('{"prompt": [1, 99999]}', 400, "prompt[1]", "invalid_value", "99999"),
        ('{"prompt": ["a", "b"]}', 400, "prompt", "unsupported_value", "a batch"),
        ('{"prompt": "a", "n": 2}', 400, "n", "unsupported_value", "one completion per request"),
        ('{"prompt": "a", "echo": true}', 400, "echo", "unsupported_value", "not echoed"),
        ('{"prompt": "a", "best_of": 3}', 400, "best_of", "unsupported_value", "not supported"),
        ('{"prompt": "a", "presence_penalty": 0.5}', 400, "presence_penalty", "unsupported_value", "no penalties"),
        ('{"prompt": "a", "logprobs": 50}', 400, "logprobs", "invalid_value", "expected 0 to 20"),
        ('{"prompt": "a", "stop": 5}', 400, "stop", "invalid_type", "a string or a list"),
        ('{"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}', 400, "stop", "invalid_value", "at most 4"),
        ('{"prompt": "a", "stream_options": {"include_usage": true}}', 400, "stream_options", "invalid_value", "stream"),
        ('{"prompt": "a", "prompt": "b"}', 400, "prompt", "duplicate_parameter", "given twice"),
        ('{"max_tokens": 3}', 400, "prompt", "missing_required_parameter", "'prompt' is required"),
        ('{"prompt": "a", "model": "gpt-4"}', 404, "model", "model_not_found", "tiny-llama.h5"),
        ('{"prompt": ' + "[" * 100 + "]" * 100 + "}", 400, None, "invalid_json", "deeper than 64"),
        (b'{"prompt": "\xff"}', 400, None, "invalid_json", "not JSON"),
    ]

    def test_each_is_refused_by_name(self):
        before = metrics(llama)
        for body, status, param, code, part in self.CASES:
            with self.subTest(body=body):
                got, text = curl(llama.url + "/v1/completions", body)
                self.assertEqual(got, status, text)
                err = json.loads(text)["error"]
                self.assertEqual(set(err), {"message", "type", "param", "code"})
                self.assertEqual((err["param"], err["code"]), (param, code), err)
                self.assertIn(part, err["message"])
                self.assertEqual(err["type"], "invalid_request_error")
        after = metrics(llama)
        self.assertEqual(after['lmlab_requests_total{outcome="rejected"}'] - before['lmlab_requests_total{outcome="rejected"}'],
                         len(self.CASES))
        self.assertEqual(after["lmlab_steps_total"], before["lmlab_steps_total"])  # none reached the scheduler

    def test_prompt_too_long(self):
        status, text = curl(llama.url + "/v1/models")
        context = json.loads(text)["data"][0]["max_model_len"]
        status, body = post(llama, "/v1/completions", {"prompt": [1] * context})
        self.assertEqual(status, 400)
        self.assertEqual((body["error"]["param"], body["error"]["code"]), ("prompt", "context_length_exceeded"))
        self.assertIn(f"the prompt is {context} tokens", body["error"]["message"])

    def test_limits_and_routes(self):
        status, text = curl(llama.url + "/v1/completions", '{"prompt": "' + "a" * (2 << 20) + '"}')
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(text)["error"]["code"], "request_too_large")
        headers = [f"X-Filler-{i}: {'x' * 400}" for i in range(100)]
        status, text = curl(llama.url + "/v1/completions", '{"prompt": "a"}', headers=headers)
        self.assertEqual(status, 431)
        self.assertEqual(json.loads(text)["error"]["code"], "headers_too_large")
        status, text = curl(llama.url + "/v1/nothing-here")
        self.assertEqual(status, 404)
        self.assertIn("POST /v1/completions", json.loads(text)["error"]["message"])
        # and the server still answers as before
        status, body = post(llama, "/v1/completions", {"prompt": [1, 1046], "max_tokens": 3, "temperature": 0,
                                                       "return_token_ids": True})
        self.assertEqual(body["choices"][0]["token_ids"], generate_alone(LMLAB, TINY_LLAMA, [1, 1046], 3)["ids"])

    def test_a_body_past_the_limit_is_refused_before_it_is_read(self):
        # cpp-httplib 0.11 does not apply its body limit to a chunked body or to a POST without a
        # Content-Length (read until the client closes, or 5 s of silence), and reads a Content-Length
        # body past the limit to its end before its own 413: the server must read none of them, nor
        # trust a Content-Length that is not one number. The connection then closes: what follows the
        # headers is never read, not even as a next request (each body below holds one, a GET /health
        # that must get no answer).
        next_request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        many = b"".join(b"X-Header-%d: 1\r\n" % i for i in range(98))  # with Host and Content-Type: 100 lines, the limit
        cases = (
            (b"Transfer-Encoding: chunked\r\n\r\n100000\r\n", 411, "length_required", "Transfer-Encoding: chunked"),
            (b"Content-Length: 99999999999\r\n\r\n", 413, "request_too_large", "99999999999 bytes"),
            (b"Content-Length: 1048577\r\n\r\n", 413, "request_too_large", "at most 1048576 bytes"),
            (b"\r\n", 411, "length_required", "without a Content-Length header"),
            (b"Content-Length: -5\r\n\r\n", 400, "invalid_content_length", "'Content-Length: -5' is not a byte count"),
            (b"Content-Length: abc\r\n\r\n", 400, "invalid_content_length", "'Content-Length: abc'"),
            (b"Content-Length: 10\r\nContent-Length: 20\r\n\r\n", 400, "invalid_content_length", "disagree (10, 20)"),
            (many + b"X-One-Too-Many: 1\r\n\r\n", 431, "headers_too_large", "in 101 lines; at most 32768 bytes in 100 lines"),
            (b"Connection: close\r\n\r\n", 411, "length_required", "send the JSON body with its length"))
        before = metrics(llama)
        for head, status, code, said in cases:
            with self.subTest(status=status, head=head[:60]), \
                    socket.create_connection(("127.0.0.1", llama.port), timeout=10) as s:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head +
                          next_request + b"{" * 4096)
                got, headers, body = read_response(s, with_headers=True)
                self.assertEqual(got, status, body)
                self.assertEqual(headers.get("Connection"), "close")  # (once: read_response refuses a header twice)
                self.assertNotIn("Keep-Alive", headers)
                err = json.loads(body)["error"]
                self.assertEqual((err["code"], err["param"]), (code, None))
                self.assertIn(said, err["message"])
                rest = b""
                while chunk := s.recv(65536):  # closed by the server (recv times out otherwise)
                    rest += chunk
                self.assertEqual(rest, b"")  # no answer to the GET inside the body
        after = metrics(llama)
        self.assertEqual(after['lmlab_requests_total{outcome="rejected"}'] - before['lmlab_requests_total{outcome="rejected"}'],
                         len(cases))
        self.assertEqual(curl(llama.url + "/health")[0], 200)
        with socket.create_connection(("127.0.0.1", llama.port), timeout=10) as s:  # 100 lines are not too many
            body = b'{"prompt": [1], "max_tokens": 1}'
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + many + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            self.assertEqual(read_response(s)[0], 200)

    def test_a_post_without_a_body_on_another_route_is_404_or_405_at_once(self):
        for method, path, status, allow in (("POST", "/metrics", 405, "GET"), ("PUT", "/health", 405, "GET"),
                                            ("POST", "/nope", 404, None)):
            with self.subTest(method=method, path=path), \
                    socket.create_connection(("127.0.0.1", llama.port), timeout=10) as s:
                s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                got, headers, body = read_response(s, with_headers=True)
                self.assertEqual((got, headers.get("Allow")), (status, allow), body)
                self.assertEqual(json.loads(body)["error"]["code"], "method_not_allowed" if allow else "not_found")

    def test_a_known_route_with_another_method_is_405(self):
        for method, path, allow in (("GET", "/v1/completions", "POST"), ("DELETE", "/v1/chat/completions", "POST"),
                                    ("POST", "/v1/models", "GET"), ("PUT", "/metrics", "GET")):
            with socket.create_connection(("127.0.0.1", llama.port), timeout=10) as s:
                s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode())
                status, headers, body = read_response(s, with_headers=True)
                self.assertEqual((status, headers.get("Allow")), (405, allow), (method, path))
                err = json.loads(body)["error"]
                self.assertEqual(err["code"], "method_not_allowed")
                self.assertIn(f"takes {allow} only", err["message"])

    def test_garbage_on_the_socket(self):
        before = metrics(llama)
        for junk, status, code in ((b"\x00\xff garbage\r\n\r\n", 400, "malformed_http"),
                                   (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 414, "uri_too_long"),
                                   (b"POST /v1/completions HTTP/1.1\r\nX-Long: " + b"x" * 9000 + b"\r\n\r\n", 400,
                                    "malformed_http")):
            with socket.create_connection(("127.0.0.1", llama.port), timeout=10) as s:
                s.sendall(junk)
                got, body = read_response(s)
                self.assertEqual(got, status)
                self.assertEqual(json.loads(body)["error"]["code"], code)
        self.assertEqual(curl(llama.url + "/health")[0], 200)
        status, _ = curl(llama.url + "/v1/nothing-here")
        self.assertEqual(status, 404)
        after = metrics(llama)  # cpp-httplib's own refusals count as rejected too
        self.assertEqual(after['lmlab_requests_total{outcome="rejected"}'] - before['lmlab_requests_total{outcome="rejected"}'], 4)


class Disconnect(unittest.TestCase):
    def test_a_client_that_goes_away_is_cancelled_and_its_pages_freed(self):
        before = metrics(llama)
        body = json.dumps({"prompt": [1], "max_tokens": 200, "temperature": 0, "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", llama.port), timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 2:
            got += s.recv(4096)
        s.close()
        m = wait_idle(llama)
        self.assertIsNotNone(m, "the request kept running or kept its pages")
        self.assertEqual(m['lmlab_requests_total{outcome="cancelled"}'] - before['lmlab_requests_total{outcome="cancelled"}'], 1)
        self.assertLess(m["lmlab_generated_tokens_total"] - before["lmlab_generated_tokens_total"], 200)


class OpenAIClient(unittest.TestCase):
    """The official client, both endpoints, streaming and not."""

    def test_completions(self):
        import openai
        client = openai.OpenAI(base_url=llama.url + "/v1", api_key="unused", max_retries=0)
        r = client.completions.create(model="tiny-llama.h5", prompt="In the beginning", max_tokens=8, temperature=0,
                                      extra_body={"return_token_ids": True})
        alone = generate_alone(LMLAB, TINY_LLAMA, r.choices[0].prompt_token_ids, 8)
        self.assertEqual(r.choices[0].text, alone["text"])
        self.assertEqual(r.choices[0].token_ids, alone["ids"])
        self.assertEqual(r.usage.completion_tokens, 8)
        parts = list(client.completions.create(model="tiny-llama.h5", prompt="In the beginning", max_tokens=8,
                                               temperature=0, stream=True))
        self.assertEqual("".join(p.choices[0].text for p in parts), alone["text"])
        self.assertEqual(parts[-1].choices[0].finish_reason, "length")
        with self.assertRaises(openai.BadRequestError) as e:
            client.completions.create(model="tiny-llama.h5", prompt="x", n=2)
        self.assertEqual(e.exception.body["param"], "n")
        with self.assertRaises(openai.NotFoundError):
            client.completions.create(model="gpt-4", prompt="x")

    @unittest.skipUnless(has_tokenizer_json(TINY_QWEN2), "tiny-qwen2 has no tokenizer.json (../shared absent at export)")
    def test_chat(self):
        import openai
        qwen = shared_server(TINY_QWEN2)
        client = openai.OpenAI(base_url=qwen.url + "/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        r = client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=10, temperature=0,
                                           extra_body={"return_token_ids": True})
        choice = r.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        alone = generate_alone(LMLAB, TINY_QWEN2, choice.prompt_token_ids, 10)
        self.assertEqual(choice.token_ids, alone["ids"])
        self.assertEqual(choice.message.content, alone["text"])
        p = subprocess.run([LMLAB, "generate", "--model", TINY_QWEN2, "--chat", "--prompt", messages[0]["content"],
                            "--max-new-tokens", "10", "--json"], capture_output=True, text=True, timeout=120)
        self.assertEqual(json.loads(p.stdout)["prompt_ids"], choice.prompt_token_ids)  # encode_chat's ChatML turn
        parts = list(client.chat.completions.create(model="tiny-qwen2", messages=messages, max_tokens=10,
                                                    temperature=0, stream=True))
        self.assertEqual(parts[0].choices[0].delta.role, "assistant")
        self.assertEqual("".join(p.choices[0].delta.content or "" for p in parts), alone["text"])
        with self.assertRaises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny-qwen2", messages=messages + [{"role": "tool", "content": "x"}])
        self.assertEqual(e.exception.body["param"], "messages[1].role")


@unittest.skipUnless(has_tokenizer_json(TINY_QWEN2), "tiny-qwen2 has no tokenizer.json (../shared absent at export)")
class Chat(unittest.TestCase):
    """Conversations rendered as Hugging Face's apply_chat_template renders them with the model's own
    chat template (tiny-qwen2's tokenizer_config.json, Qwen's): the reference ids come from transformers."""

    CONVERSATIONS = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi 123456 h\u00e9llo \u4f60\u597d"}],
        [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
         {"role": "assistant", "content": "Bonjour !"}, {"role": "user", "content": "How are you?", "name": "ann"}],
        [{"role": "user", "content": "\n\nleading newlines and trailing spaces  "},
         {"role": "assistant", "content": " a space first\n"}, {"role": "system", "content": "a late system turn"},
         {"role": "user", "content": ""}],
        [{"role": "system", "content": "only a system message"}],
    ]

    @classmethod
    def setUpClass(cls):
        from transformers import AutoTokenizer
        cls.hf = AutoTokenizer.from_pretrained(TINY_QWEN2)
        cls.qwen = shared_server(TINY_QWEN2)

    def test_the_prompt_is_hugging_faces_chat_template(self):
        for messages in self.CONVERSATIONS:
            with self.subTest(messages=messages):
                expected = self.hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                status, body = post(self.qwen, "/v1/chat/completions", {"messages": messages, "max_tokens": 1,
                                                                         "temperature": 0, "return_token_ids": True})
                self.assertEqual(status, 200, body)
                self.assertEqual(body["choices"][0]["prompt_token_ids"], expected)
                self.assertEqual(body["usage"]["prompt_tokens"], len(expected))

    def test_what_the_template_does_otherwise_is_refused_by_name(self):
        user = {"role": "user", "content": "Hi"}
        for messages, param, code, part in (
                ([], "messages", "invalid_value", "no messages"),
                ([user, {"role": "tool", "content": "42"}], "messages[1].role", "unsupported_value", "no tool calling"),
                ([{"role": "developer", "content": "x"}, user], "messages[0].role", "unsupported_value", "'developer'"),
                ([user, {"role": "assistant", "content": "Hel"}], "messages[1].role", "unsupported_value", "continuing"),
                ([user, {"role": "assistant", "content": "<think>x</think>y"}, user], "messages[1].content",
                 "unsupported_value", "</think>"),
                ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "messages[0].content", "invalid_type",
                 "content parts"),
                ([{"role": "user"}], "messages[0].content", "invalid_type", "a string")):
            with self.subTest(messages=messages):
                status, body = post(self.qwen, "/v1/chat/completions", {"messages": messages})
                self.assertEqual(status, 400, body)
                self.assertEqual((body["error"]["param"], body["error"]["code"]), (param, code))
                self.assertIn(part, body["error"]["message"])


class EveryModel(unittest.TestCase):
    """A greedy and a seeded completion of each test model over HTTP, against the request alone."""

    def check(self, model, prompt):
        server = shared_server(model)
        for fields in ({"temperature": 0}, {"temperature": 0.8, "top_p": 0.9, "seed": 11}):
            status, body = post(server, "/v1/completions", {"prompt": prompt, "max_tokens": 16,
                                                            "return_token_ids": True, **fields})
            self.assertEqual(status, 200, body)
            c = body["choices"][0]
            alone = generate_alone(LMLAB, model, c["prompt_token_ids"], 16, fields["temperature"],
                                   0, fields.get("top_p", 1.0), fields.get("seed", 42))
            self.assertEqual(c["token_ids"], alone["ids"])
            self.assertEqual(c["text"], alone["text"])

    def test_tiny_llama(self):
        self.check(TINY_LLAMA, "In the beginning")

    @unittest.skipUnless(os.path.exists(STORIES), "needs ../shared/models/stories260K")
    def test_stories260k(self):
        self.check(STORIES, "Once upon a time")

    @unittest.skipUnless(has_tokenizer_json(TINY_GPT2), "tiny-gpt2 has no tokenizer.json (../shared absent at export)")
    def test_tiny_gpt2(self):
        self.check(TINY_GPT2, "Hello, my name is")

    @unittest.skipUnless(has_tokenizer_json(TINY_QWEN2), "tiny-qwen2 has no tokenizer.json (../shared absent at export)")
    def test_tiny_qwen2(self):
        self.check(TINY_QWEN2, "The capital of France is")


def stream_in_thread(url, request, out):
    """POSTs a streamed request; appends (status, events) to out when it ends."""
    def run():
        status, text = curl(url + "/v1/completions", json.dumps(request), timeout=600)  # (ThreadSanitizer: ~3 tokens/s)
        out.append((status, sse_events(text) if status == 200 else json.loads(text)))
    t = threading.Thread(target=run)
    t.start()
    return t


class Load(unittest.TestCase):
    def test_past_the_queue_the_answer_is_429_at_once(self):
        with Server(LMLAB, TINY_LLAMA, "--max-running", 1, "--queue", 1) as server:
            results = []
            threads = [stream_in_thread(server.url, {"prompt": [1], "max_tokens": 100, "temperature": 0, "stream": True},
                                        results) for _ in range(6)]
            for t in threads:
                t.join()
            refused = [body for status, body in results if status == 429]
            served = [events for status, events in results if status == 200]
            self.assertEqual(len(refused) + len(served), 6)
            self.assertGreaterEqual(len(refused), 1)
            self.assertGreaterEqual(len(served), 2)  # one running, one waiting
            self.assertEqual(refused[0]["error"]["code"], "queue_full")
            for events in served:
                self.assertEqual(events[-1], "[DONE]")
            m = wait_idle(server)
            self.assertEqual(m['lmlab_requests_total{outcome="overloaded"}'], len(refused))
            self.assertEqual(m['lmlab_requests_total{outcome="completed"}'], len(served))
            self.assertEqual(server.stop(), 0)


class StartUp(unittest.TestCase):
    def run_lmlab(self, *args):
        p = subprocess.run([LMLAB, "serve", *map(str, args)], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stderr

    def test_refusals_name_the_option(self):
        rc, err = self.run_lmlab("--plain", "--port", 0)
        self.assertEqual(rc, 2)
        self.assertIn("--plain", err)
        rc, err = self.run_lmlab("--port", llama.port)  # taken by the module's server
        self.assertEqual(rc, 2)
        self.assertIn(f"--port {llama.port}: cannot listen there", err)
        rc, err = self.run_lmlab("--port", 0, "--kv-pages", 1 << 24)
        self.assertEqual(rc, 2)
        self.assertIn("lower --kv-pages", err)
        rc, err = self.run_lmlab("--port", 70000)
        self.assertEqual(rc, 105)
        self.assertIn("--port", err)


class Shutdown(unittest.TestCase):
    def test_sigterm_finishes_the_requests_in_flight_and_exits_0(self):
        with Server(LMLAB, TINY_LLAMA, "--max-running", 2, "--shutdown-timeout", 300) as server:  # (slow under ASan)
            results = []
            threads = [stream_in_thread(server.url, {"prompt": [1, 1046], "max_tokens": 150, "temperature": 0,
                                                     "stream": True, "return_token_ids": True}, results)
                       for _ in range(2)]
            self.assertIsNotNone(self.first_token(server, 2))
            open_conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # a keep-alive connection
            open_conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(read_response(open_conn)[0], 200)
            server.proc.send_signal(signal.SIGTERM)
            self.assertTrue(server.wait_for_line("no new connections"))
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", server.port), timeout=5)
            # on the connection already open: /health says so, a new request is refused
            open_conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(read_response(open_conn), (503, b'{"status":"shutting down"}'))
            body = json.dumps({"prompt": [1], "max_tokens": 2}).encode()
            open_conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            status, text = read_response(open_conn)
            self.assertEqual((status, json.loads(text)["error"]["code"]), (503, "shutting_down"))
            open_conn.close()
            for t in threads:
                t.join()
            self.assertEqual(server.stop(), 0, server.stderr())
            for status, events in results:
                self.assertEqual(status, 200)
                self.assertEqual(events[-1], "[DONE]")
                self.assertEqual(events[-2]["choices"][0]["finish_reason"], "length")  # finished, not cut
                self.assertEqual(len([e for e in events[:-1] if e["choices"][0].get("token_ids")]), 150)

    def test_past_the_deadline_the_rest_is_cancelled(self):
        with Server(LMLAB, TINY_LLAMA, "--max-running", 1, "--shutdown-timeout", 0.2) as server:
            results = []
            threads = [stream_in_thread(server.url, {"prompt": [1], "max_tokens": 250, "temperature": 0, "stream": True},
                                        results) for _ in range(3)]
            self.assertIsNotNone(self.first_token(server, 3))
            server.proc.send_signal(signal.SIGINT)
            for t in threads:
                t.join()
            self.assertEqual(server.stop(), 0, server.stderr())
            self.assertEqual(len(results), 3)
            ended = []
            for status, events in results:
                self.assertEqual(status, 200)
                self.assertEqual(events[-1], "[DONE]")  # every stream ends properly, cut or not
                ended.append(events[-2].get("error", {}).get("code") or events[-2]["choices"][0]["finish_reason"])
            self.assertIn("shutting_down", ended, server.stderr())
            self.assertIn("cancelled at the deadline", server.stderr())

    @staticmethod
    def first_token(server, n, timeout=30):
        """/metrics once all n requests reached the scheduler and one has a token (None if never)."""
        end = time.time() + timeout
        while time.time() < end:
            m = metrics(server)
            if m["lmlab_generated_tokens_total"] > 0 and m["lmlab_requests_running"] + m["lmlab_requests_waiting"] == n:
                return m
            time.sleep(0.005)
        return None


if __name__ == "__main__":
    if LMLAB is None:
        sys.exit(__doc__)
    unittest.main(argv=[sys.argv[0], "-v"])
