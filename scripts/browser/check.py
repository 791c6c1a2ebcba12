#!/usr/bin/env python3
"""Open an lmlab page (report.html, diff.html, trace.html) in headless Chromium and check it.

Chromium runs with the flags that keep it off the network (a dead proxy, every host name
unresolvable, no background services), on a fresh profile, once: --dump-dom (the DOM after the
page's scripts ran) and --screenshot together. Checks:

  - the page's self-check ran (<pre id="selfcheck">, written by the page's script on load) and
    recorded no error: no script error, no console.error, no request blocked by the page's policy;
  - Chromium logged no console message at all (the pages print none);
  - every <svg class="plot"> of the file was measured, each with a non-zero width and height;
  - with --report: the summary counts, and every stage's status and worst max abs in the stage
    table, equal report.json's; every stage that did not pass is listed under Problems; every
    failing output with a heatmap in report.json has that heatmap drawn;
  - with --diff OLD NEW: every row of the diff table holds the two reports' statuses and errors;
  - --expect-status ID=STATUS, --expect-not-run, --expect-plots N, --expect-steps N: what the
    caller knows the page must show (e.g. the deliberately broken build's failing stage);
  - the screenshot is a PNG of the window's width that is not blank.

Standard library only. Exit 0: passed; 1: a check failed; 77: no Chromium (ctest skips).
"""
import argparse
import html.parser
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

WINDOW = (1280, 2000)
OFFLINE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
]


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


