import os
import shutil
from pathlib import Path

import pytest
import torch

# No network here or in CI: make hub clients fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MASKCLF_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set MASKCLF_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    return _need(SHARED_DATA / "tiny")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point the face cache at a throwaway folder for the test session, never at ~/.cache."""
    monkeypatch.setenv("MASKCLF_CACHE", str(tmp_path_factory.getbasetemp() / "face-cache"))


@pytest.fixture(scope="session")
def crops(tmp_path_factory) -> Path:
    """Face-crop cache shared by the fit tests of a session (the first fit fills it); one torch thread for them."""
    torch.set_num_threads(1)
    return tmp_path_factory.getbasetemp() / "tiny-crops"


# The tiny training config training tests start from: a small test ResNet at 32 px on the CPU, no face detector,
# no warm-up, no TensorBoard, no end-of-run report (tested in test_cli_reports). Tests add their own changes after
# it (later settings win).
TINY_SETS = ["model.backbone=test_resnet", "model.pretrained=", "prepare.detector=none", "prepare.size=48",
             "train.input_size=32", "train.batch_size=16", "train.device=cpu", "train.scheduler.params.warmup_epochs=0",
             "run.tensorboard=false", "run.report=false"]


@pytest.fixture(scope="session")
def tiny_cfg(tiny_data, crops):
    """tiny_cfg(out, *sets): the tiny config on tiny data, runs written under `out`, then `sets` applied."""
    from maskclf.config import load_config

    def make(out, *sets: str):
        return load_config([], TINY_SETS + [f"data.root={tiny_data}", f"data.cache_dir={crops}", f"run.out_dir={out}",
                                            *sets])

    return make


@pytest.fixture(scope="session")
def tiny_args(crops):
    """tiny_args(out, *sets): the same config as `--set` arguments for a CLI command (DATA_DIR given separately)."""
    def make(out, *sets: str) -> list[str]:
        return [a for s in [*TINY_SETS, f"data.cache_dir={crops}", f"run.out_dir={out}", *sets] for a in ("--set", s)]

    return make


# Fixtures that train a real model: every test that uses one (directly or through another fixture) is marked
# slow, so `-m "not slow"` gives a quick run; CI runs everything.
TRAINING_FIXTURES = {"tiny_cfg", "tiny_args", "face_model"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class TrainingKilled(Exception):
    """Raised by a `kill_at` hook: stands in for a run killed right after one member's epoch."""


@pytest.fixture
def kill_at():
    """kill_at(member, epoch) -> an `on_epoch` hook for fit() that raises kill_at.Killed after that epoch."""
    def make(member: str, epoch: int):
        def hook(name, e, score):
            if (name, e) == (member, epoch):
                raise TrainingKilled

        return hook

    make.Killed = TrainingKilled
    return make


ARTIFACTS = Path(os.environ.get("MASKCLF_ARTIFACTS", REPO / "test-artifacts"))
BROWSER_WINDOW = (1280, 900)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (Debian's chromium + chromium-driver, via selenium) for the session's page tests."""
    webdriver = pytest.importorskip("selenium.webdriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not (browser and driver_path):
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={BROWSER_WINDOW[0]},{BROWSER_WINDOW[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for files a test leaves for people to look at (screenshots); $MASKCLF_ARTIFACTS overrides it."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def full_page_screenshot(driver, path: Path, max_height: int = 16000) -> Path:
    """Save a PNG of the whole page: the window is stretched to the page's height (capped) for the shot."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(BROWSER_WINDOW[0], min(int(height) + 120, max_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(*BROWSER_WINDOW)
    return path


@pytest.fixture(scope="session")
def screenshot():
    """screenshot(driver, path): a full-page PNG of what the browser shows."""
    return full_page_screenshot


@pytest.fixture(scope="session")
def face_model(tiny_data, crops, tmp_path_factory) -> Path:
    """A 1-epoch tiny checkpoint whose crops come from the default face detector: for detect, export and serve."""
    from maskclf.config import load_config
    from maskclf.training.fit import fit

    cfg = load_config([], ["model.backbone=test_resnet", "model.pretrained=", "prepare.size=48", "train.input_size=32",
                           "train.batch_size=16", "train.device=cpu", "train.scheduler.params.warmup_epochs=0",
                           "run.tensorboard=false", "train.epochs=1", f"data.root={tiny_data}",
                           f"data.cache_dir={crops}", f"run.out_dir={tmp_path_factory.mktemp('face-model')}"])
    return fit(cfg, progress=False).checkpoint


@pytest.fixture(scope="session")
def photos(shared_data, tmp_path_factory) -> dict:
    """Real photos: two single-face ones from mask-real, both side by side as a two-face photo, and one without a
    face; plus the width of the left half of the two-face photo."""
    import numpy as np
    from PIL import Image

    from maskclf.config import PrepareCfg
    from maskclf.faces.detect import build_detector, find_faces, load_rgb

    out, cfg = tmp_path_factory.mktemp("photos"), PrepareCfg()
    detector, singles = build_detector(cfg.detector), []
    for path in sorted((shared_data / "mask-real" / "normal").glob("chandrikadeb7_*.jpg")):
        img = load_rgb(path)
        if min(img.shape[:2]) >= 200 and len(find_faces(detector, img, cfg.pad, cfg.min_confidence)) == 1:
            singles.append((path, img))
        if len(singles) == 2:
            break
    h = min(img.shape[0] for _, img in singles)
    halves = [np.asarray(Image.fromarray(img).resize((round(img.shape[1] * h / img.shape[0]), h)))
              for _, img in singles]
    Image.fromarray(np.concatenate(halves, axis=1)).save(out / "two.jpg", quality=92)
    rng = np.random.default_rng(0)
    wall = np.clip(rng.normal(180, 3, (240, 320, 3)), 0, 255).astype(np.uint8)  # a flat grey wall: no face
    Image.fromarray(wall).save(out / "none.jpg")
    return {"one": singles[0][0], "two": out / "two.jpg", "none": out / "none.jpg", "left_width": halves[0].shape[1]}
