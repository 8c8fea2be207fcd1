#!/usr/bin/env python3
"""Drives the dashboard in a real headless browser (Debian's chromium through
chromedriver and selenium) and asserts what each page shows. Run by
DashboardBrowserTests (Tests/FerretCoreTests), which starts the agent and the
fixtures; exits non-zero with the reason on the first failed check.

Modes:
  fixtures   the agent monitors the leaking fixture (truthsrv, /leak under load,
             http_tracer) and the CPU-burning fixture (burner -mode split):
             overview, process page and its goroutine chart against the JSON
             API, hotspots naming the hot function, the HTTP page's trace
             waterfall (a server span with a nested client span), the
             goroutines page (the leak's groups marked, a group's stack on a
             click, reached from the overview's alert), the events page's
             leak event.
  load       the dashboard holds 100 process groups: the overview lists them
             all and the overview and a process page render within a bound.

Every page is loaded in a 1280x800 window; the browser's console must have no
errors. Screenshots go to --out (test artifacts, not committed). The pages
re-render every 2 s, so what is read outside a retrying wait is read in one
script (no element handle kept across a redraw).
"""
import argparse
import gzip
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print("ok:", what, flush=True)


def wait_for(fn, what, timeout=60.0, every=0.25):
    """Polls fn until it returns a truthy value; fails with `what` on timeout."""
    deadline = time.time() + timeout
    last_error = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the page may be re-rendering
            last_error = e
        time.sleep(every)
    raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class Dashboard:
    def __init__(self, url, out):
        self.url = url.rstrip("/")
        self.out = out
        os.makedirs(out, exist_ok=True)
        for f in os.listdir(out):  # the screenshots of an earlier run
            if f.endswith(".png"):
                os.remove(os.path.join(out, f))
        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,800", "--hide-scrollbars"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.driver.set_window_size(1280, 800)
        self.console_errors = []

    def close(self):
        self.driver.quit()

    def api(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def raw(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.headers, r.read()

    def open(self, route):
        self.driver.get(self.url + "/#" + route)

    def find(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def shot(self, name):
        path = os.path.join(self.out, name + ".png")
        self.driver.save_screenshot(path)
        print("screenshot:", path, flush=True)

    def collect_console(self, page):
        for e in self.driver.get_log("browser"):
            if e.get("level") == "SEVERE":
                self.console_errors.append(f"{page}: {e.get('message')}")

    def assert_layout(self, page):
        """The page fits a 1280-wide window: nothing wider than the viewport."""
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        inner = self.driver.execute_script("return window.innerWidth")
        check(width <= inner, f"{page} fits the 1280x800 window (content {width} px wide, window {inner} px)")


def fixtures(d, a):
    groups = {a.leak_group: a.leak_version, a.burn_group: a.burn_version}

    # Overview: both groups, with their Go versions.
    d.open("/")
    def rows():
        found = {}
        for tr in d.find("#groups tr[data-group]"):
            found[tr.get_attribute("data-group")] = tr.find_element(By.CSS_SELECTOR, ".go-versions").text
        return found if all(g in found for g in groups) else None
    found = wait_for(rows, "the overview to list both groups")
    for g, v in groups.items():
        check(v in found[g], f"overview lists group {g} with Go version {v} (shows '{found[g]}')")
    d.assert_layout("overview")
    d.shot("overview")
    d.collect_console("overview")

    # Group page: its process, and a chart line per process.
    d.open(f"/group/{a.leak_group}")
    wait_for(lambda: d.find(f'#processes tr[data-pid="{a.leak_pid}"]'), "the group page to list the leaking process")
    n = wait_for(lambda: len(d.find('.chart[data-chart="goroutines"] svg path')), "the group's goroutine chart")
    check(n == 1, f"the group page charts goroutines with a line per process ({n})")
    d.assert_layout("group page")
    d.shot("group")
    d.collect_console("group page")

    # Process page: properties and the goroutine chart against the JSON API.
    d.open(f"/process/{a.leak_pid}")
    wait_for(lambda: d.find('#props dd[data-prop="Go version"]') and a.leak_version in d.find('#props dd[data-prop="Go version"]')[0].text,
             "the process page's properties")
    def last_point():
        p = d.driver.execute_script("""
            const el = document.querySelector('.chart[data-chart="goroutines"] .last[data-series="go.goroutine.count"]');
            return el && el.dataset.time ? [el.dataset.time, el.dataset.value, el.textContent] : null;""")
        return (int(p[0]), float(p[1]), p[2]) if p else None
    t, v, text = wait_for(last_point, "the goroutine chart's last value")
    pts = d.api(f"/api/series/points?name=go.goroutine.count&pid={a.leak_pid}&from={t}&to={t + 1}")["points"]
    check(len(pts) == 1 and pts[0][0] == t, f"the JSON API has the chart's last point (time {t}): {pts}")
    check(pts[0][4] == v and (text == str(int(v)) or v >= 1e4), f"the goroutine chart's last value {text} equals the JSON API's {pts[0][4]}")
    latest = [s for s in d.api(f"/api/series?pid={a.leak_pid}")["series"] if s["name"] == "go.goroutine.count"][0]
    check(latest["last_time"] - t <= 10_000, f"the chart is live: its last point is {latest['last_time'] - t} ms behind the API's newest")
    for chart in ("threads", "heap", "gc", "cpu", "rss"):
        n = wait_for(lambda: len(d.find(f'.chart[data-chart="{chart}"] svg path')), f"the {chart} chart to draw a line")
        check(n >= 1, f"the {chart} chart draws {n} line(s)")
    d.assert_layout("process page")
    d.shot("process")
    d.collect_console("process page")

    # The burner runs in a Kubernetes-style container: its page names the
    # runtime, the short container id and the pod, as the JSON API has them.
    d.open(f"/process/{a.burn_pid}")
    def container_rows():
        dd = {e.get_attribute("data-prop"): e.text for e in d.find("#props dd")}
        return dd if "Container" in dd else None
    dd = wait_for(container_rows, "the burner's process page to show its container")
    ct = d.api(f"/api/process?pid={a.burn_pid}")["container"]
    check(ct.get("container.id") == a.burn_container, f"the JSON API has the burner's container.id ({ct})")
    check(a.burn_runtime in dd["Container"] and a.burn_container[:12] in dd["Container"],
          f"the Container row names {a.burn_runtime} and {a.burn_container[:12]} (shows '{dd['Container']}')")
    check(a.burn_pod in dd.get("Pod", ""), f"the Pod row shows the pod uid {a.burn_pod} (shows '{dd.get('Pod')}')")
    d.shot("process-container")
    d.collect_console("container process page")

    # Hotspots: the burner's hot function, the flame graph, the download.
    d.open(f"/hotspots/{a.burn_pid}")
    def top():
        names = [td.text for td in d.find("#top tbody td.fn")]
        return names if names else None
    names = wait_for(top, "the hotspots page's top functions", timeout=90)
    check(a.hot_function in names[:3], f"the hotspots page names {a.hot_function} among the top 3 by self samples: {names[:5]}")
    # Read in one script: the page redraws the flame graph when a new profile window arrives.
    flame = d.driver.execute_script("return [...document.querySelectorAll('#flame g[data-name]')].map(g => g.dataset.name)")
    check(a.hot_function in flame, f"the flame graph has a frame {a.hot_function} ({len(flame)} frames drawn)")
    href = d.find("#download")[0].get_attribute("href")
    headers, body = d.raw(href[len(d.url):])
    check(body[:2] == b"\x1f\x8b" and len(gzip.decompress(body)) > 0, f"the download link serves a gzipped profile ({len(body)} bytes)")
    d.assert_layout("hotspots")
    d.shot("hotspots")
    d.collect_console("hotspots")

    # HTTP: routes, recent traces; a trace's waterfall nests a client span under a server span.
    # (Tables are read in one script: the page re-renders them every 2 s.)
    d.open(f"/http/{a.leak_group}")
    def routes():
        return d.driver.execute_script(
            "return [...document.querySelectorAll('#routes tbody tr[data-route]')].map(tr => [tr.dataset.route, tr.cells[3].textContent])")
    leak_routes = wait_for(lambda: [r for r in routes() if "/leak" in r[0]], "the HTTP page's /leak route")
    check(True, f"the HTTP page lists the route {leak_routes[0][0]} at {leak_routes[0][1]}")
    def trace_link():
        rows = d.driver.execute_script(
            "return [...document.querySelectorAll('#recent-traces tbody tr[data-trace]')].map(tr => [tr.dataset.trace, tr.cells[0].textContent, tr.cells[4].textContent])")
        for trace, name, spans in rows:
            if "/leak" in name and int(spans) >= 2:
                return trace
        return None
    trace_id = wait_for(trace_link, "a /leak trace with at least 2 spans")
    d.assert_layout("HTTP page")
    d.shot("http")
    d.collect_console("http")
    # Click it, as a user would (the row may have scrolled out of the recent list since: then go by its address).
    clicked = d.driver.execute_script(
        "const a = document.querySelector(`#recent-traces tr[data-trace='${arguments[0]}'] a`); if (a) { a.click(); return true; } return false;", trace_id)
    if not clicked:
        d.open(f"/trace/{trace_id}")
    wait_for(lambda: d.driver.execute_script("return location.hash") == f"#/trace/{trace_id}", "the trace page")
    rows = wait_for(lambda: d.find("#waterfall .span-row"), "the trace's waterfall")
    spans = [(r.get_attribute("data-kind"), int(r.get_attribute("data-depth")), r.get_attribute("data-span"), r.get_attribute("data-parent"))
             for r in rows]
    servers = {s[2]: s for s in spans if s[0] == "server"}
    nested = [c for c in spans if c[0] == "client" and c[3] in servers and c[1] > servers[c[3]][1]]
    check(nested, f"the waterfall nests a client span under a server span: {spans}")
    d.assert_layout("trace waterfall")
    d.shot("trace")
    d.collect_console("trace")

    # Goroutines: the census's groups; the leak alert marks readLoop and
    # writeLoop (created by dialConn); a click shows a group's stack from the
    # goroutine profile; the overview's alert links here.
    d.open("/")
    # Found and clicked in one script: the overview re-renders every 2 s.
    click_link = """
        const tr = [...document.querySelectorAll('#groups tr[data-group]')].find(r => r.dataset.group === arguments[0]);
        const link = tr && tr.querySelector('a.leak-link');
        if (!link) return false;
        link.click();
        return true;"""
    wait_for(lambda: d.driver.execute_script(click_link, a.leak_group), "the overview's leak alert to link to its goroutine groups", timeout=90)
    wait_for(lambda: d.driver.current_url.endswith(f"#/goroutines/{a.leak_pid}"), "the link to open the goroutines page")
    def leaking():
        names = [tr.find_element(By.CSS_SELECTOR, "td.fn").text for tr in d.find("#ggroups tr.leaking")]
        return names if any("readLoop" in n for n in names) and any("writeLoop" in n for n in names) else None
    names = wait_for(leaking, "the goroutines page to mark readLoop and writeLoop as leaking", timeout=90)
    check(True, f"the goroutines page marks the leaking groups: {names}")
    check(d.find("#leak .panel.leak"), "the goroutines page shows the leak alert")
    # Read and click in one script each: the table re-renders every 2 s.
    info = d.driver.execute_script("""
        const tr = [...document.querySelectorAll('#ggroups tr.leaking')].find(r => r.cells[1].textContent.includes('readLoop'));
        if (!tr) return null;
        const spark = !!tr.querySelector('svg.spark path');
        tr.cells[1].click();
        return {text: tr.textContent, spark};""")
    check(info and "net/http.(*Transport).dialConn" in info["text"], f"the readLoop group is created by dialConn ({info and info['text']!r})")
    check(info["spark"], "the readLoop group has a trend line")
    frames = wait_for(lambda: [f.text for f in d.find("#ggroups tr.stacks .frame")], "a click to show the group's stack")
    check(any("net/http.(*persistConn).readLoop" in f for f in frames), f"the stack shown is readLoop's ({frames[:4]})")
    check(any("runtime.gopark" in f or "runtime.selectgo" in f for f in frames), "the stack goes down to where it parked")
    n = wait_for(lambda: len(d.find('.chart[data-chart="states"] svg path')), "the goroutines-by-state chart")
    check(n >= 1, f"the goroutines page charts the states ({n} lines)")
    headers, body = d.raw(f"/api/profile.pb.gz?pid={a.leak_pid}&type=goroutine")
    check(body[:2] == b"\x1f\x8b", f"the goroutine profile downloads ({len(body)} bytes, gzipped)")
    d.assert_layout("goroutines")
    d.shot("goroutines")
    d.collect_console("goroutines")

    # Events: the leak event, newest first.
    d.open("/events")
    wait_for(lambda: d.find('#events tr[data-event="go.goroutine.leak"]'), "the events page's go.goroutine.leak event", timeout=90)
    times = d.driver.execute_script("return [...document.querySelectorAll('#events tbody tr[data-event]')].map(tr => tr.cells[0].textContent)")
    check(len(times) >= 1, f"the events page lists {len(times)} events")
    d.assert_layout("events")
    d.shot("events")
    d.collect_console("events")


def load(d, a):
    t0 = time.time()
    d.open("/")
    wait_for(lambda: len(d.find("#groups tr[data-group]")) == a.groups, f"the overview to list {a.groups} groups", timeout=30, every=0.05)
    overview = time.time() - t0
    check(overview < a.max_seconds, f"the overview with {a.groups} groups rendered in {overview:.2f} s (bound {a.max_seconds} s)")
    # One refresh of the overview (every 2 s) costs the page little time.
    script = d.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        (async () => {
          const t = performance.now();
          for (let i = 0; i < 5; i++) await page.update(generation);
          done((performance.now() - t) / 5);
        })().catch(e => done(1e9));""")
    check(script < 500, f"one overview refresh with {a.groups} groups takes {script:.0f} ms")
    d.shot("overview-100")
    pid = a.pid
    t0 = time.time()
    d.open(f"/process/{pid}")
    wait_for(lambda: d.find('.chart[data-chart="goroutines"] .last[data-time]:not([data-time=""])'), "the process page's charts", timeout=30, every=0.05)
    proc = time.time() - t0
    check(proc < a.max_seconds, f"a process page with an hour of history rendered in {proc:.2f} s (bound {a.max_seconds} s)")
    d.shot("process-100")
    d.collect_console("load")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fixtures", "load"])
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--leak-group"); p.add_argument("--leak-pid", type=int); p.add_argument("--leak-version")
    p.add_argument("--burn-group"); p.add_argument("--burn-pid", type=int); p.add_argument("--burn-version")
    p.add_argument("--burn-container", default=""); p.add_argument("--burn-runtime", default=""); p.add_argument("--burn-pod", default="")
    p.add_argument("--hot-function", default="main.hotA")
    p.add_argument("--groups", type=int, default=100)
    p.add_argument("--pid", type=int)
    p.add_argument("--max-seconds", type=float, default=3.0)
    a = p.parse_args()
    d = Dashboard(a.url, a.out)
    try:
        (fixtures if a.mode == "fixtures" else load)(d, a)
        check(not d.console_errors, "no console errors" + ("" if not d.console_errors else ": " + "; ".join(d.console_errors)))
    except CheckFailed as e:
        try:
            d.shot("failed")
        except Exception:
            pass
        print("FAILED:", e, flush=True)
        return 1
    finally:
        d.close()
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
