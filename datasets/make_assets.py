"""Regenerate the images and masks of the bundled suites (``datasets/core`` and ``datasets/smoke``).

Run with the project's virtualenv from the repository root::

    /work/venv/bin/python datasets/make_assets.py

Why a script: every pixel in the bundled suites must have a known, free licence and anyone must be
able to see (and redo) how it was made. Photos come from the sample data that scikit-image ships
inside its package (read from the installed files, nothing is downloaded; licences copied verbatim
into ``core/LICENSES.md``); everything else (signs, the character sheet, masks) is drawn here with
PIL/numpy and dedicated to the public domain (CC0) by the evalkit authors.

The output is deterministic for a given Pillow / scikit-image / libjpeg: no randomness, PIL's own
bundled default font (no system fonts), fixed JPEG quality. No CJK font ships with Pillow or this
machine, so the second sign is English too (the Chinese text_change case asks for Chinese text on it).
The ``suite.toml`` files are written by hand and are not touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data as skdata

HERE = Path(__file__).resolve().parent
CORE = HERE / "core"
SMOKE = HERE / "smoke"

#: longest side of bundled photos (keeps the suites small and the uploads cheap)
CORE_MAX_SIDE_PX = 512
SMOKE_MAX_SIDE_PX = 256
JPEG_QUALITY = 88

# Mask shapes in the ORIGINAL scikit-image pixel coordinates; they are scaled with the photo.
# (kind, points): "ellipse"/"rect" take a box (left, top, right, bottom); "polygon" takes (x, y, x, y, ...).
ASTRONAUT_PATCH = [("ellipse", (128, 343, 212, 427))]  # the round mission patch on the suit
COFFEE_CUP_INSIDE = [("ellipse", (203, 95, 373, 195))]  # the espresso inside the cup
COFFEE_SPOON = [
    ("ellipse", (322, 238, 410, 330)),  # spoon bowl
    ("polygon", (368, 252, 392, 256, 428, 72, 404, 60)),  # spoon handle, leaning on the cup
]
ROCKET_LEFT_TOWER = [("rect", (0, 0, 98, 427))]  # the lattice tower on the far left


def photo(name: str) -> Image.Image:
    """A scikit-image sample photo as a PIL image (RGB, or L for grayscale ones)."""
    arr = getattr(skdata, name)()
    return Image.fromarray(arr)


def fit(img: Image.Image, max_side_px: int) -> Image.Image:
    """Downscale so the longest side is ``max_side_px`` (never upscales)."""
    scale = max_side_px / max(img.size)
    if scale >= 1:
        return img.copy()
    size = (round(img.width * scale), round(img.height * scale))
    return img.resize(size, Image.Resampling.LANCZOS)


def mask_for(original_size: tuple[int, int], size: tuple[int, int], shapes: list[tuple[str, tuple]]) -> Image.Image:
    """A white-on-black mask (white = region to edit) at ``size``, from shapes drawn on the original."""
    sx, sy = size[0] / original_size[0], size[1] / original_size[1]
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for kind, coords in shapes:
        scaled = [round(v * (sx if i % 2 == 0 else sy)) for i, v in enumerate(coords)]
        {"ellipse": draw.ellipse, "rect": draw.rectangle, "polygon": draw.polygon}[kind](scaled, fill=255)
    return mask


def font(size_px: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled default font at a given size (no dependency on system fonts)."""
    return ImageFont.load_default(size=size_px)


def centred_text(draw: ImageDraw.ImageDraw, centre: tuple[int, int], text: str, size_px: int, fill) -> None:
    draw.text(centre, text, font=font(size_px), fill=fill, anchor="mm")


def brick_wall(size: tuple[int, int], tint: tuple[int, int, int]) -> Image.Image:
    """scikit-image's CC0 brick texture, cropped and tinted, as a storefront wall."""
    bricks = np.rot90(skdata.brick())  # the sample is stored rotated by 90°: courses run horizontally again
    gray = np.asarray(bricks, dtype=np.float32)[: size[1], : size[0]] / 255.0
    rgb = np.stack([gray * c for c in tint], axis=-1)
    return Image.fromarray(np.clip(rgb * 1.6, 0, 255).astype(np.uint8), "RGB")


