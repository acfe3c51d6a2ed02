"""Automatic image metrics: offline, deterministic, no network and no model weights.

These numbers are *signals*, not a verdict on an edit: the field scores hosted edit models with a VLM
judge or human pairwise votes (see ``scoring.judge`` / ``scoring.arena``). What pixel metrics can do
well is catch the failures a judge may miss or that are cheap to check on every output: an output
that does not decode, the wrong size or aspect ratio, an edit that spilled outside its mask, a
zoom-out that lost the original, an output that is the input unchanged, blur, clipping, noise.

How the numbers are computed (``AUTO_METRICS_VERSION`` changes when any of this does):

* **Decoding** goes through :func:`evalkit.images.decode_output` / :func:`evalkit.images.to_rgb`
  (transparency composited on white). An output that does not decode gives ``decodes = 0`` and no
  other metric — never an exception. A source or mask that does not decode is bad input and raises
  :class:`~evalkit.errors.ImageError`.
* **Working size.** Comparisons run at a bounded working size: the source scaled so its long side is
  at most ``WORKING_LONG_SIDE_PX`` (512 px; never upscaled), and the output resized to exactly that
  size (stretched if its aspect ratio differs; ``aspect_ratio_error`` reports that separately).
  GEdit-Bench likewise resizes the edited image to the source's size before judging. Downscaling is
  area-averaging (OpenCV ``INTER_AREA``). Working at 512 px bounds the cost and ignores pixel-level
  resampling differences between models that render at different resolutions.
* **Preservation** (vs the source, at the working size): ``ssim`` on luma (BT.601) with
  scikit-image's defaults (7×7 uniform window, sample covariance; the Gaussian window of Wang et al.
  costs about twice as much at this size), ``psnr`` on RGB in dB, capped at
  ``PSNR_CAP_DB`` (100 dB) so identical images give 100, never ``inf``; ``l1`` = mean absolute RGB
  difference in [0, 1]. Preservation is a goal only for operations that keep the source
  (``PRESERVING_OPERATIONS``); for ``character_reference`` and ``remove_background`` the same numbers
  are reported as descriptive (``higher_is_better=None``).
* **Mask** (white = edit region; a mask whose edit region is transparent is composited on white and so
  reads the same): ``ssim_outside_mask`` and ``l1_outside_mask`` measure preservation outside,
  ``change_inside_mask`` the mean absolute change inside (descriptive: 0 means nothing happened where
  the edit was asked for, but more is not better).
* **zoom_out** is not compared pixel-for-pixel: the output should *contain* the source, smaller. The
  source is searched for inside the output by multi-scale normalised cross-correlation (OpenCV
  ``matchTemplate``, ``TM_CCOEFF_NORMED`` on luma; a coarse pass at 256 px over scales 0.2–1.0 of the
  output width, then neighbouring scales near the coarse position at up to 1024 px). ``zoom_consistency`` is the best correlation (−1…1; ≳ 0.9 means
  the source is there), ``zoom_scale`` the fraction of the output's width it occupies. ``ssim``,
  ``psnr`` and ``l1`` are then computed between the source and the *matched region* of the output
  (cropped at full resolution), i.e. how well the original survived inside the wider canvas. A mask
  is not used for zoom_out (the canvas outside the source is new by design).
* **No-reference quality** of the output: ``sharpness`` = variance of the Laplacian of the 8-bit luma
  (0–255, the scale of the common "below ~100 looks blurred" rule of thumb) after resizing the output to a long side of ``SHARPNESS_LONG_SIDE_PX`` (512 px, up or down).
  Laplacian variance grows as an image is downscaled (edges get steeper per pixel), so measuring every
  output at one display size makes a 2048-px and a 1024-px render of the same picture score alike;
  noise also raises it, so read it together with ``noise_sigma``. ``clipping`` = fraction of pixels
  with any channel at 0 or 255 (full resolution). ``noise_sigma`` = ``skimage.restoration.
  estimate_sigma`` (wavelet MAD estimator, averaged over RGB) on a native-resolution centre crop of at
  most ``NOISE_CROP_PX`` square, in 8-bit levels (0–255); resizing would average the noise away.

What the null edit games
------------------------
The identity baseline (output = input) scores perfectly on every preservation metric: ``ssim = 1``,
``psnr = PSNR_CAP_DB``, ``l1 = 0``, ``ssim_outside_mask = 1``, and ``change_inside_mask = 0``. So
preservation metrics alone reward doing nothing. ``no_change`` flags it: it is 1 when the output is
practically the source (``l1 < NO_CHANGE_MAX_L1`` and ``ssim > NO_CHANGE_MIN_SSIM`` on the direct
comparison at the working size — for zoom_out too, where it means the model did not zoom out), and a
report should treat such an output as a failed edit, not a perfect one.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import estimate_sigma

from evalkit.catalog.spec import normalise_operation
from evalkit.errors import ImageError
from evalkit.images import decode_output, fit_within, read_image_file, to_rgb

AUTO_METRICS_VERSION = "auto-1"

WORKING_LONG_SIDE_PX = 512
SHARPNESS_LONG_SIDE_PX = 512
NOISE_CROP_PX = 384
PSNR_CAP_DB = 100.0
NO_CHANGE_MAX_L1 = 0.01
NO_CHANGE_MIN_SSIM = 0.98
#: operations whose output should keep the source (outside the edit); elsewhere preservation is descriptive.
PRESERVING_OPERATIONS = frozenset({"general_edit", "multi_image", "inpaint", "erase", "zoom_out"})

_SSIM_WINDOW_PX = 7  # scikit-image's default window
_ZOOM_COARSE_LONG_SIDE_PX = 256
_ZOOM_FINE_LONG_SIDE_PX = 1024
_ZOOM_MIN_SCALE = 0.2
_ZOOM_COARSE_STEPS = 28
_ZOOM_MIN_TEMPLATE_PX = 8

ImageInput = bytes | bytearray | str | os.PathLike | Image.Image


@dataclass(frozen=True)
class Metric:
    """One automatic measurement. ``higher_is_better`` is None for descriptive values."""

    name: str
    value: float | None
    higher_is_better: bool | None
    detail: str = ""


@dataclass(frozen=True, eq=False)
class PreparedSource:
    """A source decoded and converted once, for scoring many outputs of the same case.

    Scoring N models' outputs for one case with :func:`auto_metrics` would otherwise decode and
    resize the same source N times; pass ``prepare_source(src)`` instead of the bytes.
    """

    rgb: np.ndarray  # uint8 H×W×3, full resolution
    working: np.ndarray  # float32 RGB in [0,1] at the working size
    working_luma: np.ndarray  # float32 luma in [0,1] at the working size

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def working_size(self) -> tuple[int, int]:
        return int(self.working.shape[1]), int(self.working.shape[0])


def prepare_source(source: ImageInput | PreparedSource) -> PreparedSource:
    """Decode ``source`` and derive its working-size arrays. Raises :class:`ImageError` if it is unusable."""
    if isinstance(source, PreparedSource):
        return source
    rgb = np.asarray(_decode_required(source, "source image"))
    work_size = fit_within(rgb.shape[1], rgb.shape[0], WORKING_LONG_SIDE_PX, None)
    working = _resize(rgb, work_size).astype(np.float32) / 255.0
    return PreparedSource(rgb=rgb, working=working, working_luma=_luma(working))


def auto_metrics(
    source: ImageInput | PreparedSource,
    output: ImageInput | None,
    *,
    operation: str,
    mask: ImageInput | None = None,
    requested_size: tuple[int, int] | None = None,
) -> list[Metric]:
    """All automatic metrics for one (source, output) pair; see the module docstring for definitions.

    ``operation`` is a catalogue operation (``general_edit``, ``inpaint``, ``zoom_out``, …);
    ``requested_size`` is the (width, height) asked of the model, when one was. ``source`` may be a
    :class:`PreparedSource` to share one decode across many outputs. Raises
    :class:`~evalkit.errors.ImageError` for an unusable source or mask and
    :class:`~evalkit.errors.InvalidInputError` for an unknown operation; a bad *output* is a
    measurement (``decodes = 0``), not an error.
    """
    op = normalise_operation(operation)
    src = prepare_source(source)
    try:
        out_img = _decode_output(output)
    except ImageError as exc:
        return [Metric("decodes", 0.0, True, str(exc))]

    out = np.asarray(out_img)
    metrics = [Metric("decodes", 1.0, True, f"{out_img.width}×{out_img.height} px")]
    metrics += _geometry(src, out, requested_size)

    out_w = _resize(out, src.working_size).astype(np.float32) / 255.0
    preserving = op in PRESERVING_OPERATIONS
    if op == "zoom_out":
        # the direct comparison only serves no_change here; skip SSIM when L1 already rules it out
        direct = _compare(src, out_w, with_ssim=False)
        if direct.l1 < NO_CHANGE_MAX_L1:
            direct = _compare(src, out_w)
        metrics += _zoom_out(src, out)
    else:
        direct = _compare(src, out_w)
        hib = True if preserving else None
        note = "" if preserving else f"descriptive for {op}: the output is not meant to keep the source"
        metrics += [
            Metric("ssim", direct.ssim, hib, note or "luma, 7×7 window, at the working size"),
            Metric("psnr", direct.psnr, hib, note or f"RGB, capped at {PSNR_CAP_DB:g} dB"),
            Metric("l1", direct.l1, False if preserving else None, note or "mean |Δ| of RGB in [0,1]"),
        ]
        if mask is not None:
            metrics += _mask_metrics(mask, src.working_size, direct)

    is_null = direct.l1 < NO_CHANGE_MAX_L1 and (direct.ssim is None or direct.ssim > NO_CHANGE_MIN_SSIM)
    metrics.append(
        Metric(
            "no_change",
            1.0 if is_null else 0.0,
            False,
            f"1 = output is practically the source (l1={direct.l1:.4f}, ssim={_fmt(direct.ssim)}): the edit was ignored",
        )
    )
    metrics += _quality(out)
    return metrics


def as_row(metrics: list[Metric]) -> dict[str, float | None]:
    """``{name: value}`` for a DataFrame row."""
    return {m.name: m.value for m in metrics}


# -- decoding ---------------------------------------------------------------------------------------


def _load(image: ImageInput, what: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        data = read_image_file(Path(image))
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        raise ImageError(f"{what}: expected image bytes, a path or a PIL image, got {type(image).__name__}")
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    return decode_output(data)


def _decode_required(image: ImageInput, what: str) -> Image.Image:
    try:
        return to_rgb(_load(image, what))
    except ImageError as exc:
        raise ImageError(
            f"{what} cannot be used for metrics: {exc.message}", hint=exc.hint or "check the file"
        ) from None


def _decode_output(output: ImageInput | None) -> Image.Image:
    if output is None:
        raise ImageError("no output image")
    try:
        return to_rgb(_load(output, "output image"))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # a PIL image that fails on conversion
        raise ImageError(f"output image cannot be decoded ({type(exc).__name__}: {exc})") from None


# -- geometry --------------------------------------------------------------------------------------


def _geometry(src: PreparedSource, out: np.ndarray, requested_size: tuple[int, int] | None) -> list[Metric]:
    out_h, out_w = out.shape[:2]
    if requested_size is not None:
        req_w, req_h = (int(v) for v in requested_size)
        if req_w <= 0 or req_h <= 0:
            raise ImageError(f"requested_size must be positive (width, height), got {requested_size!r}")
        basis = f"requested {req_w}×{req_h}"
    else:
        req_w, req_h = src.width, src.height
        basis = f"source {req_w}×{req_h}"
    ar_err = abs(math.log((out_w / out_h) / (req_w / req_h)))
    metrics = [
        Metric("output_width", float(out_w), None, "px"),
        Metric("output_height", float(out_h), None, "px"),
        Metric("aspect_ratio_error", ar_err, False, f"|ln(output AR / {basis} AR)|"),
    ]
    if requested_size is not None:
        rel = (out_w * out_h - req_w * req_h) / (req_w * req_h)
        metrics.append(
            Metric("size_error", abs(rel), False, f"output {out_w * out_h / 1e6:.2f} MP vs {basis} ({rel:+.1%} pixels)")
        )
    return metrics


# -- comparisons -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Comparison:
    ssim: float | None
    ssim_map: np.ndarray | None
    psnr: float
    l1: float
    abs_diff: np.ndarray  # |Δ| per pixel and channel, float32 in [0, 1]


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``arr`` resized to (width, height): area-averaging down, bicubic up."""
    h, w = arr.shape[:2]
    if (w, h) == tuple(size):
        return arr
    shrinking = size[0] * size[1] < w * h
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def _luma(rgb01: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb01, cv2.COLOR_RGB2GRAY)


