"""`maskclf serve` as people use it: the JSON API with good and bad uploads, and the page in headless Chromium."""

import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

TIMEOUT = 60  # seconds for any one request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(face_model, tmp_path_factory):
    """The CLI's server on a free loopback port, stopped after the module's tests."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("serve") / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "maskclf", "serve", str(face_model), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(url + "/health", timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.5)
    if proc.poll() is not None or time.monotonic() >= deadline:
        proc.kill()
        pytest.fail(f"server did not start: {Path(log.name).read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _post(url, name, data, content_type="image/jpeg"):
    return requests.post(url + "/api/detect", files={"file": (name, data, content_type)}, timeout=TIMEOUT)


def _alive(url):
    assert requests.get(url + "/health", timeout=TIMEOUT).json()["status"] == "ok"


def test_health_docs_and_page_are_served_locally(server):
    health = requests.get(server + "/health", timeout=TIMEOUT).json()
    assert health["backend"] == "torch" and health["detector"] == "yuface"
    assert health["max_upload_bytes"] == 10 * 1024 * 1024
    spec = requests.get(server + "/openapi.json", timeout=TIMEOUT).json()
    assert "multipart/form-data" in spec["paths"]["/api/detect"]["post"]["requestBody"]["content"]
    for page in ("/", "/docs"):
        html = requests.get(server + page, timeout=TIMEOUT).text
        assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html  # no CDN
    assert requests.get(server + "/docs-assets/swagger-ui-bundle.js", timeout=TIMEOUT).ok


def test_valid_photos_return_their_faces(server, photos):
    one = _post(server, "one.jpg", photos["one"].read_bytes())
    assert one.status_code == 200 and len(one.json()["faces"]) == 1
    two = _post(server, "two.jpg", photos["two"].read_bytes()).json()
    assert two["filename"] == "two.jpg" and len(two["faces"]) == 2
    assert {"box", "score", "mask", "gender", "age", "class", "label", "prob"} <= set(two["faces"][0])
    assert _post(server, "none.jpg", photos["none"].read_bytes()).json()["faces"] == []


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, "PNG")  # 42 MP of black compresses to a few kB
    return buf.getvalue()


def _ppm() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buf, "PPM")
    return buf.getvalue()


def _chunks(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_bad_requests_get_clear_json_errors_and_the_server_stays_up(server, photos):
    jpeg = photos["one"].read_bytes()
    big = np.random.default_rng(0).integers(0, 256, 11 * 1024 * 1024, dtype=np.uint8).tobytes()
    boundary = "b0undary"
    chunked_body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()
    cases = {
        "text file renamed .jpg": (lambda: _post(server, "notes.jpg", b"just some text\n"), 422, "not a decodable"),
        "truncated JPEG": (lambda: _post(server, "cut.jpg", jpeg[:len(jpeg) // 2]), 422, "broken JPEG"),
        "empty file": (lambda: _post(server, "empty.jpg", b""), 422, "is empty"),
        "wrong part type": (lambda: _post(server, "one.jpg", jpeg, "text/plain"), 415, "only image/*"),
        "not multipart": (lambda: requests.post(server + "/api/detect", json={"file": "x"}, timeout=TIMEOUT), 415,
                          "multipart/form-data"),
        "no file field": (lambda: requests.post(server + "/api/detect", files={"photo": (None, "x")},
                                                timeout=TIMEOUT), 422,
                          "no file"),
        "oversized upload": (lambda: _post(server, "big.jpg", big), 413, "exceeds the limit of 10485760 bytes"),
        "oversized, chunked": (lambda: requests.post(
            server + "/api/detect", data=_chunks(chunked_body), timeout=TIMEOUT,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}), 413, "exceeds the limit"),
        "too many pixels": (lambda: _post(server, "huge.png", _huge_png(), "image/png"), 413, "the limit is 40000000"),
        "decodable but not an accepted type": (lambda: _post(server, "pic.ppm", _ppm(), "image/x-portable-pixmap"),
                                               415, "accepted formats"),
        "unknown path": (lambda: requests.get(server + "/api/nothing", timeout=TIMEOUT), 404, "Not Found"),
    }
    for name, (send, status, message) in cases.items():
        r = send()
        body = r.json()
        print(f"{name}: {r.status_code} {json.dumps(body)}")
        assert r.status_code == status and body["status"] == status and message in body["error"], name
        _alive(server)
    assert len(_post(server, "two.jpg", photos["two"].read_bytes()).json()["faces"]) == 2  # still serving


def test_twenty_concurrent_requests_all_succeed_with_the_same_answer(server, photos):
    data = photos["two"].read_bytes()
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: _post(server, f"two-{i}.jpg", data), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    faces = [r.json()["faces"] for r in responses]
    assert all(f == faces[0] for f in faces) and len(faces[0]) == 2


def upload_and_wait(driver, url: str, photo: Path, timeout: float = 120) -> str:
    """Open the page, choose `photo` in its file input, wait for the result (or an error) and the photo to show;
    returns the status line."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "file").send_keys(str(Path(photo).resolve()))
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error")
        and d.execute_script("const p = document.getElementById('photo'); return p.complete && p.naturalWidth > 0"))
    return driver.find_element(By.ID, "status").text


@pytest.mark.slow
def test_the_page_in_headless_chromium_shows_boxes_and_the_table(server, photos, chromium, screenshot, artifacts):
    expected = _post(server, "two.jpg", photos["two"].read_bytes()).json()
    status = upload_and_wait(chromium, server, photos["two"])
    assert status == f"two.jpg: {expected['width']}x{expected['height']}, 2 faces found."
    boxes = chromium.find_elements("css selector", "#boxes .box")
    rows = chromium.find_elements("css selector", "#faces tbody tr")
    assert len(boxes) == len(rows) == 2
    photo = chromium.find_element("css selector", "#photo").rect
    scale = photo["width"] / expected["width"]
    for box, face in zip(boxes, expected["faces"]):
        x0, y0, x1, y1 = face["box"]
        assert abs(box.rect["x"] - photo["x"] - x0 * scale) <= 2 and abs(box.rect["y"] - photo["y"] - y0 * scale) <= 2
        assert abs(box.rect["width"] - (x1 - x0) * scale) <= 2 and abs(box.rect["height"] - (y1 - y0) * scale) <= 2
        assert face["mask"]["label"] in box.text
    cells = [c.text for c in rows[0].find_elements("css selector", "td")]
    assert cells[0] == "1" and cells[1].startswith(expected["faces"][0]["mask"]["label"])
    assert cells[4].startswith(expected["faces"][0]["label"])
    shot = screenshot(chromium, artifacts / "serve-page.png")
    assert Image.open(shot).size[0] > 0
    print(f"screenshot: {shot}")
