"""Drive the `maskclf serve` page in headless Chromium (Selenium + chromedriver): upload a photo, wait for the
result, take a screenshot. Used by the browser test and to refresh the README's screenshot:

    python -m maskclf.toolkit.screenshot http://127.0.0.1:8000 photo.jpg docs/serve.png
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")  # Debian's packages


@contextmanager
def browser(chromium: Path = CHROMIUM, chromedriver: Path = CHROMEDRIVER, size: tuple[int, int] = (1000, 860)):
    """A headless Chromium session through the given chromedriver (no driver or browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def upload_and_wait(driver, url: str, photo: Path, timeout: float = 120) -> str:
    """Open the page, choose `photo` in its file input, wait until the result (or an error) is shown and the photo
    has loaded; returns the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url.rstrip("/") + "/")
    driver.find_element(By.ID, "file").send_keys(str(Path(photo).resolve()))
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error")
        and d.execute_script("const p = document.getElementById('photo'); return p.complete && p.naturalWidth > 0"))
    return driver.find_element(By.ID, "status").text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="address of a running `maskclf serve`")
    ap.add_argument("photo", type=Path)
    ap.add_argument("out", type=Path, help="PNG to write")
    args = ap.parse_args()
    with browser() as driver:
        print(upload_and_wait(driver, args.url, args.photo))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    print(f"screenshot: {args.out}")


if __name__ == "__main__":
    main()