def _compare(src: PreparedSource, b: np.ndarray, *, with_ssim: bool = True) -> _Comparison:
    """SSIM / PSNR / L1 between the source and a float RGB image in [0, 1] at its working size."""
    a = src.working
    ssim = ssim_map = None
    if with_ssim and min(a.shape[:2]) >= _SSIM_WINDOW_PX:
        ssim, ssim_map = structural_similarity(src.working_luma, _luma(b), data_range=1.0, full=True)
        ssim = float(ssim)
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        psnr = float(peak_signal_noise_ratio(a, b, data_range=1.0))
    abs_diff = cv2.absdiff(a, b)
    l1 = float(np.mean(cv2.mean(abs_diff)[:3]))
    return _Comparison(ssim, ssim_map, min(psnr, PSNR_CAP_DB), l1, abs_diff)


def _mask_metrics(mask: ImageInput, work_size: tuple[int, int], direct: _Comparison) -> list[Metric]:
    mask_img = _decode_required(mask, "mask image").convert("L")
    inside = _resize(np.asarray(mask_img), work_size) >= 128
    outside = ~inside
    frac = float(inside.mean())
    metrics: list[Metric] = []
    if outside.any():
        ssim_out = None
        if direct.ssim_map is not None:
            # skimage's mean SSIM drops a border of half the window; do the same here.
            pad = (_SSIM_WINDOW_PX - 1) // 2
            valid = np.zeros_like(outside)
            valid[pad:-pad, pad:-pad] = True
            sel = outside & valid
            ssim_out = float(direct.ssim_map[sel].mean()) if sel.any() else None
        metrics += [
            Metric(
                "ssim_outside_mask", ssim_out, True, f"preservation outside the edit region ({1 - frac:.0%} of image)"
            ),
            Metric("l1_outside_mask", float(direct.abs_diff[outside].mean()), False, "mean |Δ| outside, [0,1]"),
        ]
    if inside.any():
        change = float(direct.abs_diff[inside].mean())
        why = f"mean |Δ| inside the edit region ({frac:.0%} of image); 0 = nothing changed there"
    else:
        change, why = None, "mask has no white (edit) pixels"
    metrics.append(Metric("change_inside_mask", change, None, why))
    return metrics


