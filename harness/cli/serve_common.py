"""What lmlab serve's tests share (serve_test.py, serve_load_test.py): a server on a free loopback
port that the test owns, its /metrics read as numbers, server-sent events read as JSON, and the
request alone as `lmlab generate --json` runs it (the invariant's other side).

Every address here is 127.0.0.1: the tests send no traffic anywhere else.
"""
import json
import re
import signal
import subprocess
import threading
import time


class Server:
    """`lmlab serve --port 0 --check-invariants ...` in a child process: started on any free port
    (the one it took is read from its first stderr line), stopped with SIGTERM, killed if it
    outlives the test."""

    def __init__(self, lmlab, model, *args, timeout=120):
        self.cmd = [lmlab, "serve", "--model", model, "--port", "0", "--check-invariants", *map(str, args)]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._ready = threading.Event()
        self.port = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.port is None:
            self.kill()
            raise RuntimeError(f"lmlab serve did not start: {' '.join(self.cmd)}\n{self.stderr()}")
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r" on http://127\.0\.0\.1:(\d+) ", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()  # (it exited before listening)

    def stderr(self):
        return "".join(self.lines)

    def wait_for_line(self, text, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.02)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig; returns the exit code (killed and -9 when it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self._reader.join(5)
        self.proc.stderr.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        if not self.proc.stderr.closed:
            self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def parse_metrics(text):
    """Prometheus text -> {name or name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sse_events(text):
    """The `data:` payloads of a server-sent event stream, JSON-decoded ("[DONE]" kept as is)."""
    events = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def generate_alone(lmlab, model, prompt_ids, max_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=42):
    """The request alone: `lmlab generate --json` with the same prompt ids and sampling. -> its JSON."""
    p = subprocess.run([lmlab, "generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt_ids)),
                        "--max-new-tokens", str(max_tokens), "--temperature", str(temperature), "--top-k", str(top_k),
                        "--top-p", str(top_p), "--seed", str(seed), "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"lmlab generate failed: {p.stderr}")
    return json.loads(p.stdout)

