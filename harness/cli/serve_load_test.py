#!/usr/bin/env python3
"""A bounded load test of lmlab serve (ctest serve.load runs the small version): N requests from C
concurrent clients against a server this script starts on a free loopback port, with mixed prompt
lengths (text and token ids), max_tokens, greedy and seeded sampling, stop strings, streaming and
not, some clients that disconnect early and some malformed requests. Then it checks:

  - nothing lost or answered twice: every request has exactly one outcome, every stream exactly
    one finish and one [DONE], and the server's outcome counters agree with the clients';
  - the invariant over the network: every completed response's token ids are exactly the request's
    run alone (`lmlab serve-batch --sequential`: Session::generate, one request after another), a
    prefix of it where a stop string cut the answer;
  - /metrics ends with nothing running or waiting and every KV page free;

and reports throughput and p50/p99 time to first token and inter-token latency (streamed requests,
measured by the clients), beside `lmlab serve-batch` on the same requests.

    .venv/bin/python harness/cli/serve_load_test.py LMLAB MODEL [--requests 200] [--clients 32]
        [--seed 1] [--server-args "--max-running 8"] [--json out.json]

Traffic goes to 127.0.0.1 only; the run stops by itself (--timeout seconds in all). Exit 0 when every
check passed, 1 when one failed.
"""
import argparse
import asyncio
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_common import Server, parse_metrics  # noqa: E402

WORDS = ("once upon a time there was a little girl named lily she loved to play outside in the park one day "
         "she saw a big red ball and wanted it so much that she ran home to tell her mom").split()

# malformed requests: (body, the param the error must name)
MALFORMED = [
    ('{"prompt": "a", "max_tokens": ', None),
    ('{"prompt": "a", "max_tokenz": 4}', "max_tokenz"),
    ('{"prompt": "a", "temperature": "warm"}', "temperature"),
    ('{"prompt": "a", "max_tokens": 1000000}', "max_tokens"),
    ('{"prompt": "a", "n": 3}', "n"),
    ('{"prompt": 7}', "prompt"),
]