# -- zoom out --------------------------------------------------------------------------------------


def _zoom_out(src: PreparedSource, out: np.ndarray) -> list[Metric]:
    if float(src.working_luma.std()) < 1e-3:
        why = "source is flat: nothing to find in the output"
        return [Metric("zoom_consistency", None, True, why), Metric("zoom_scale", None, None, why)]
    out_luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    src_aspect = src.height / src.width

    # coarse: every scale over the whole output at 256 px
    coarse_size = fit_within(out.shape[1], out.shape[0], _ZOOM_COARSE_LONG_SIDE_PX, None)
    coarse = _resize(out_luma, coarse_size).astype(np.float32) / 255.0
    scales = np.geomspace(_ZOOM_MIN_SCALE, 1.0, _ZOOM_COARSE_STEPS)
    best = _best_match(coarse, src, src_aspect, scales * coarse_size[0])
    if best is None:
        why = "output too small to search"
        return [Metric("zoom_consistency", None, True, why), Metric("zoom_scale", None, None, why)]
    grid_w = coarse_size[0]

    # refine near the coarse hit: neighbouring scales at 512 px, then ±2 px of width at up to 1024 px
    step = float(scales[1] / scales[0])
    for long_side, spread in ((WORKING_LONG_SIDE_PX, None), (_ZOOM_FINE_LONG_SIDE_PX, 2)):
        size = fit_within(out.shape[1], out.shape[0], long_side, None)
        if size[0] <= grid_w:
            continue
        image = _resize(out_luma, size).astype(np.float32) / 255.0
        r = size[0] / grid_w
        if spread is None:
            widths = best[1] * step ** np.linspace(-0.6, 0.6, 9) * size[0]
        else:
            widths = (np.arange(-spread, spread + 1) + best[3][0] * r).astype(np.float64)
        near = (int(round(best[2][0] * r)), int(round(best[2][1] * r)), int(math.ceil(2 * r)) + 2)
        found = _best_match(image, src, src_aspect, widths, near=near)
        if found is None:
            break
        best, grid_w = found, size[0]

    corr, scale, (x, y), (tw, th) = best
    # the matched region, at the output's full resolution, compared with the source at its working size
    f = out.shape[1] / grid_w
    x0, y0 = int(round(x * f)), int(round(y * f))
    x1, y1 = min(out.shape[1], int(round((x + tw) * f))), min(out.shape[0], int(round((y + th) * f)))
    region = _resize(out[y0:y1, x0:x1], src.working_size).astype(np.float32) / 255.0
    cmp = _compare(src, region)
    where = f"source found at {scale:.3f} of the output width, at ({x0}, {y0}) px"
    note = f"zoom_out: source vs the matched region of the output ({where})"
    return [
        Metric("zoom_consistency", corr, True, f"best normalised cross-correlation; {where}"),
        Metric("zoom_scale", scale, None, "fraction of the output's width the source occupies"),
        Metric("ssim", cmp.ssim, True, note),
        Metric("psnr", cmp.psnr, True, note),
        Metric("l1", cmp.l1, False, note),
    ]