def sign_grand_opening() -> Image.Image:
    """A wooden shop sign on a brick wall: the English text_change case."""
    img = brick_wall((512, 384), (170, 95, 75))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((56, 92, 456, 292), radius=18, fill=(101, 66, 38), outline=(214, 174, 84), width=8)
    centred_text(draw, (256, 162), "GRAND OPENING", 44, (248, 236, 210))
    centred_text(draw, (256, 224), "SATURDAY 10 AM", 30, (214, 174, 84))
    return img


def sign_fresh_coffee() -> Image.Image:
    """A café chalkboard sign on a brick wall: the Chinese text_change case rewrites its text."""
    img = brick_wall((512, 384), (150, 110, 95))
    draw = ImageDraw.Draw(img)
    draw.rectangle((76, 60, 436, 324), fill=(32, 48, 40), outline=(150, 110, 70), width=12)
    centred_text(draw, (256, 140), "FRESH COFFEE", 46, (245, 245, 240))
    centred_text(draw, (256, 210), "ESPRESSO  LATTE  TEA", 24, (240, 220, 150))
    centred_text(draw, (256, 262), "OPEN DAILY 7-19", 22, (200, 220, 210))
    return img


def robot(draw: ImageDraw.ImageDraw, cx: int, top: int, side: bool = False) -> None:
    """The mascot "Bolt": teal head, orange body, red antenna ball; front or side view."""
    teal, orange, dark, red, white = (43, 179, 163), (242, 140, 40), (40, 44, 52), (220, 50, 47), (255, 255, 255)
    hw = 34 if side else 48  # half width of the head
    draw.line((cx, top, cx, top + 22), fill=dark, width=4)
    draw.ellipse((cx - 9, top - 9, cx + 9, top + 9), fill=red)
    draw.rounded_rectangle((cx - hw, top + 22, cx + hw, top + 100), radius=16, fill=teal, outline=dark, width=3)
    eyes = [cx + 14] if side else [cx - 20, cx + 20]
    for ex in eyes:
        draw.ellipse((ex - 12, top + 46, ex + 12, top + 70), fill=white, outline=dark, width=2)
        draw.ellipse((ex - 4 + (6 if side else 0), top + 53, ex + 4 + (6 if side else 0), top + 63), fill=dark)
    bw = 30 if side else 44
    draw.rounded_rectangle((cx - bw, top + 108, cx + bw, top + 200), radius=12, fill=orange, outline=dark, width=3)
    if not side:
        draw.ellipse((cx - 10, top + 140, cx + 10, top + 160), fill=teal, outline=dark, width=2)  # chest light
    if side:
        draw.line((cx, top + 120, cx + 26, top + 176), fill=dark, width=8)
    else:
        draw.line((cx - bw, top + 120, cx - bw - 26, top + 176), fill=dark, width=8)
        draw.line((cx + bw, top + 120, cx + bw + 26, top + 176), fill=dark, width=8)
    legs = [cx] if side else [cx - 20, cx + 20]
    for lx in legs:
        draw.rectangle((lx - 7, top + 200, lx + 7, top + 236), fill=dark)
        draw.rounded_rectangle((lx - 16, top + 232, lx + 16 + (10 if side else 0), top + 246), radius=5, fill=dark)


def character_sheet() -> Image.Image:
    """A simple character sheet (front + side + palette) for character_reference and multi_image cases."""
    img = Image.new("RGB", (512, 384), (250, 248, 242))
    draw = ImageDraw.Draw(img)
    centred_text(draw, (256, 26), "BOLT - character sheet", 26, (40, 44, 52))
    robot(draw, 150, 70)
    robot(draw, 360, 70, side=True)
    centred_text(draw, (150, 336), "front", 18, (90, 90, 90))
    centred_text(draw, (360, 336), "side", 18, (90, 90, 90))
    for i, colour in enumerate([(43, 179, 163), (242, 140, 40), (220, 50, 47), (40, 44, 52)]):
        draw.rectangle((168 + i * 46, 352, 204 + i * 46, 374), fill=colour, outline=(40, 44, 52))
    return img


