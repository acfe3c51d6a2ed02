"""Automatic metrics on images whose answers are known in advance."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from evalkit.errors import ImageError, InvalidInputError
from evalkit.scoring.auto import (
    AUTO_METRICS_VERSION,
    PSNR_CAP_DB,
    Metric,
    as_row,
    auto_metrics,
    prepare_source,
)


def textured(width: int, height: int, seed: int, lo: int = 30, hi: int = 200) -> np.ndarray:
    """A photo-like test image: a smooth colour field plus solid discs (edges), values in [lo, hi]."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.random((10, 10, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img = (lo + np.clip(field, 0, 1) * (hi - lo)).astype(np.uint8)
    for _ in range(30):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(width // 40, width // 8))
        colour = tuple(int(v) for v in rng.integers(lo, hi, 3))
        cv2.circle(img, centre, radius, colour, -1)
    return img


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # fast to write; size is irrelevant here
    return buf.getvalue()


def values(metrics: list[Metric]) -> dict[str, float | None]:
    return as_row(metrics)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return textured(1024, 768, seed=1)


def test_identical_images_score_perfect_preservation(source):
    m = values(auto_metrics(png(source), png(source), operation="general_edit"))
    assert m["decodes"] == 1.0
    assert m["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert m["psnr"] == PSNR_CAP_DB  # capped, never inf
    assert m["l1"] == 0.0
    assert m["no_change"] == 1.0
    assert m["aspect_ratio_error"] == 0.0
    assert (m["output_width"], m["output_height"]) == (1024.0, 768.0)


def test_null_edit_games_preservation_and_no_change_flags_it(source):
    """What the null edit games: the identity baseline beats a real edit on every preservation metric."""
    mask = np.zeros(source.shape[:2], np.uint8)
    mask[200:400, 300:600] = 255
    edited = source.copy()
    edited[200:400, 300:600] = 255 - edited[200:400, 300:600]  # a real change inside the mask
    identity = values(auto_metrics(png(source), png(source), operation="inpaint", mask=png(mask)))
    real = values(auto_metrics(png(source), png(edited), operation="inpaint", mask=png(mask)))

    assert identity["ssim"] > real["ssim"] and identity["psnr"] > real["psnr"] and identity["l1"] < real["l1"]
    assert identity["ssim_outside_mask"] == pytest.approx(1.0) and identity["l1_outside_mask"] == 0.0
    assert identity["change_inside_mask"] == 0.0 < real["change_inside_mask"]
    assert identity["no_change"] == 1.0
    assert real["no_change"] == 0.0


def test_gaussian_blur_lowers_sharpness_and_ssim(source):
    blurred = cv2.GaussianBlur(source, (0, 0), sigmaX=3.0)
    sharp = values(auto_metrics(png(source), png(source), operation="general_edit"))
    blur = values(auto_metrics(png(source), png(blurred), operation="general_edit"))
    assert blur["sharpness"] < 0.25 * sharp["sharpness"]
    assert blur["ssim"] < 0.99
    stronger = values(auto_metrics(png(source), png(cv2.GaussianBlur(source, (0, 0), 6.0)), operation="general_edit"))
    assert stronger["ssim"] < blur["ssim"] and stronger["sharpness"] < blur["sharpness"]


def test_sharpness_is_comparable_across_output_sizes(source):
    half = cv2.resize(source, (512, 384), interpolation=cv2.INTER_AREA)
    full = values(auto_metrics(png(source), png(source), operation="general_edit"))
    small = values(auto_metrics(png(source), png(half), operation="general_edit"))
    assert small["sharpness"] == pytest.approx(full["sharpness"], rel=0.1)


def test_crop_and_resize_change_aspect_ratio_error_by_the_known_amount(source):
    square_crop = source[:, 128:896]  # 768×768 from 1024×768
    m = values(auto_metrics(png(source), png(square_crop), operation="general_edit"))
    assert m["aspect_ratio_error"] == pytest.approx(math.log(4 / 3), rel=1e-9)
    assert "size_error" not in m  # only when a size was requested

    stretched = cv2.resize(source, (1024, 512), interpolation=cv2.INTER_AREA)  # AR 2 vs 4/3
    m = values(auto_metrics(png(source), png(stretched), operation="general_edit"))
    assert m["aspect_ratio_error"] == pytest.approx(math.log(2 / (4 / 3)), rel=1e-9)

    m = values(auto_metrics(png(source), png(source), operation="general_edit", requested_size=(1024, 1024)))
    assert m["aspect_ratio_error"] == pytest.approx(math.log(4 / 3), rel=1e-9)
    assert m["size_error"] == pytest.approx(0.25)  # 1024×768 is 25% fewer pixels than 1024×1024


def test_colour_shift_gives_the_analytic_l1_and_psnr(source):
    shift = 20  # added to the red channel only; source values are ≤ 200, so nothing clips
    shifted = source.copy()
    shifted[..., 0] += shift
    m = values(auto_metrics(png(source), png(shifted), operation="general_edit"))
    expected_l1 = shift / 255 / 3  # mean over three channels, one of which moved by 20 levels
    assert m["l1"] == pytest.approx(expected_l1, rel=1e-4)
    expected_mse = (shift / 255) ** 2 / 3
    assert m["psnr"] == pytest.approx(10 * math.log10(1 / expected_mse), rel=1e-4)
    assert m["no_change"] == 0.0


def test_masked_change_is_inside_not_outside(source):
    mask = np.zeros(source.shape[:2], np.uint8)
    mask[256:512, 384:768] = 255
    edited = source.copy()
    edited[256:512, 384:768] += 40  # source ≤ 200, so no wrap-around
    m = values(auto_metrics(png(source), png(edited), operation="inpaint", mask=png(mask)))
    assert m["change_inside_mask"] == pytest.approx(40 / 255, rel=1e-4)
    assert m["l1_outside_mask"] == pytest.approx(0.0, abs=1e-6)
    assert m["ssim_outside_mask"] > 0.97  # only the SSIM window straddling the mask edge sees the change
    assert m["ssim_outside_mask"] > m["ssim"]


def test_mask_given_as_transparency_reads_the_same(source):
    edited = source.copy()
    edited[256:512, 384:768] += 40
    rgba = np.zeros((*source.shape[:2], 4), np.uint8)
    rgba[..., 3] = 255
    rgba[256:512, 384:768, 3] = 0  # transparent = edit region, composited on white
    m = values(auto_metrics(png(source), png(edited), operation="inpaint", mask=png(rgba)))
    assert m["change_inside_mask"] == pytest.approx(40 / 255, rel=1e-4)


def _zoomed_out(src: np.ndarray, scale: float, at: tuple[int, int], seed: int = 7) -> np.ndarray:
    h, w = src.shape[:2]
    canvas = textured(w, h, seed=seed) // 2 + 40
    small = cv2.resize(src, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    x, y = at
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


@pytest.mark.parametrize(("scale", "at"), [(0.5, (300, 200)), (0.7, (100, 150)), (0.35, (600, 40))])
def test_zoom_out_finds_the_source_at_the_known_scale(source, scale, at):
    out = _zoomed_out(source, scale, at)
    metrics = auto_metrics(png(source), png(out), operation="zoom_out")
    m = values(metrics)
    assert m["zoom_consistency"] > 0.9
    assert m["zoom_scale"] == pytest.approx(scale, abs=0.005)
    assert m["ssim"] > 0.98  # the source survived, pixel-aligned, inside the matched region
    assert m["no_change"] == 0.0
    detail = next(x.detail for x in metrics if x.name == "zoom_consistency")
    assert "of the output width" in detail


def test_zoom_out_does_not_find_an_unrelated_image(source):
    unrelated = textured(1024, 768, seed=99)
    m = values(auto_metrics(png(source), png(unrelated), operation="zoom_out"))
    assert m["zoom_consistency"] < 0.7


def test_zoom_out_that_returns_the_source_is_flagged(source):
    m = values(auto_metrics(png(source), png(source), operation="zoom_out"))
    assert m["zoom_scale"] == pytest.approx(1.0, abs=0.02)
    assert m["no_change"] == 1.0


@pytest.mark.parametrize(
    "bad_output",
    [b"", b"not an image at all", None, "truncated"],
)
def test_garbage_output_gives_decodes_zero_without_raising(source, bad_output):
    if bad_output == "truncated":
        data = png(source)
        bad_output = data[: len(data) // 2]
    metrics = auto_metrics(png(source), bad_output, operation="general_edit")
    assert [m.name for m in metrics] == ["decodes"]
    assert metrics[0].value == 0.0 and metrics[0].detail


def test_bad_source_or_operation_is_a_clear_error(source):
    with pytest.raises(ImageError, match="source image"):
        auto_metrics(b"garbage", png(source), operation="general_edit")
    with pytest.raises(InvalidInputError, match="unknown operation"):
        auto_metrics(png(source), png(source), operation="make_it_pop")
    with pytest.raises(ImageError, match="mask image"):
        auto_metrics(png(source), png(source), operation="inpaint", mask=b"garbage")


def test_all_white_output_is_fully_clipped_and_flat(source):
    white = np.full_like(source, 255)
    m = values(auto_metrics(png(source), png(white), operation="general_edit"))
    assert m["clipping"] == 1.0
    assert m["sharpness"] == 0.0
    assert values(auto_metrics(png(source), png(source), operation="general_edit"))["clipping"] == 0.0


def test_noise_sigma_recovers_added_gaussian_noise():
    clean = textured(1024, 768, seed=3, lo=60, hi=190)
    clean = cv2.GaussianBlur(clean, (0, 0), 1.0)
    rng = np.random.default_rng(0)
    sigma = 10.0
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8)
    m_clean = values(auto_metrics(png(clean), png(clean), operation="general_edit"))
    m_noisy = values(auto_metrics(png(clean), png(noisy), operation="general_edit"))
    assert m_clean["noise_sigma"] < 2.0
    assert m_noisy["noise_sigma"] == pytest.approx(sigma, rel=0.15)


def test_inputs_as_paths_pil_images_and_prepared_source_agree(source, tmp_path):
    edited = cv2.GaussianBlur(source, (0, 0), 2.0)
    src_path, out_path = tmp_path / "src.png", tmp_path / "out.png"
    src_path.write_bytes(png(source))
    out_path.write_bytes(png(edited))
    from_bytes = values(auto_metrics(png(source), png(edited), operation="general_edit"))
    from_paths = values(auto_metrics(src_path, out_path, operation="general_edit"))
    from_pil = values(auto_metrics(Image.fromarray(source), Image.fromarray(edited), operation="general_edit"))
    prepared = prepare_source(png(source))
    from_prepared = values(auto_metrics(prepared, png(edited), operation="general_edit"))
    assert from_bytes == from_paths == from_pil == from_prepared


def test_transparent_output_is_composited_on_white(source):
    rgba = np.dstack([source, np.full(source.shape[:2], 255, np.uint8)])
    rgba[:, :, 3][:100] = 0  # top band fully transparent → white
    m = values(auto_metrics(png(source), png(rgba), operation="remove_background"))
    assert m["decodes"] == 1.0
    assert m["clipping"] == pytest.approx(100 / 768, rel=1e-6)


def test_direction_flags_and_finite_values(source):
    mask = np.zeros(source.shape[:2], np.uint8)
    mask[:200, :200] = 255
    out = cv2.GaussianBlur(source, (0, 0), 1.5)
    metrics = auto_metrics(png(source), png(out), operation="inpaint", mask=png(mask), requested_size=(1024, 768))
    flags = {m.name: m.higher_is_better for m in metrics}
    assert flags == {
        "decodes": True, "output_width": None, "output_height": None, "aspect_ratio_error": False,
        "size_error": False, "ssim": True, "psnr": True, "l1": False, "ssim_outside_mask": True,
        "l1_outside_mask": False, "change_inside_mask": None, "no_change": False, "sharpness": True,
        "clipping": False, "noise_sigma": False,
    }  # fmt: skip
    assert all(m.value is not None and math.isfinite(m.value) for m in metrics)
    assert AUTO_METRICS_VERSION


def test_preservation_is_descriptive_for_character_reference(source):
    metrics = auto_metrics(png(source), png(textured(1024, 768, 5)), operation="character_reference")
    ssim = next(m for m in metrics if m.name == "ssim")
    assert ssim.higher_is_better is None and "descriptive" in ssim.detail


def test_tiny_images_do_not_crash():
    tiny_src = textured(8, 6, seed=1)
    m = values(auto_metrics(png(tiny_src), png(tiny_src), operation="general_edit"))
    assert m["decodes"] == 1.0 and m["ssim"] is None and m["l1"] == 0.0 and m["no_change"] == 1.0
    m = values(auto_metrics(png(tiny_src), png(textured(16, 12, seed=2)), operation="zoom_out"))
    assert m["decodes"] == 1.0
