"""Open an HTML file in headless Chromium (Debian's ``chromium``): layout, JS errors, screenshot.

:func:`inspect_page` copies the page next to itself with a probe script injected first in
``<head>``. The probe records uncaught errors and ``console.error`` calls, and after the
page has settled writes into the DOM (``<pre id="mechit-probe">``) the bounding box of
every ``section.figure .figure-body`` and of ``#findings``, the page height, and every
resource the page loaded. Chromium runs twice with the same window width and no network:
once with ``--dump-dom`` (read the probe back) and once with ``--screenshot`` at the full
page height, so the boxes can crop the screenshot.

Used by tests/browser/test_report_browser.py; also a script:
``python tests/browser/chromium.py report.html shot.png`` writes a full-page screenshot.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WIDTH = 1280
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--force-device-scale-factor=1", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
    # no network at all: every host name fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
SETTLE_MS = 8000  # virtual time for scripts (circuitsvis/React) to finish

PROBE = r"""<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) { errors.push("error: " + (e.message || e.type)); }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  var origError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    origError.apply(console, arguments);
  };
  function box(el) {
    var r = el.getBoundingClientRect();
    return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height};
  }
  function report() {
    var out = {errors: errors, height: document.documentElement.scrollHeight, boxes: {}, resources: []};
    document.querySelectorAll("section.figure").forEach(function (s) {
      var body = s.querySelector(".figure-body");
      if (body) out.boxes[s.id] = box(body);
    });
    var f = document.getElementById("findings");
    if (f) { out.boxes["findings"] = box(f); out.findings_text = f.innerText; }
    out.rendered = [];
    document.querySelectorAll(".cv").forEach(function (el) {
      out.rendered.push({id: el.id, elements: el.querySelectorAll("*").length});
    });
    performance.getEntriesByType("resource").forEach(function (r) { out.resources.push(r.name); });
    var pre = document.getElementById("mechit-probe") || document.createElement("pre");
    pre.id = "mechit-probe"; pre.style.display = "none";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener("load", function () { setTimeout(report, 3000); });
})();
</script>"""


@dataclass
class PageResult:
    errors: list[str]          # uncaught errors and console.error calls seen by the probe or the log
    boxes: dict[str, dict]     # element id -> {x, y, width, height} in page pixels
    height: int
    findings_text: str
    resources: list[str]       # URLs the page requested
    rendered: list[dict]       # per circuitsvis container (.cv): id and number of elements inside
    screenshot: Path
    log: str


def chromium_binary() -> str | None:
    """Path of Debian's chromium (or chrome), None if not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(binary: str, profile: Path, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _log_errors(stderr: str) -> list[str]:
    """Uncaught errors from Chromium's console log lines (``INFO:CONSOLE ... "Uncaught ..."``)."""
    return [m.group(1) for m in re.finditer(r':CONSOLE[^\]]*\] "((?:Uncaught|Error)[^"]*)"', stderr)]


def inspect_page(page: Path, screenshot: Path, *, width: int = WIDTH) -> PageResult:
    """Load ``page`` (an HTML file) in headless Chromium; see the module docstring."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    html = page.read_text(encoding="utf-8")
    probed = re.sub(r"<head>", "<head>" + PROBE, html, count=1)
    with tempfile.TemporaryDirectory(prefix="mechit-chromium-") as tmp:
        tmp = Path(tmp)
        probe_page = page.parent / f".probe-{page.name}"
        probe_page.write_text(probed, encoding="utf-8")
        try:
            dump = _run(binary, tmp / "profile-dom", [f"--window-size={width},1200",
                                                      f"--virtual-time-budget={SETTLE_MS}", "--dump-dom",
                                                      probe_page.as_uri()])
            found = re.search(r'<pre id="mechit-probe"[^>]*>(.*?)</pre>', dump.stdout, re.S)
            if not found:
                raise RuntimeError(f"the probe did not report (did the page load?): {dump.stderr[-2000:]}")
            import html as html_lib

            probe = json.loads(html_lib.unescape(found.group(1)))
            height = int(probe["height"]) + 20
            shot = _run(binary, tmp / "profile-shot", [f"--window-size={width},{height}",
                                                       f"--virtual-time-budget={SETTLE_MS}",
                                                       f"--screenshot={screenshot}", probe_page.as_uri()])
        finally:
            probe_page.unlink(missing_ok=True)
    if not screenshot.exists():
        raise RuntimeError(f"no screenshot written: {shot.stderr[-2000:]}")
    errors = probe["errors"] + _log_errors(dump.stderr) + _log_errors(shot.stderr)
    return PageResult(errors=errors, boxes=probe["boxes"], height=height, findings_text=probe.get("findings_text", ""),
                      resources=probe["resources"], rendered=probe["rendered"], screenshot=screenshot,
                      log=dump.stderr + shot.stderr)


def ink_fraction(screenshot: Path, box: dict, background=(255, 255, 255), tolerance: int = 24) -> float:
    """Share of pixels inside ``box`` that differ from ``background`` by more than ``tolerance``."""
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    x1, y1 = int(box["x"] + box["width"]), int(box["y"] + box["height"])
    crop = image[y0:y1, x0:x1]
    if crop.size == 0:
        return 0.0
    diff = np.abs(crop - np.asarray(background)).max(axis=2)
    return float((diff > tolerance).mean())


if __name__ == "__main__":
    result = inspect_page(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
    print(json.dumps({"errors": result.errors, "boxes": result.boxes, "resources": result.resources}, indent=1))