def living_room() -> Image.Image:
    """A plain living room (walls, floor, window, sofa, lamp, rug): the scene of the colour/lighting session,
    drawn simply so that every later turn's change (wall colour, light, night outside) is easy to see."""
    img = Image.new("RGB", (512, 384), (226, 218, 204))  # warm off-white walls
    draw = ImageDraw.Draw(img)
    draw.polygon((0, 270, 512, 270, 512, 384, 0, 384), fill=(150, 111, 74))  # wooden floor
    for x in range(-40, 560, 48):  # floor boards in perspective
        draw.line((256 + (x - 256) * 0.55, 270, x, 384), fill=(128, 92, 60), width=2)
    draw.rectangle((0, 262, 512, 270), fill=(245, 242, 236))  # skirting board
    draw.rectangle((300, 52, 452, 190), fill=(150, 200, 236), outline=(250, 250, 250), width=8)  # window, day sky
    draw.line((376, 52, 376, 190), fill=(250, 250, 250), width=6)
    draw.line((300, 121, 452, 121), fill=(250, 250, 250), width=6)
    draw.ellipse((318, 150, 360, 186), fill=(96, 160, 90))  # a tree top outside
    draw.rounded_rectangle((60, 190, 280, 276), radius=14, fill=(70, 96, 140))  # sofa
    draw.rounded_rectangle((72, 160, 268, 214), radius=14, fill=(82, 110, 156))  # its back
    draw.rounded_rectangle((96, 178, 150, 214), radius=8, fill=(232, 196, 90))  # a cushion
    draw.line((470, 110, 470, 262), fill=(60, 60, 60), width=5)  # floor lamp
    draw.polygon((446, 110, 494, 110, 484, 76, 456, 76), fill=(240, 232, 206))
    draw.ellipse((120, 300, 392, 360), fill=(176, 72, 64))  # rug
    return img


def make_core_sessions() -> None:
    """The images only the core suite's sessions use (the sessions themselves are in core/suite.toml)."""
    save(living_room(), CORE / "images" / "living-room.png")


def save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        img.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        img.save(path, format="PNG", optimize=True)
    print(f"{path.relative_to(HERE)}  {img.width}x{img.height}  {path.stat().st_size / 1024:.0f} KiB")