def _best_match(
    image: np.ndarray,
    src: PreparedSource,
    src_aspect: float,
    widths: np.ndarray,
    near: tuple[int, int, int] | None = None,
) -> tuple[float, float, tuple[int, int], tuple[int, int]] | None:
    """Best (correlation, scale, top-left, template size) over source templates ``widths`` px wide.

    ``near=(x, y, margin)`` restricts the search to top-left corners within ``margin`` px of (x, y).
    """
    ih, iw = image.shape
    best = None
    for tw in np.unique(np.round(widths).astype(int)):
        tw = int(tw)
        th = int(round(tw * src_aspect))
        if tw < _ZOOM_MIN_TEMPLATE_PX or th < _ZOOM_MIN_TEMPLATE_PX or tw > iw or th > ih:
            continue
        ox = oy = 0
        window = image
        if near is not None:
            nx, ny, margin = near
            ox, oy = max(0, nx - margin), max(0, ny - margin)
            window = image[oy : min(ih, ny + th + margin), ox : min(iw, nx + tw + margin)]
            if window.shape[0] < th or window.shape[1] < tw:
                continue
        template = _resize(_source_luma(src, tw), (tw, th))
        if float(template.std()) < 1e-4:
            continue
        res = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
        np.nan_to_num(res, copy=False, nan=-1.0, posinf=-1.0, neginf=-1.0)  # flat windows have no correlation
        _, max_val, _, max_loc = cv2.minMaxLoc(res)
        corr = float(min(1.0, max(-1.0, max_val)))
        if best is None or corr > best[0]:
            best = (corr, tw / iw, (int(max_loc[0]) + ox, int(max_loc[1]) + oy), (tw, th))
    return best


