import cv2
import numpy as np
import pytest
from PIL import Image

from maskclf.config import PrepareCfg
from maskclf.faces.detect import (DETECTORS, Face, build_detector, crop_face, crop_landmarks, find_face, find_faces,
                                  load_rgb, process_image, read_rgb, square_crop)


def _normal_image(tiny_data):
    return load_rgb(sorted((tiny_data / "train" / "images").glob("*/normal.jpg"))[0])


def _check_landmarks(face: Face):
    marks = face.landmarks
    assert marks.shape == (5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = marks
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    x0, y0, x1, y1 = face.box
    assert (marks[:, 0] > x0).all() and (marks[:, 0] < x1).all()
    assert (marks[:, 1] > y0).all() and (marks[:, 1] < y1).all()


@pytest.mark.parametrize("name", ["yuface", "mtcnn"])
def test_detector_finds_face_with_landmarks(tiny_data, name):
    img = _normal_image(tiny_data)
    face = find_face(build_detector(name), img, pad=0.3, min_confidence=0.5)
    assert face is not None and face.score >= 0.5
    _check_landmarks(face)
    # The face fills most of this 200x200 UTKFace crop.
    assert face.area > 0.4 * img.shape[0] * img.shape[1]


def test_haar_finds_unmasked_face_without_landmarks(tiny_data):
    face = find_face(build_detector("haar"), _normal_image(tiny_data), pad=0.3, min_confidence=0.5)
    assert face is not None and face.landmarks is None


def test_unknown_detector_lists_valid_names():
    with pytest.raises(ValueError, match="expected one of") as err:
        build_detector("retina")
    for name in DETECTORS:
        assert name in str(err.value)


class _FakeDetector:
    """Returns fixed faces (in the coordinates of the image it is given) and records that image's shape."""

    def __init__(self, faces):
        self.faces, self.seen = faces, None

    def detect(self, img_rgb):
        self.seen = img_rgb.shape
        return self.faces


def test_find_face_undoes_padding_and_picks_largest_confident_face():
    small = Face((12, 12, 20, 20), 0.99, None)
    big = Face((15, 15, 45, 45), 0.95, np.full((5, 2), 30.0))
    weak = Face((0, 0, 60, 60), 0.5, None)
    det = _FakeDetector([small, big, weak])
    face = find_face(det, np.zeros((40, 50, 3), np.uint8), pad=0.2, min_confidence=0.9)  # 10 px
    assert det.seen == (60, 70, 3)
    assert face.box == (5, 5, 35, 35) and face.score == 0.95
    np.testing.assert_allclose(face.landmarks, 20.0)
    assert find_face(_FakeDetector([weak]), np.zeros((40, 50, 3), np.uint8), 0.2, 0.9) is None


def test_find_face_scales_large_images_back():
    det = _FakeDetector([Face((100, 50, 200, 150), 1.0, None)])
    face = find_face(det, np.zeros((1280, 1920, 3), np.uint8), pad=0, min_confidence=0.5)
    assert det.seen == (427, 640, 3)
    np.testing.assert_allclose(face.box, (300, 150, 600, 450))


def _ramp(h, w):
    """An image whose every pixel is distinct in (R, G): crops can be compared exactly."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=-1).astype(np.uint8)


def test_crop_face_with_margin_is_the_grown_square():
    img = _ramp(100, 200)
    cfg = PrepareCfg(size=60, margin=0.5)
    # 40x40 box centred at (70, 40), grown by 50 % -> 60x60 square from (40, 10).
    crop, fallback = crop_face(img, Face((50, 20, 90, 60), 0.99, None), cfg)
    assert not fallback
    np.testing.assert_array_equal(crop, img[10:70, 40:100])


def test_crop_face_without_face_uses_square_fallback_box():
    img = _ramp(100, 200)
    cfg = PrepareCfg(size=100, fallback_box=(0.25, 0.1, 0.75, 0.9))
    # Box x 50..150, y 10..90 -> square of side 100 on the same centre (100, 50): x 50..150, y 0..100.
    crop, fallback = crop_face(img, None, cfg)
    assert fallback
    np.testing.assert_array_equal(crop, img[0:100, 50:150])


def test_square_crop_replicates_edges_and_resizes():
    img = _ramp(50, 50)
    crop = square_crop(img, cx=0, cy=0, side=20, size=20)
    np.testing.assert_array_equal(crop[:10, :10], np.broadcast_to(img[0, 0], (10, 10, 3)))
    np.testing.assert_array_equal(crop[10:, 10:], img[:10, :10])
    small = square_crop(img, 25, 25, 50, 16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8


def test_process_image_reports_unreadable_files_by_name(tmp_path, tiny_data):
    good = sorted((tiny_data / "train" / "images").glob("*/mask1.jpg"))[0]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cfg = PrepareCfg(detector="none")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        out = process_image(path, None, cfg)
        assert out.crop is None and str(path) in out.error and "cannot read image" in out.error
    ok = process_image(good, None, cfg)
    assert ok.error is None and ok.crop.shape == (128, 128, 3) and not ok.fallback


@pytest.mark.parametrize("margin,size", [(0.1, 128), (0.4, 48)])
def test_crop_landmarks_land_on_the_same_pixels_in_the_crop(margin, size):
    """Bright dots at five landmark positions of a photo end up where crop_landmarks says, in the crop."""
    img = np.zeros((300, 260, 3), np.uint8)
    marks = np.array([[100.0, 120.0], [160.0, 118.0], [131.0, 150.0], [108.0, 182.0], [152.0, 184.0]])
    for x, y in marks.astype(int):
        img[y - 3:y + 4, x - 3:x + 4] = 255
    face = Face((70.0, 80.0, 190.0, 220.0), 0.9, marks + 0.0)
    cfg = PrepareCfg(margin=margin, size=size)
    crop, _ = crop_face(img, face, cfg)
    where = crop_landmarks(face, cfg)
    gray = crop[..., 0].astype(np.float64)
    for x, y in where:
        r = max(2, size // 25)
        yi, xi = int(round(y)), int(round(x))
        patch = gray[yi - r:yi + r + 1, xi - r:xi + r + 1]
        ys, xs = np.mgrid[yi - r:yi + r + 1, xi - r:xi + r + 1]
        assert patch.sum() > 0
        assert abs((patch * xs).sum() / patch.sum() - x) < 0.6 and abs((patch * ys).sum() / patch.sum() - y) < 0.6
    assert crop_landmarks(None, cfg) is None and crop_landmarks(Face(face.box, 1.0, None), cfg) is None


def test_find_faces_lists_every_confident_face_largest_first():
    small = Face((12, 12, 20, 20), 0.99, None)
    big = Face((15, 15, 45, 45), 0.95, None)
    weak = Face((0, 0, 60, 60), 0.5, None)
    faces = find_faces(_FakeDetector([small, big, weak]), np.zeros((40, 50, 3), np.uint8), 0.0, 0.9)
    assert [f.box for f in faces] == [big.box, small.box]


def test_padding_scales_with_the_image_and_the_padded_image_fits_the_detector_size():
    det = _FakeDetector([Face((120, 120, 520, 320), 1.0, None)])
    face = find_face(det, np.zeros((1000, 2000, 3), np.uint8), pad=0.3, min_confidence=0.5)
    # 2000 px + 2 x 30 % padding shrunk to 640: scale 0.2, a 400x200 image with 120 px of padding on each side.
    assert det.seen == (440, 640, 3)
    np.testing.assert_allclose(face.box, (0, 0, 2000, 1000))


def test_tight_face_photos_above_the_detector_size_are_found_as_at_their_own_size(tiny_data):
    detector = build_detector("yuface")
    photos = sorted((tiny_data / "train" / "images").glob("*/normal.jpg"))
    photos += sorted((tiny_data / "train" / "images").glob("*/mask1.jpg"))
    missed_small = missed_big = 0
    for path in photos:
        img = load_rgb(path)  # 200x200, the face fills it
        big = cv2.resize(img, (1600, 1600), interpolation=cv2.INTER_CUBIC)
        missed_small += find_face(detector, img, 0.3, 0.5) is None
        missed_big += find_face(detector, big, 0.3, 0.5) is None
    assert missed_big <= missed_small <= 2


def test_process_image_counts_the_faces_found(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (50, 40)).save(path)
    cfg = PrepareCfg(detector="yuface", pad=0.0)
    two = process_image(path, _FakeDetector([Face((1, 1, 9, 9), 0.9, None), Face((20, 5, 40, 35), 0.9, None)]), cfg)
    assert (two.faces, two.fallback, two.face.box) == (2, False, (20, 5, 40, 35))
    none = process_image(path, _FakeDetector([]), cfg)
    assert (none.faces, none.fallback) == (0, True)
    undetected = process_image(path, None, PrepareCfg(detector="none"))
    assert (undetected.faces, undetected.fallback) == (None, False)


def _portrait_jpeg(tmp_path, tiny_data):
    """A 384x512 JPEG of a tiny-data face (the competition's photo size)."""
    path = tmp_path / "portrait.jpg"
    Image.fromarray(_normal_image(tiny_data)).resize((384, 512)).save(path, quality=95)
    return path


def test_read_rgb_decodes_jpeg_at_reduced_size_and_other_formats_in_full(tmp_path, tiny_data):
    jpeg = _portrait_jpeg(tmp_path, tiny_data)
    img, factor = read_rgb(jpeg, None, 160)
    assert img.shape == (256, 192, 3) and factor == 2.0  # 1/2 scale: 1/4 (128 px) would be under 160
    assert read_rgb(jpeg, None, 512)[0].shape == (512, 384, 3) and read_rgb(jpeg, None, 512)[1] == 1.0
    np.testing.assert_array_equal(read_rgb(jpeg, None, None)[0], load_rgb(jpeg, draft=False))
    png = tmp_path / "portrait.png"
    Image.open(jpeg).save(png)
    assert read_rgb(png, None, 160)[0].shape == (512, 384, 3) and read_rgb(png, None, 160)[1] == 1.0


def test_process_image_maps_faces_to_full_size_and_decodes_enough_pixels_for_the_crop(tmp_path, tiny_data):
    jpeg, cfg = _portrait_jpeg(tmp_path, tiny_data), PrepareCfg(detect_side=160, pad=0.0, margin=0.1)
    # The detector sees the 1/2-scale decode (192x256) shrunk to 120x160: 1 detector pixel = 3.2 full pixels.
    big = _FakeDetector([Face((10.0, 10.0, 110.0, 150.0), 0.9, np.full((5, 2), 50.0))])
    out = process_image(jpeg, big, cfg)
    assert big.seen == (160, 120, 3) and not out.fallback
    np.testing.assert_allclose(out.face.box, (32, 32, 352, 480))
    np.testing.assert_allclose(out.face.landmarks, 160.0)
    # A 448 px crop is 224 px wide in the 1/2-scale decode (>= 128): it is cut from that decode.
    half, _ = read_rgb(jpeg, None, 160)
    np.testing.assert_array_equal(out.crop, crop_face(half, out.face.moved(0.5, 0.0), cfg)[0])
    # A 211 px crop would be 106 px wide at 1/2 scale, so the image is decoded again at full size.
    small = process_image(jpeg, _FakeDetector([Face((10.0, 20.0, 70.0, 80.0), 0.9, None)]), cfg)
    np.testing.assert_allclose(small.face.box, (32, 64, 224, 256))
    np.testing.assert_array_equal(small.crop, crop_face(load_rgb(jpeg), small.face, cfg)[0])


class _LargeOnlyDetector:
    """Finds its face only in images over 200 px a side (a small face lost in the small copy); records every look."""

    def __init__(self, face):
        self.face, self.seen = face, []

    def detect(self, img_rgb):
        self.seen.append(img_rgb.shape)
        return [self.face] if max(img_rgb.shape[:2]) > 200 else []


def test_a_photo_without_a_face_at_the_detect_side_gets_a_second_look_at_twice_the_side(tmp_path, tiny_data):
    jpeg, cfg = _portrait_jpeg(tmp_path, tiny_data), PrepareCfg(detect_side=160, pad=0.0, margin=0.1)
    det = _LargeOnlyDetector(Face((10.0, 10.0, 110.0, 150.0), 0.9, None))
    out = process_image(jpeg, det, cfg)
    # 160 px (the 1/2-scale decode shrunk) shows nothing; 320 px needs the full 384x512 decode, shrunk by 1.6
    assert det.seen == [(160, 120, 3), (320, 240, 3)] and not out.fallback and out.faces == 1
    np.testing.assert_allclose(out.face.box, (16, 16, 176, 240))
    never = _FakeDetector([])
    assert process_image(jpeg, never, cfg).fallback and never.seen == (320, 240, 3)  # looked twice, then the box


def test_no_second_look_when_the_first_saw_every_pixel(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((150, 150, 3), 128, np.uint8)).save(path)
    det = _LargeOnlyDetector(Face((10.0, 10.0, 110.0, 140.0), 0.9, None))
    out = process_image(path, det, PrepareCfg(detect_side=160, pad=0.0))
    assert det.seen == [(150, 150, 3)] and out.fallback
