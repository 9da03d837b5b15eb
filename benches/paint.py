"""Time to first paint and to interactive of dashboard pages in headless Chromium, 1400 px
wide, through the DevTools protocol (`pip install websocket-client`).

    python3 benches/paint.py http://127.0.0.1:8080 '/?range=1h' '/graph?range=1h'

Each page is opened ROUNDS times (default 5) in a fresh tab; the medians are printed, and
each page's ratio to the first page named (the baseline, measured in the same run).

- first paint: the browser's `first-contentful-paint`;
- interactive: the end of the last long task (over 50 ms of main thread) after the first
  paint, or the first paint or DOMContentLoaded if later: from then on the page answers input at once (Lighthouse's
  time to interactive, without its network-quiet rule: every asset is on the same host).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import websocket

ROUNDS = int(os.environ.get("ROUNDS", "5"))

# Runs before the page's own scripts: records long tasks from the start.
OBSERVE = """
window.__longTasks = [];
new PerformanceObserver(list => {
  for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]);
}).observe({type: 'longtask', buffered: true});
"""

MEASURE = """
(() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const paint = fcp ? fcp.startTime : null;
  let interactive = Math.max(nav.domContentLoadedEventEnd, paint || 0);
  for (const [start, duration] of window.__longTasks) {
    if (paint !== null && start + duration > paint) {
      interactive = Math.max(interactive, start + duration);
    }
  }
  return JSON.stringify({paint, interactive, response: nav.responseEnd,
                         bytes: nav.transferSize, nodes: document.querySelectorAll('*').length});
})()
"""


class DevTools:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=120, suppress_origin=True)
        self.next_id = 0

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, event, session, deadline_s=120):
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("method") == event and reply.get("sessionId") == session:
                return reply
        raise TimeoutError(event)


def launch():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser"
    )
    if not chromium:
        sys.exit("chromium not found (apt-get install chromium)")
    profile = tempfile.mkdtemp()
    process = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stderr=subprocess.PIPE, text=True,
    )
    for line in process.stderr:
        found = re.search(r"DevTools listening on (ws://\S+)", line)
        if found:
            return process, profile, found.group(1)
    sys.exit("chromium did not start")


def visit(tools, url):
    target = tools.call("Target.createTarget", url="about:blank")["targetId"]
    session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    tools.call("Page.enable", session)
    tools.call("Emulation.setDeviceMetricsOverride", session, width=1400, height=1000,
               deviceScaleFactor=1, mobile=False)
    tools.call("Page.addScriptToEvaluateOnNewDocument", session, source=OBSERVE)
    tools.call("Page.navigate", session, url=url)
    tools.wait_for("Page.loadEventFired", session)
    # Long tasks right after load (the map's script) are still counted.
    time.sleep(2)
    result = tools.call("Runtime.evaluate", session, expression=MEASURE, returnByValue=True)
    tools.call("Target.closeTarget", targetId=target)
    return json.loads(result["result"]["value"])


def main():
    base, pages = sys.argv[1], sys.argv[2:]
    process, profile, url = launch()
    try:
        tools = DevTools(url)
        results = {}
        for _ in range(ROUNDS):
            for page in pages:
                results.setdefault(page, []).append(visit(tools, base + page))
    finally:
        process.kill()
        shutil.rmtree(profile, ignore_errors=True)
    median = {
        page: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for page, runs in results.items()
    }
    first = median[pages[0]]
    print(f"{'page':34} {'paint ms':>9} {'ratio':>6} {'interactive ms':>15} {'ratio':>6}"
          f" {'KiB':>7} {'elements':>9}")
    for page in pages:
        m = median[page]
        print(f"{page:34} {m['paint']:9.0f} {m['paint'] / first['paint']:6.2f}"
              f" {m['interactive']:15.0f} {m['interactive'] / first['interactive']:6.2f}"
              f" {m['bytes'] / 1024:7.0f} {m['nodes']:9.0f}")


if __name__ == "__main__":
    main()
