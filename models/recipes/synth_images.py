"""Off-screen renders of synthetic stone models on a scanner plate, with exact label masks.

Each seed gives one scene: an arch from :mod:`models.recipes.synth_arch`, stone colours, plate and
background, lights, a camera (occlusal to tilted, the model covering 25-70 % of the frame at a
random place) and camera effects (exposure, white balance, blur, noise, JPEG). The label mask
comes from a second render of the same camera with flat unlit class colours and no
anti-aliasing, so image and mask line up pixel for pixel. Needs an OpenGL context (an X display
such as Xvfb, or VTK's EGL fallback).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np
import pyvista as pv
from PIL import Image

from app.core.fileio import atomic_write
from models.recipes.synth_arch import Arch, make_arch

FULL_SIZE = (1400, 1600)
"""(rows, cols) of a model-scan camera image."""

COVERAGE_RANGE = (0.25, 0.70)
GENERATOR_VERSION = "2"
"""Bumped whenever a change alters the renders, so cached training data is re-rendered."""
CLASS_NAMES = ("background", "gingiva", "tooth")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _stone_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gingiva and tooth stone colours (RGB 0..1): pink stone mostly, other gypsum hues too."""
    r = rng.random()
    if r < 0.55:
        gum = _hsv(rng.uniform(-0.05, 0.03), rng.uniform(0.22, 0.5), rng.uniform(0.72, 0.95))
    elif r < 0.7:
        gum = _hsv(rng.uniform(0.06, 0.12), rng.uniform(0.2, 0.45), rng.uniform(0.7, 0.92))
    elif r < 0.82:
        gum = _hsv(rng.uniform(0.53, 0.62), rng.uniform(0.18, 0.4), rng.uniform(0.6, 0.88))
    elif r < 0.92:
        gum = _hsv(rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.35), rng.uniform(0.6, 0.88))
    else:
        gum = _hsv(rng.uniform(0.9, 1.0), rng.uniform(0.15, 0.3), rng.uniform(0.8, 0.95))
    tooth = _hsv(rng.uniform(0.08, 0.16), rng.uniform(0.02, 0.2), rng.uniform(0.86, 1.0))
    return gum, tooth


