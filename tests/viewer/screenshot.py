"""Take a screenshot of a result's viewer in headless Chromium (how docs/viewer.png is made).

    .venv/bin/python -m tests.viewer.screenshot demo-out docs/viewer.png [--size 1280x720] [--query noui]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from spaceport.viewer.serve import find_viewer_dir, serve_in_thread
from tests.viewer.browser import Chromium


def screenshot(directory: str | Path, size: tuple[int, int] = (1280, 720), query: str = "") -> np.ndarray:
    server, url = serve_in_thread(find_viewer_dir(directory))
    try:
        with Chromium(*size) as browser:
            browser.open(f"{url}?{query}")
            browser.wait_for("window.spaceportReady", timeout=120)
            return browser.screenshot()
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("out")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--query", default="")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    image = screenshot(args.dir, (w, h), args.query)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