def make_core() -> None:
    originals = {name: photo(name) for name in ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    fitted = {name: fit(img, CORE_MAX_SIDE_PX) for name, img in originals.items()}
    for name, img in fitted.items():
        save(img, CORE / "images" / f"{name}.jpg")
    save(sign_grand_opening(), CORE / "images" / "sign-grand-opening.png")
    save(sign_fresh_coffee(), CORE / "images" / "sign-fresh-coffee.png")
    save(character_sheet(), CORE / "images" / "character-sheet-bolt.png")
    masks = {
        "astronaut-patch": ("astronaut", ASTRONAUT_PATCH),
        "coffee-cup-inside": ("coffee", COFFEE_CUP_INSIDE),
        "coffee-spoon": ("coffee", COFFEE_SPOON),
        "rocket-left-tower": ("rocket", ROCKET_LEFT_TOWER),
    }
    for mask_name, (photo_name, shapes) in masks.items():
        mask = mask_for(originals[photo_name].size, fitted[photo_name].size, shapes)
        save(mask, CORE / "masks" / f"{mask_name}.png")


# ---- the decision set: drawn scenes and masks that give every operation ≥ 8 core cases ----------------
# (issue 23: a suite big enough for the tier rule to decide). Every object's box is a constant, so the
# masks below cover exactly what the cases ask to repaint or erase.

DESK_BOOK = (300, 214, 410, 262)
DESK_PLANT = (404, 118, 468, 262)
DESK_LAMP = (60, 70, 190, 262)
MUG_BODY = (176, 120, 336, 300)
MUG_LOGO = (220, 170, 292, 242)
MUG_TAG = (350, 250, 420, 290)
LAKE_SUN = (356, 40, 436, 120)
LAKE_WATER = (0, 262, 512, 384)
LAKE_BOAT = (120, 282, 216, 334)
LAKE_BIRDS = (150, 40, 300, 100)
SIGN_SECOND_LINE = (96, 204, 416, 246)
SIGN_LAST_LINE = (110, 248, 402, 278)
SHEET_PALETTE = (160, 346, 356, 380)


def desk_scene() -> Image.Image:
    """A flat illustration of a wooden desk with a lamp, a book and a potted plant, against a pale wall."""
    img = Image.new("RGB", (512, 384), (226, 232, 238))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 262, 512, 384), fill=(150, 104, 64))  # desk top
    d.rectangle((0, 262, 512, 270), fill=(120, 80, 46))
    lx0, ly0, lx1, ly1 = DESK_LAMP
    d.rectangle((lx0 + 20, ly1 - 12, lx0 + 110, ly1), fill=(40, 44, 52))  # lamp base
    d.line((lx0 + 64, ly1 - 12, lx0 + 40, ly0 + 70), fill=(40, 44, 52), width=8)  # arm
    d.line((lx0 + 40, ly0 + 70, lx0 + 96, ly0 + 24), fill=(40, 44, 52), width=8)
    d.polygon((lx0 + 70, ly0 + 10, lx1, ly0 + 40, lx0 + 110, ly0 + 80), fill=(230, 190, 40))  # shade
    bx0, by0, bx1, by1 = DESK_BOOK
    d.rectangle((bx0, by0 + 12, bx1, by1), fill=(180, 40, 50), outline=(90, 20, 25), width=3)  # book
    d.rectangle((bx0 + 6, by0, bx1 - 6, by0 + 14), fill=(245, 240, 225))  # pages
    px0, py0, px1, py1 = DESK_PLANT
    d.polygon((px0 + 8, py1 - 60, px1 - 8, py1 - 60, px1 - 16, py1, px0 + 16, py1), fill=(200, 110, 70))  # pot
    for dx, h in ((-18, 70), (0, 110), (18, 80)):
        cx = (px0 + px1) // 2 + dx
        d.ellipse((cx - 12, py1 - 60 - h, cx + 12, py1 - 50), fill=(60, 150, 80))
    return img


