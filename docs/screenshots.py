"""Screenshots of a reviewer's path through one audit, taken in headless Chromium: the MLflow run page
(description, tags), the `review` table of flagged rows with its thumbnail column, the classic runs view, and
the gate report page.

Not part of the package or the tests (it needs a browser). Set-up on Debian: `apt-get install chromium` and
`pip install playwright` in any virtual environment (Playwright drives Debian's /usr/bin/chromium; it
downloads no browser). Then, from the folder holding the audit's `mlflow.db`:

    python docs/screenshots.py --store sqlite:///mlflow.db --run-id RUN --report RUN_DIR/artifacts/gate/report.html

It starts `mlflow ui` on a free local port itself and writes PNG files to docs/screenshots/.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

#: Chromium's flags for a closed network (no background connections, no sandbox as root).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Seconds the MLflow single-page app gets to show a page's marker text, then to draw images after it.
READY_SECONDS, SETTLE_SECONDS = 120, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ui(store: str, mlflow: str) -> tuple[subprocess.Popen, str]:
    """`mlflow ui` on a free port; returns (process, base URL) once it answers."""
    port = _free_port()
    proc = subprocess.Popen([mlflow, "ui", "--backend-store-uri", store, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(base, timeout=2)
            return proc, base
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit(f"mlflow ui did not answer on {base} within 2 minutes")


def _shoot(page: Page, url: str, ready: str, out: Path, full_page: bool = False) -> None:
    """Open `url`, wait until the text `ready` shows, close MLflow's assistant panel if it is open, and save
    the page as `out`."""
    page.goto(url, wait_until="load")
    page.get_by_text(ready).first.wait_for(timeout=READY_SECONDS * 1000)
    time.sleep(SETTLE_SECONDS)
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()
        time.sleep(1)
    page.screenshot(path=str(out), full_page=full_page)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the MLflow backend store URI, e.g. sqlite:///mlflow.db")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--experiment-id", default="1")
    parser.add_argument("--report", required=True, type=Path, help="the run's gate/report.html")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "screenshots")
    parser.add_argument("--mlflow", default="mlflow", help="the mlflow command (e.g. .venv/bin/mlflow)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    proc, base = _start_ui(args.store, args.mlflow)
    run = f"{base}/#/experiments/{args.experiment_id}/runs/{args.run_id}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            _shoot(page, f"{base}/#/experiments/{args.experiment_id}/runs?workflowType=machine_learning",
                   "matching run", args.out / "runs_view.png")
            _shoot(page, run, "Worst flagged samples", args.out / "run_description.png", full_page=True)
            _shoot(page, f"{run}/artifacts/review/flagged.json", "severity", args.out / "review_table.png")
            _shoot(page, args.report.resolve().as_uri(), "Expectations", args.out / "gate_report.png",
                   full_page=True)
            browser.close()
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
