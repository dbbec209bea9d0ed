import numpy as np
import pytest

from maskclf.faces.maskdraw import KINDS, PATTERNS, MaskStyle, draw_mask, random_style

# A frontal face on a 200x200 photo: left eye, right eye, nose tip, left and right mouth corner.
MARKS = np.array([[70, 90], [130, 90], [100, 125], [78, 150], [122, 150]], dtype=np.float64)
RED = MaskStyle(kind="surgical", color=(220, 30, 30))


def _skin():
    return np.full((200, 200, 3), (190, 140, 115), np.uint8)


def _changed(before, after, xy, tol=30):
    x, y = int(round(xy[0])), int(round(xy[1]))
    return int(np.abs(after[y, x].astype(int) - before[y, x].astype(int)).max()) > tol


def _draw(placement, marks=MARKS, style=RED, seed=0, img=None):
    img = _skin() if img is None else img
    return img, draw_mask(img, marks, placement, style, np.random.default_rng(seed))


def test_worn_mask_covers_nose_mouth_and_chin_but_not_eyes():
    img, out = _draw("wear")
    for p in MARKS[2:]:
        assert _changed(img, out, p)
    assert _changed(img, out, (100, 185))  # chin
    for p in [MARKS[0], MARKS[1], (100, 40), (5, 5), (195, 195)]:
        assert not _changed(img, out, p, tol=2)
    assert out[150, 100, 0] > out[150, 100, 1] + 60  # it is the red mask


def test_nose_placement_leaves_the_nose_bare_and_covers_the_mouth():
    img, out = _draw("nose")
    assert not _changed(img, out, MARKS[2], tol=2)
    assert all(_changed(img, out, p) for p in MARKS[3:])


def test_chin_placement_leaves_the_mouth_bare():
    img, out = _draw("chin")
    assert not any(_changed(img, out, p, tol=2) for p in MARKS[2:])
    assert _changed(img, out, (100, 180))


def test_mask_follows_the_eye_line_tilt():
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    marks = (MARKS - 100) @ rot.T + 100
    img, out = _draw("wear", marks=marks)
    assert all(_changed(img, out, p) for p in marks[2:])
    assert not any(_changed(img, out, p, tol=2) for p in marks[:2])
    ys, xs = np.nonzero(np.abs(out.astype(int) - img.astype(int)).max(-1) > 30)
    down = np.array([xs.mean(), ys.mean()]) - marks[:2].mean(0)
    assert np.degrees(np.arctan2(down[1], down[0])) == pytest.approx(90 + 30, abs=5)


def test_same_seed_same_pixels_and_input_untouched():
    img = _skin()
    a = draw_mask(img, MARKS, "wear", RED, np.random.default_rng(3))
    b = draw_mask(img, MARKS, "wear", RED, np.random.default_rng(3))
    c = draw_mask(img, MARKS, "wear", RED, np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(img, _skin())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_kind_and_pattern_covers_the_mouth(kind, pattern):
    style = MaskStyle(kind=kind, color=(30, 60, 200), pattern=pattern, pattern_color=(250, 250, 40))
    img, out = _draw("wear", style=style)
    assert all(_changed(img, out, p) for p in MARKS[3:])
    assert not any(_changed(img, out, p, tol=2) for p in MARKS[:2])


def test_grayscale_photo_gets_a_grayscale_mask():
    gray = np.full((200, 200, 3), 128, np.uint8)
    _, out = _draw("wear", style=MaskStyle(kind="cloth", color=(250, 20, 20)), img=gray)
    assert abs(int(out[150, 100, 0]) - 128) > 10  # drawn, in gray
    assert np.abs(out.astype(int) - out.astype(int).mean(-1, keepdims=True)).max() <= 1


def test_random_style_is_seeded_and_spans_kinds_colours_and_patterns():
    a = [random_style(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    styles = [random_style(rng) for _ in range(400)]
    assert {s.kind for s in styles} == set(KINDS)
    assert {s.pattern for s in styles} == set(PATTERNS)
    assert len({s.color for s in styles}) > 50
    assert 0.08 < np.mean([s.pattern != "plain" for s in styles]) < 0.3


def test_bad_arguments_say_what_is_valid():
    with pytest.raises(ValueError, match="wear"):
        draw_mask(_skin(), MARKS, "forehead", RED, np.random.default_rng(0))
    with pytest.raises(ValueError, match="surgical"):
        MaskStyle(kind="n95")
    with pytest.raises(ValueError, match="uint8"):
        draw_mask(_skin().astype(np.float32), MARKS, "wear", RED, np.random.default_rng(0))