def _source_luma(src: PreparedSource, width_px: int) -> np.ndarray:
    """The source's luma to shrink a template from: the working copy unless the template is larger."""
    if width_px <= src.working_luma.shape[1]:
        return src.working_luma
    return cv2.cvtColor(src.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


# -- no-reference quality --------------------------------------------------------------------------


def _quality(out: np.ndarray) -> list[Metric]:
    h, w = out.shape[:2]
    luma = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    scale = SHARPNESS_LONG_SIDE_PX / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    luma_s = _resize(luma, size).astype(np.float32)
    sharpness = float(cv2.Laplacian(luma_s, cv2.CV_32F).var())

    in_range = cv2.inRange(out, (1, 1, 1), (254, 254, 254))
    clipping = 1.0 - cv2.countNonZero(in_range) / (w * h)

    c = NOISE_CROP_PX
    y0, x0 = max(0, (h - c) // 2), max(0, (w - c) // 2)
    crop = out[y0 : y0 + c, x0 : x0 + c].astype(np.float32)
    noise = None
    if min(crop.shape[:2]) >= 8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            noise = float(estimate_sigma(crop, channel_axis=-1, average_sigmas=True))
    return [
        Metric(
            "sharpness",
            sharpness,
            True,
            f"variance of the Laplacian of 8-bit luma at a long side of {SHARPNESS_LONG_SIDE_PX} px (noise raises it too)",
        ),
        Metric("clipping", clipping, False, "fraction of pixels with a channel at 0 or 255"),
        Metric("noise_sigma", noise, False, f"wavelet estimate, 8-bit levels, native-resolution centre crop ≤{c} px"),
    ]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