def _surround_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Plate and background colours (RGB 0..1).

    Mostly dark to mid grey, as scanner plates are; but also light grey, and tinted in the
    stone hues themselves (a pink plate under a blue model, say), so that the network has to
    tell gingiva from its surroundings by shape and shading, not by colour alone.
    """

    def pick(dark: tuple[float, float]) -> np.ndarray:
        r = rng.random()
        if r < 0.5:
            return np.clip(rng.uniform(*dark) * (1 + rng.normal(0, 0.05, 3)), 0, 1)
        if r < 0.75:
            return np.clip(rng.uniform(0.55, 0.85) * (1 + rng.normal(0, 0.04, 3)), 0, 1)
        hue_source, _ = _stone_colours(rng)
        return np.clip(hue_source * rng.uniform(0.6, 1.05), 0, 1)

    return pick((0.12, 0.55)), pick((0.0, 0.25))


def _vertex_colours(
    rng: np.random.Generator,
    points: np.ndarray,
    base: np.ndarray,
    amount: float,
    frequency: float = 1.0,
) -> np.ndarray:
    """Mottling of a stone colour (stripes, with a high ``frequency``), as uint8 RGB per vertex."""
    field = np.zeros(len(points))
    for _ in range(4):
        k = rng.normal(size=3) * rng.uniform(0.1, 0.6) * frequency
        field += np.sin(points @ k + rng.uniform(0, 2 * np.pi))
    shade = 1.0 + amount * field / 2.0
    return (np.clip(base[None, :] * shade[:, None], 0, 1) * 255).astype(np.uint8)


def _camera_basis(elev: float, azim: float, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """Direction from focal point to camera, and view-up, for angles in degrees."""
    e, a, r = np.radians([elev, azim, roll])
    d = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    ref = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.95 else np.array([-np.cos(a), -np.sin(a), 0])
    up = ref - d * (ref @ d)
    up /= np.linalg.norm(up)
    side = np.cross(d, up)
    up = np.cos(r) * up + np.sin(r) * side
    return d, up


def _mask_from_render(rgb: np.ndarray) -> np.ndarray:
    """Class ids from the flat-colour pass: red = gingiva, green = tooth, else background."""
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[rgb[..., 0] > 127] = 1
    mask[rgb[..., 1] > 127] = 2
    return mask


class _Scene:
    """The plotter with both actor sets: realistic (lit, coloured) and flat (class colours)."""

    def __init__(self, arch: Arch, rng: np.random.Generator, size: tuple[int, int]) -> None:
        h, w = size
        self.size = size
        self.pl = pv.Plotter(off_screen=True, window_size=(w, h))
        self.pl.disable_anti_aliasing()
        gum, tooth = _stone_colours(rng)
        plate_rgb, self.bg = _surround_colours(rng)
        plate_radius = arch.radius * rng.uniform(1.3, 2.5)
        side = pv.Cylinder(
            center=(arch.center[0], arch.center[1], -1.55),
            direction=(0, 0, 1),
            radius=plate_radius,
            height=3.0,
            resolution=96,
            capping=False,
        )
        top = pv.Disc(
            center=(arch.center[0], arch.center[1], -0.05),
            inner=0.0,
            outer=plate_radius,
            normal=(0, 0, 1),
            r_res=48,
            c_res=192,
        )
        plate = (side.triangulate().subdivide(2) + top.triangulate()).clean()
        texture = rng.uniform(0.0, 0.2), 1.0
        if rng.random() < 0.3:
            texture = rng.uniform(0.1, 0.35), rng.uniform(3.0, 10.0)
        mat = dict(
            ambient=rng.uniform(0.1, 0.3),
            diffuse=rng.uniform(0.6, 0.9),
            specular=rng.uniform(0.0, 0.25),
            specular_power=rng.uniform(5.0, 25.0),
            smooth_shading=True,
            rgb=True,
        )
        pl = self.pl
        self.real = [
            pl.add_mesh(
                plate,
                scalars=_vertex_colours(rng, plate.points, plate_rgb, *texture),
                **{**mat, "specular": rng.uniform(0.0, 0.5)},
            ),
            pl.add_mesh(
                arch.gingiva,
                scalars=_vertex_colours(rng, arch.gingiva.points, gum, rng.uniform(0.02, 0.1)),
                **mat,
            ),
            pl.add_mesh(
                arch.teeth,
                scalars=_vertex_colours(rng, arch.teeth.points, tooth, rng.uniform(0.0, 0.06)),
                **mat,
            ),
        ]
        flat = dict(lighting=False, smooth_shading=False)
        self.flat = [
            pl.add_mesh(plate, color=(0, 0, 0), **flat),
            pl.add_mesh(arch.gingiva, color=(255, 0, 0), **flat),
            pl.add_mesh(arch.teeth, color=(0, 255, 0), **flat),
        ]
        pl.remove_all_lights()
        pl.add_light(pv.Light(light_type="headlight", intensity=rng.uniform(0.3, 0.7)))
        for _ in range(int(rng.integers(1, 3))):
            d, _ = _camera_basis(rng.uniform(30, 85), rng.uniform(0, 360), 0)
            pl.add_light(
                pv.Light(
                    position=tuple(arch.center + d * 10 * arch.radius),
                    focal_point=tuple(arch.center),
                    intensity=rng.uniform(0.3, 0.7),
                    light_type="scene light",
                )
            )

    def render(self, realistic: bool) -> np.ndarray:
        for a in self.real:
            a.visibility = realistic
        for a in self.flat:
            a.visibility = not realistic
        self.pl.set_background(self.bg if realistic else (0.0, 0.0, 0.0))
        self.pl.render()
        img = self.pl.screenshot(return_img=True)
        return np.ascontiguousarray(img[..., :3])


def _place_camera(scene: _Scene, arch: Arch, rng: np.random.Generator) -> np.ndarray:
    """Aim the camera, then zoom and shift the image so the model covers a random share of the
    frame at a random place. Returns the final mask."""
    h, w = scene.size
    cam = scene.pl.camera
    elev = rng.uniform(40.0, 90.0) if rng.random() < 0.6 else rng.uniform(25.0, 60.0)
    d, up = _camera_basis(elev, rng.uniform(0, 360), rng.uniform(-180, 180))
    focal = arch.center + rng.normal(0, 0.05, 3) * arch.radius
    angle = 30.0
    dist = arch.radius / np.tan(np.radians(angle / 2)) * 1.3
    cam.focal_point = tuple(focal)
    cam.position = tuple(focal + d * dist)
    cam.up = tuple(up)
    cam.view_angle = angle
    scene.pl.renderer.ResetCameraClippingRange()
    target = rng.uniform(0.28, 0.62)
    mask = None
    mask = np.zeros(scene.size, np.uint8)
    for attempt in range(4):
        mask = _mask_from_render(scene.render(realistic=False))
        fg = mask > 0
        cover = float(fg.mean())
        if attempt > 0 and COVERAGE_RANGE[0] + 0.01 <= cover <= COVERAGE_RANGE[1] - 0.01:
            break
        rows, cols = np.nonzero(fg)
        if len(rows) == 0:
            raise RuntimeError("the synthetic model is not in view")
        cx0, cy0 = cam.GetWindowCenter()
        # Zoom about the current image centre, limited so the box still fits in the frame.
        ccol, crow = w / 2 * (1 - cx0), h / 2 * (1 + cy0)
        bw, bh = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
        k = min(np.sqrt(target / cover), 0.96 * w / bw, 0.96 * h / bh)
        new_angle = 2 * np.degrees(np.arctan(np.tan(np.radians(cam.view_angle / 2)) / k))
        cam.view_angle = float(new_angle)
        c0 = (cols.min() - ccol) * k + ccol, (cols.max() - ccol) * k + ccol
        r0 = (rows.min() - crow) * k + crow, (rows.max() - crow) * k + crow
        # Random shift keeping the scaled box inside the frame.
        margin = 0.015
        dx = rng.uniform(margin * w - c0[0], (1 - margin) * w - c0[1])
        dy = rng.uniform(margin * h - r0[0], (1 - margin) * h - r0[1])
        cam.SetWindowCenter(cx0 - 2 * dx / w, cy0 + 2 * dy / h)
        scene.pl.renderer.ResetCameraClippingRange()
    return mask


def _camera_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, gamma, vignetting, blur, sensor noise and JPEG artefacts."""
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0
    x *= rng.uniform(0.75, 1.2) * (1 + rng.normal(0, 0.04, 3)).astype(np.float32)
    x = np.clip(x, 0, 1) ** rng.uniform(0.85, 1.2)
    if rng.random() < 0.6:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        x *= (1 - rng.uniform(0.05, 0.25) * r2 / 2)[..., None]
    sigma = rng.uniform(0.4, 1.3) * max(h, w) / 1600
    x = cv2.GaussianBlur(x, (0, 0), sigma)
    x += rng.normal(0, rng.uniform(0.005, 0.02), x.shape).astype(np.float32)
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(
            ".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))]
        )
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def render_pair(seed: int, size: tuple[int, int] = FULL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene.

    Parameters
    ----------
    seed
        Scene seed; the same seed and size give the same image and mask.
    size
        (rows, cols) of the output. Smaller sizes show the same scene at lower resolution.

    Returns
    -------
    image : (H, W, 3) uint8 RGB camera image
    mask : (H, W) uint8 class ids (0 background, 1 gingiva, 2 tooth)
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CA7]))
    arch = make_arch(rng)
    scene = _Scene(arch, rng, size)
    try:
        for _ in range(4):
            cover = float((_place_camera(scene, arch, rng) > 0).mean())
            if COVERAGE_RANGE[0] + 0.01 <= cover <= COVERAGE_RANGE[1] - 0.01:
                break
        image = scene.render(realistic=True)
        mask = _mask_from_render(scene.render(realistic=False))
    finally:
        scene.pl.close()
    return _camera_effects(image, rng), mask


SAMPLE_JPEG_QUALITY = 95
"""Sample images are JPEGs, as a scanner's camera writes them: noisy renders take 3-4 MB as PNG."""


def sample_scene_seed(case_seed: int, index: int) -> int:
    """Scene seed of image ``index`` (from 0) of a sample case: apart from the recipe's ranges."""
    return case_seed * 1000 + 17 + index


def render_sample_images(seed: int, out_dir: Path, count: int) -> list[Path]:
    """Write ``image_1.jpg`` .. ``image_<count>.jpg`` (1400 x 1600 RGB) of one case into
    ``out_dir``, replacing earlier ``image_*`` files; the same seed gives the same files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = render_pair(sample_scene_seed(seed, i), FULL_SIZE)
        path = out_dir / f"image_{i + 1}.jpg"
        atomic_write(
            path,
            lambda tmp, image=image: Image.fromarray(image).save(
                tmp, format="JPEG", quality=SAMPLE_JPEG_QUALITY, subsampling=0
            ),
        )
        path.chmod(0o644)
        paths.append(path)
    for old in set(out_dir.glob("image_*")) - set(paths):
        old.unlink()
    return paths