def mug_product() -> Image.Image:
    """A white mug with a blue logo and a paper price tag, product-shot style on a soft grey backdrop."""
    img = Image.new("RGB", (512, 384), (236, 236, 238))
    d = ImageDraw.Draw(img)
    d.ellipse((120, 286, 392, 324), fill=(210, 210, 214))  # shadow
    x0, y0, x1, y1 = MUG_BODY
    d.rounded_rectangle((x0, y0, x1, y1), radius=18, fill=(252, 252, 250), outline=(170, 170, 176), width=3)
    d.ellipse((x1 - 24, y0 + 40, x1 + 44, y0 + 120), outline=(170, 170, 176), width=14)  # handle
    d.ellipse((x0, y0 - 14, x1, y0 + 14), fill=(232, 232, 230), outline=(170, 170, 176), width=3)
    lx0, ly0, lx1, ly1 = MUG_LOGO
    d.ellipse((lx0, ly0, lx1, ly1), fill=(40, 90, 200))
    centred_text(d, ((lx0 + lx1) // 2, (ly0 + ly1) // 2), "EK", 30, (255, 255, 255))
    tx0, ty0, tx1, ty1 = MUG_TAG
    d.rectangle((tx0, ty0, tx1, ty1), fill=(250, 240, 200), outline=(150, 130, 90), width=2)
    centred_text(d, ((tx0 + tx1) // 2, (ty0 + ty1) // 2), "$12", 20, (60, 50, 40))
    return img


def lake_poster() -> Image.Image:
    """A flat travel-poster landscape: sky, sun, birds, two mountains, a lake with a small sailing boat."""
    img = Image.new("RGB", (512, 384))
    d = ImageDraw.Draw(img)
    for y in range(262):  # sky gradient
        t = y / 262
        d.line((0, y, 512, y), fill=(int(120 + 110 * t), int(180 + 50 * t), int(235 + 10 * t)))
    d.ellipse(LAKE_SUN, fill=(255, 214, 90))
    bx0, by0, _, _ = LAKE_BIRDS
    for i, (x, y) in enumerate(((0, 20), (50, 0), (95, 30))):
        cx, cy = bx0 + x + 20, by0 + y + 15
        d.line((cx - 14, cy - 6 + i, cx, cy, cx + 14, cy - 6 - i), fill=(50, 60, 80), width=3)
    d.polygon((-40, 262, 170, 90, 360, 262), fill=(90, 110, 140))
    d.polygon((200, 262, 380, 120, 560, 262), fill=(70, 95, 125))
    d.polygon((150, 115, 170, 90, 190, 115), fill=(245, 248, 250))  # snow cap
    d.rectangle(LAKE_WATER, fill=(60, 130, 180))
    for y in range(280, 384, 14):
        d.line((20 + (y * 7) % 60, y, 160 + (y * 7) % 60, y), fill=(110, 170, 210), width=2)
    bx0, by0, bx1, by1 = LAKE_BOAT
    d.polygon((bx0, by1 - 18, bx1, by1 - 18, bx1 - 14, by1, bx0 + 14, by1), fill=(150, 60, 40))  # hull
    d.polygon(((bx0 + bx1) // 2, by0, (bx0 + bx1) // 2, by1 - 22, bx1 - 10, by1 - 22), fill=(250, 250, 245))
    return img


def make_core_decision_set() -> None:
    """The drawn scenes and masks of the cases that give every operation at least 8 core cases."""
    scenes = {"desk": desk_scene(), "mug": mug_product(), "lake-poster": lake_poster()}
    for name, img in scenes.items():
        save(img, CORE / "images" / f"{name}.png")
    size = (512, 384)  # every drawn scene and sign (the boxes above are in these pixels)
    masks = {
        "desk-book": [("rect", DESK_BOOK)],
        "desk-plant": [("rect", DESK_PLANT)],
        "desk-lamp": [("rect", DESK_LAMP)],
        "mug-logo": [("ellipse", MUG_LOGO)],
        "mug-tag": [("rect", MUG_TAG)],
        "lake-sun": [("ellipse", LAKE_SUN)],
        "lake-water": [("rect", LAKE_WATER)],
        "lake-boat": [("rect", LAKE_BOAT)],
        "lake-birds": [("rect", LAKE_BIRDS)],
        "sign-second-line": [("rect", SIGN_SECOND_LINE)],
        "sign-last-line": [("rect", SIGN_LAST_LINE)],
        "sheet-palette": [("rect", SHEET_PALETTE)],
    }
    for mask_name, shapes in masks.items():
        save(mask_for(size, size, shapes), CORE / "masks" / f"{mask_name}.png")


def make_smoke() -> None:
    chelsea = fit(photo("chelsea"), SMOKE_MAX_SIDE_PX)
    coffee_original = photo("coffee")
    coffee = fit(coffee_original, SMOKE_MAX_SIDE_PX)
    rocket = fit(photo("rocket"), SMOKE_MAX_SIDE_PX)
    save(chelsea, SMOKE / "images" / "chelsea.jpg")
    save(coffee, SMOKE / "images" / "coffee.jpg")
    save(rocket, SMOKE / "images" / "rocket.jpg")
    save(mask_for(coffee_original.size, coffee.size, COFFEE_CUP_INSIDE), SMOKE / "masks" / "coffee-cup-inside.png")


if __name__ == "__main__":
    make_core()
    make_core_decision_set()
    make_core_sessions()
    make_smoke()