def plan(n, seed, context):
    """The requests, deterministic for a seed: [{"i", "kind", "body", ...}]."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        kind = "malformed" if r < 0.1 else "disconnect" if r < 0.2 else "ok"
        if kind == "malformed":
            body, param = MALFORMED[i % len(MALFORMED)]
            out.append({"i": i, "kind": kind, "raw": body, "param": param, "stream": False})
            continue
        if rng.random() < 0.7:
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40)))
        else:
            prompt = [1] + [rng.randrange(3, 500) for _ in range(rng.randint(0, 60))]
        body = {"prompt": prompt, "max_tokens": min(rng.randint(1, 64), context - 70), "return_token_ids": True}
        if rng.random() < 0.5:
            body["temperature"] = 0
        else:
            body.update({"temperature": 0.8, "seed": 1000 + i})
            body.update({"top_p": 0.9} if rng.random() < 0.5 else {"top_k": 40})
        if rng.random() < 0.15:
            body["stop"] = [rng.choice([".", " the", "\n", "ing"])]
        stream = kind == "disconnect" or rng.random() < 0.5
        body["stream"] = stream
        if kind == "disconnect":
            body["max_tokens"] = min(64, context - 70)
        out.append({"i": i, "kind": kind, "body": body, "stream": stream, "read_events": rng.randint(1, 3)})
    return out


async def one(client, url, req):
    """Sends one planned request; returns what happened to it."""
    res = {"i": req["i"], "kind": req["kind"], "t0": time.perf_counter()}
    content = req["raw"] if "raw" in req else json.dumps(req["body"])
    headers = {"Content-Type": "application/json"}
    if not req["stream"]:
        r = await client.post(url + "/v1/completions", content=content, headers=headers)
        res["t_end"] = time.perf_counter()
        res["status"] = r.status_code
        res["json"] = r.json()
        return res
    res["events"], res["token_times"] = [], []
    async with client.stream("POST", url + "/v1/completions", content=content, headers=headers) as r:
        res["status"] = r.status_code
        if r.status_code != 200:
            res["json"] = json.loads(await r.aread())
            return res
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            event = data if data == "[DONE]" else json.loads(data)
            res["events"].append(event)
            if event != "[DONE]" and event["choices"] and event["choices"][0].get("token_ids"):
                res["token_times"].append(time.perf_counter())
            if req["kind"] == "disconnect" and len(res["token_times"]) >= req["read_events"]:
                res["disconnected"] = True
                break  # leaving the block closes the connection mid-stream
    res["t_end"] = time.perf_counter()
    return res


async def run_clients(url, requests, clients, timeout):
    queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    results = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client):
        while not queue.empty():
            req = queue.get_nowait()
            try:
                results.append(await one(client, url, req))
            except httpx.HTTPError as e:
                results.append({"i": req["i"], "kind": req["kind"], "transport_error": repr(e)})

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(clients))), timeout)
    return results


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def serve_batch(lmlab, model, reqs, extra, work):
    """serve-batch on the same requests (prompt ids as the server encoded them): {id: tokens}, seconds, new tokens."""
    path = os.path.join(work, "requests.jsonl")
    with open(path, "w") as f:
        for r in reqs:
            f.write(json.dumps(r) + "\n")
    out = os.path.join(work, "out.jsonl")
    p = subprocess.run([lmlab, "serve-batch", "--model", model, "--requests", path, "--out", out, "--quiet", *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"serve-batch failed: {p.stderr}")
    tokens = {}
    with open(out) as f:
        for line in f:
            j = json.loads(line)
            tokens[j["id"]] = j["tokens"]
    summary = [line for line in p.stdout.splitlines() if line.startswith(("batched:", "sequential:"))][0]
    seconds = float(summary.split(" s: ")[0].rsplit(" ", 1)[1])
    return tokens, seconds, sum(len(t) for t in tokens.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lmlab")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server-args", default="--max-running 8 --chunk 32")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args()

    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    server_args = shlex.split(a.server_args)
    with Server(a.lmlab, a.model, *server_args) as server:
        with httpx.Client() as c:
            context = c.get(server.url + "/v1/models").json()["data"][0]["max_model_len"]
        requests = plan(a.requests, a.seed, context)
        t0 = time.perf_counter()
        results = asyncio.run(run_clients(server.url, requests, a.clients, a.timeout))
        wall = time.perf_counter() - t0
        # the server lets go of the disconnected requests at its next write: give it a moment
        end = time.time() + 10
        while True:
            with httpx.Client() as c:
                m = parse_metrics(c.get(server.url + "/metrics").text)
            settled = m["lmlab_requests_running"] == 0 and m["lmlab_requests_waiting"] == 0
            counted = sum(v for k, v in m.items() if k.startswith("lmlab_requests_total"))
            if (settled and counted >= len(requests)) or time.time() > end:
                break
            time.sleep(0.05)
        rc = server.stop()
        check(rc == 0, f"the server exited {rc} after SIGTERM")

    # ---- nothing lost, nothing twice ----
    by_i = {}
    for r in results:
        check(r["i"] not in by_i, f"request {r['i']} has two outcomes")
        by_i[r["i"]] = r
    check(len(by_i) == len(requests), f"{len(requests) - len(by_i)} requests have no outcome")
    for r in results:
        check("transport_error" not in r, f"request {r['i']}: {r.get('transport_error')}")
    kinds = {"completed": 0, "disconnected": 0, "rejected": 0}
    completed = []
    for req in requests:
        r = by_i.get(req["i"])
        if r is None or "transport_error" in r:
            continue
        if req["kind"] == "malformed":
            kinds["rejected"] += 1
            check(r["status"] == 400 and r["json"]["error"]["param"] == req["param"],
                  f"malformed request {req['i']}: {r['status']} {r.get('json')}")
            continue
        check(r["status"] == 200, f"request {req['i']}: HTTP {r['status']} {r.get('json')}")
        if r["status"] != 200:
            continue
        if r.get("disconnected"):
            kinds["disconnected"] += 1
            continue
        if req["stream"]:
            events = r["events"]
            check(events and events[-1] == "[DONE]" and events.count("[DONE]") == 1, f"stream {req['i']}: no single [DONE]")
            chunks = [e for e in events if e != "[DONE]"]
            finishes = [e["choices"][0]["finish_reason"] for e in chunks if e["choices"][0]["finish_reason"]]
            check(len(finishes) == 1, f"stream {req['i']}: {len(finishes)} finishes")
            ids = [t for e in chunks for t in e["choices"][0].get("token_ids", [])]
            r["token_ids"], r["finish"] = ids, finishes[-1] if finishes else None
            r["prompt_ids"] = chunks[-1]["choices"][0].get("prompt_token_ids")
            r["text"] = "".join(e["choices"][0]["text"] for e in chunks)
        else:
            choice = r["json"]["choices"][0]
            r["token_ids"], r["finish"], r["text"] = choice["token_ids"], choice["finish_reason"], choice["text"]
            r["prompt_ids"] = choice["prompt_token_ids"]
        completed.append((req, r))
    kinds["completed"] = len(completed)
    ok_or_gone = sum(1 for q in requests if q["kind"] != "malformed")
    check(m['lmlab_requests_total{outcome="rejected"}'] == kinds["rejected"], "the server's rejected count differs")
    check(m['lmlab_requests_total{outcome="completed"}'] + m['lmlab_requests_total{outcome="cancelled"}'] == ok_or_gone,
          "the server's completed + cancelled counts differ from the requests sent")
    check(m['lmlab_requests_total{outcome="completed"}'] >= kinds["completed"], "fewer completions counted than received")
    for outcome in ("failed", "overloaded", "shutdown"):
        check(m[f'lmlab_requests_total{{outcome="{outcome}"}}'] == 0, f"{outcome} requests")
    check(m["lmlab_requests_running"] == 0 and m["lmlab_requests_waiting"] == 0, "requests still running or waiting")
    check(m["lmlab_kv_pages_used"] == 0 and m["lmlab_kv_pages_free"] == m["lmlab_kv_pages_total"],
          f"{m['lmlab_kv_pages_used']:.0f} KV pages leaked")

    # ---- the invariant: each completed request's tokens are its run alone ----
    # (the prompt ids as the server encoded the text: the answer's prompt_token_ids)
    reqs = [{"id": str(req["i"]), "prompt_ids": r["prompt_ids"], "max_tokens": req["body"]["max_tokens"],
             "temperature": req["body"]["temperature"],
             **{k: req["body"][k] for k in ("seed", "top_p", "top_k") if k in req["body"]}} for req, r in completed]
    # serve-batch with the server's scheduler options (it has no --queue or --http-threads)
    batch_args, words = [], list(server_args)
    while words:
        w = words.pop(0)
        if w in ("--max-running", "--chunk", "--page-size", "--kv-pages"):
            batch_args += [w, words.pop(0)]
    with tempfile.TemporaryDirectory(prefix="lmlab-load-") as work:  # (removed at the end, whatever happens)
        alone, seq_seconds, seq_tokens = serve_batch(a.lmlab, a.model, reqs, ["--sequential"], work)
        batched, batch_seconds, batch_tokens = serve_batch(a.lmlab, a.model, reqs, batch_args, work)
    mismatched = 0
    for req, r in completed:
        ref = alone[str(req["i"])]
        check(batched[str(req["i"])] == ref, f"request {req['i']}: serve-batch differs from the request alone")
        ids = r["token_ids"]
        stop_string = bool(req["body"].get("stop")) and r["finish"] == "stop" and ids != ref
        good = ids == ref or (stop_string and ids == ref[:len(ids)])
        if not good:
            mismatched += 1
            check(False, f"request {req['i']}: tokens {ids} differ from the request alone {ref}")

    # ---- the numbers ----
    ttft = [(r["token_times"][0] - r["t0"]) * 1000 for _, r in completed if r.get("token_times")]
    itl = [(b - a_) * 1000 for _, r in completed for a_, b in zip(r.get("token_times", []), r.get("token_times", [])[1:])]
    new_tokens = sum(len(r["token_ids"]) for _, r in completed)
    report = {
        "requests": len(requests), "clients": a.clients, "server_args": a.server_args, "seconds": round(wall, 3),
        "completed": kinds["completed"], "disconnected": kinds["disconnected"], "rejected": kinds["rejected"],
        "completion_tokens": new_tokens, "tokens_per_second": round(new_tokens / wall, 1),
        # every token the server generated (the disconnected requests' and those past a stop string too)
        "server_generated_tokens": int(m["lmlab_generated_tokens_total"]),
        "server_tokens_per_second": round(m["lmlab_generated_tokens_total"] / wall, 1),
        "ttft_ms_p50": round(percentile(ttft, 50), 1), "ttft_ms_p99": round(percentile(ttft, 99), 1),
        "itl_ms_p50": round(percentile(itl, 50), 2), "itl_ms_p99": round(percentile(itl, 99), 2),
        "streamed_requests_timed": len(ttft), "tokens_mismatched": mismatched,
        "pages_leaked": int(m["lmlab_kv_pages_used"]),
        "server_outcomes": {k.split('"')[1]: int(v) for k, v in m.items() if k.startswith("lmlab_requests_total")},
        "serve_batch_tokens_per_second": round(batch_tokens / batch_seconds, 1),
        "serve_batch_sequential_tokens_per_second": round(seq_tokens / seq_seconds, 1),
        "serve_batch_new_tokens": batch_tokens,
    }
    print(json.dumps(report, indent=1))
    print(f"lmlab serve: {len(requests)} requests from {a.clients} clients in {wall:.2f} s: {new_tokens} tokens, "
          f"{new_tokens / wall:.1f} tok/s; time to first token p50 {report['ttft_ms_p50']} ms, p99 "
          f"{report['ttft_ms_p99']} ms; inter-token p50 {report['itl_ms_p50']} ms, p99 {report['itl_ms_p99']} ms; "
          f"serve-batch on the same {len(reqs)} requests: {report['serve_batch_tokens_per_second']} tok/s batched, "
          f"{report['serve_batch_sequential_tokens_per_second']} tok/s one after another")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    for f in failures:
        print("FAILED:", f)
    print(f"{len(failures)} checks failed" if failures else "every check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