class Dom(html.parser.HTMLParser):
    """What the checks read from the dumped DOM: elements by id or data- attribute, and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []          # open elements: (tag, attrs, text parts)
        self.elements = []       # closed elements: (tag, attrs, text)

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            self.elements.append((tag, dict(attrs), ""))
            return
        self.stack.append((tag, dict(attrs), []))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), ""))

    def handle_endtag(self, tag):
        # close up to the matching tag (the DOM Chromium dumps is well formed)
        while self.stack:
            t, attrs, parts = self.stack.pop()
            text = "".join(parts)
            self.elements.append((t, attrs, text))
            if self.stack:
                self.stack[-1][2].append(text)
            if t == tag:
                break

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][2].append(data)

    def find(self, tag=None, **attrs):
        out = []
        for t, a, text in self.elements:
            if tag and t != tag:
                continue
            if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                out.append((t, a, text))
        return out


def run_chromium(chromium, url, extra, profile):
    cmd = [chromium] + OFFLINE_FLAGS + [f"--user-data-dir={profile}"] + extra + [url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def png_info(path):
    """(width, height, distinct byte values in the image data): a blank page has very few."""
    data = open(path, "rb").read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def report_value(v):
    """A number of report.json as a float ("nan"/"inf" strings included)."""
    return float(v) if isinstance(v, str) else float(v)


def same_number(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_report(dom, report):
    stages = report["stages"]
    # the summary counts
    for key, want in report["summary"].items():
        spans = dom.find("span", data_key=key)
        check(len(spans) == 1, f"summary count '{key}' not in the page")
        check(spans[0][2].strip() == str(want), f"summary '{key}': page shows {spans[0][2]!r}, report.json has {want}")
    # the stage table: one row per stage, in order, with the status and the worst max abs
    rows = [(a, text) for t, a, text in dom.elements if t == "tr" and "data-max-abs" in a]
    check(len(rows) == len(stages), f"the stage table has {len(rows)} rows, report.json {len(stages)} stages")
    for (attrs, _), s in zip(rows, stages):
        check(attrs["data-stage"] == s["id"], f"table row {attrs['data-stage']} where report.json has {s['id']}")
        check(attrs["data-status"] == s["status"], f"{s['id']}: page says {attrs['data-status']}, report.json {s['status']}")
        page_abs = report_value(json.loads(attrs["data-max-abs"]))
        check(same_number(page_abs, report_value(s["worst"]["max_abs"])),
              f"{s['id']}: worst max abs {page_abs} in the page, {s['worst']['max_abs']} in report.json")
    cells = [text for t, a, text in dom.elements if t == "td" and a.get("class") == "num"]
    shown = " ".join(cells)
    for s in stages:
        v = s["worst"]["max_abs"]
        text = v if isinstance(v, str) else format(v, ".3g")
        check(text in shown, f"{s['id']}: worst max abs {text} is not shown in the table")
    # every stage that did not pass is listed under Problems
    for s in stages:
        if s["status"] in ("fail", "error"):
            check(dom.find("div", data_stage=s["id"], data_status=s["status"]), f"{s['id']} ({s['status']}) not under Problems")
        elif s["status"] in ("not_run", "skipped"):
            check(dom.find("li", data_stage=s["id"], data_status=s["status"]), f"{s['id']} ({s['status']}) not listed")
    # the heatmaps of failing outputs and the generation plots are drawn
    wanted = []
    for s in stages:
        for o in s["outputs"]:
            if "heatmap" in o:
                wanted.append(f"{s['id']}.heatmap.{o['case']}.{o['output']}")
        if "series" in s and s["status"] in ("pass", "fail"):
            wanted.append(f"{s['id']}.gaps")
    return wanted


def check_diff(dom, old, new):
    old_by_id = {s["id"]: s for s in old["stages"]}
    rows = [a for t, a, text in dom.elements if t == "tr" and "data-old-status" in a]
    check(len(rows) == len(new["stages"]), f"the diff table has {len(rows)} rows, the new report {len(new['stages'])} stages")
    for attrs, s in zip(rows, new["stages"]):
        o = old_by_id.get(s["id"])
        check(attrs["data-stage"] == s["id"], f"diff row {attrs['data-stage']} where the new report has {s['id']}")
        check(attrs["data-new-status"] == s["status"], f"{s['id']}: new status {attrs['data-new-status']} vs {s['status']}")
        check(attrs["data-old-status"] == (o["status"] if o else "-"), f"{s['id']}: old status {attrs['data-old-status']}")
        check(same_number(report_value(json.loads(attrs["data-new-max-abs"])), report_value(s["worst"]["max_abs"])),
              f"{s['id']}: new max abs differs from the report")
        if o:
            check(same_number(report_value(json.loads(attrs["data-old-max-abs"])), report_value(o["worst"]["max_abs"])),
                  f"{s['id']}: old max abs differs from the report")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--page", required=True, help="the HTML file to open")
    ap.add_argument("--report", help="report.json the page was drawn from (report.html)")
    ap.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"), help="the two reports of a diff.html")
    ap.add_argument("--expect-status", action="append", default=[], metavar="ID=STATUS")
    ap.add_argument("--expect-not-run", action="store_true", help="some stage must be listed as not run")
    ap.add_argument("--expect-plots", type=int, help="exactly this many plots")
    ap.add_argument("--expect-steps", type=int, help="exactly this many rows of trace.html's top-5 table")
    ap.add_argument("--screenshot", help="where to write the screenshot (default: beside the page, .png)")
    ap.add_argument("--chromium", default=os.environ.get("LMLAB_CHROMIUM", ""), help="the browser (default: chromium on PATH)")
    args = ap.parse_args()

    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not os.path.exists(chromium):
        print("SKIPPED: chromium not found; install Debian's chromium (bash scripts/install_deps.sh) "
              "or point LMLAB_CHROMIUM at a Chromium binary")
        return 77
    page = os.path.abspath(args.page)
    if not os.path.exists(page):
        print(f"browser_check: {page} does not exist (the command that writes it failed?)")
        return 1
    screenshot = os.path.abspath(args.screenshot or os.path.splitext(page)[0] + ".png")
    url = "file://" + page
    try:
        if os.path.exists(screenshot):
            os.remove(screenshot)
        with tempfile.TemporaryDirectory(prefix="lmlab_chromium_") as profile:
            rc, dom_text, log = run_chromium(chromium, url, ["--dump-dom", f"--screenshot={screenshot}",
                                                             f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"], profile)
        check(rc == 0 and "</html>" in dom_text, f"chromium --dump-dom failed (exit {rc}):\n{log[-2000:]}")
        check(os.path.exists(screenshot), f"chromium wrote no screenshot:\n{log[-2000:]}")
        console = [line for line in log.splitlines() if ":CONSOLE" in line]
        check(not console, "console messages:\n" + "\n".join(console))

        dom = Dom()
        dom.feed(dom_text)
        selfcheck = dom.find("pre", id="selfcheck")
        check(selfcheck and selfcheck[0][2].strip(), "the page's self-check did not run (a script error before load?)")
        result = json.loads(selfcheck[0][2])
        check(not result["errors"], "errors in the page:\n" + "\n".join(result["errors"]))
        plots = result["plots"]
        in_file = open(page, encoding="utf-8").read().count('<svg class="plot')
        check(plots and len(plots) == in_file, f"{len(plots)} plots measured, the file has {in_file}")
        empty = [p["id"] for p in plots if not (p["width"] > 0 and p["height"] > 0)]
        check(not empty, "plots rendered with zero size: " + ", ".join(empty))
        ids = {p["id"] for p in plots}
        check(len(ids) == len(plots), "two plots share an id")
        if args.expect_plots is not None:
            check(len(plots) == args.expect_plots, f"{len(plots)} plots, expected {args.expect_plots}")

        wanted, summary = [], ""
        if args.report:
            report = json.load(open(args.report))
            wanted = check_report(dom, report)
            summary = f"; summary counts and {len(report['stages'])} stages' status and worst error equal {args.report}'s"
            for spec in args.expect_status:
                sid, status = spec.split("=")
                st = [s for s in report["stages"] if s["id"] == sid]
                check(st and st[0]["status"] == status, f"report.json: {sid} is not {status}")
                check(dom.find("tr", data_stage=sid, data_status=status), f"the page does not show {sid} as {status}")
                if status == "fail":
                    heatmaps = [w for w in wanted if w.startswith(sid + ".heatmap.")]
                    check(heatmaps, f"{sid} failed but has no heatmap")
            if args.expect_not_run:
                check(dom.find("li", data_status="not_run"), "no stage is listed as not run")
        if args.diff:
            check_diff(dom, json.load(open(args.diff[0])), json.load(open(args.diff[1])))
            summary = f"; the diff table equals {args.diff[0]} and {args.diff[1]}"
        missing = [w for w in wanted if w not in ids]
        check(not missing, "plots missing from the page: " + ", ".join(missing))
        if args.expect_steps is not None:
            steps = [a for t, a, _ in dom.elements if t == "tr" and "data-step" in a]
            check(len(steps) == args.expect_steps, f"{len(steps)} steps in the top-5 table, expected {args.expect_steps}")

        width, height, distinct = png_info(screenshot)
        check(width == WINDOW[0], f"screenshot {width} px wide, expected {WINDOW[0]}")
        check(distinct > 16, f"the screenshot looks blank ({distinct} distinct byte values)")
    except Failed as e:
        print(f"browser_check: FAIL {page}: {e}")
        return 1
    smallest = min(plots, key=lambda p: p["width"] * p["height"])
    print(f"browser_check: PASS {page}: no errors, no console messages; {len(plots)} plots rendered "
          f"(smallest {smallest['width']:.0f}x{smallest['height']:.0f} px){summary}; screenshot {screenshot} "
          f"({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
