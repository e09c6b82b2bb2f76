"""Train, export and evaluate the demo model-scan segmentation model, in one command.

    python -m models.recipes.train_scanseg

Renders (or reads from ``models/recipes/work/``) full-size 1400x1600 synthetic images, trains
:class:`ScanSegNet` on random full-scale crops on the CPU, exports ``models/scanseg_demo.onnx``
(opset 17, dynamic H and W, four flipped views averaged in the graph) with its manifest,
checks ONNX against PyTorch, and evaluates on
held-out full-size renders through ONNX Runtime beside two colour-only baselines fitted on the
training images. Numbers go to ``models/recipes/scanseg_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
METRICS_PATH = Path(__file__).resolve().parent / "scanseg_metrics.json"

MANIFEST = {
    "kind": "segmentation",
    "name": "Demo model-scan segmentation (synthetic training data)",
    "version": "4",
    "onnx": "scanseg_demo.onnx",
    "input": "input",
    "output": "output",
    "input_size": None,
    "resize": "stretch",
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "to_rgb": True,
    "output_kind": "logits",
    "classes": [
        {"name": "background", "color": [0, 0, 0]},
        {"name": "gingiva", "color": [230, 120, 120]},
        {"name": "tooth", "color": [240, 230, 140]},
    ],
    "size_divisor": 8,
    "roi": {
        "enabled": True,
        "method": "threshold",
        "margin": 0.25,
        "min_margin_px": 128,
        "downscale": 8,
    },
}


# --- metrics and colour baselines (numpy only) -------------------------------------------------


def confusion(pred: np.ndarray, truth: np.ndarray, n: int = 3) -> np.ndarray:
    """n x n counts, rows = truth, columns = prediction."""
    return np.bincount(truth.ravel().astype(np.int64) * n + pred.ravel(), minlength=n * n).reshape(
        n, n
    )


def iou_from_confusion(cm: np.ndarray) -> list[float]:
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    return [float(x) for x in np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)]


def _hsv_features(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel (cos h * s, sin h * s, v) so hue wraps around and grey has no hue."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32) / 255.0
    ang = hsv[:, 0] * 2 * np.pi
    return np.stack([np.cos(ang) * hsv[:, 1], np.sin(ang) * hsv[:, 1], hsv[:, 2]], axis=1)


class NearestMeanHSV:
    """Colour baseline 1: each pixel takes the class whose mean HSV colour is nearest."""

    def fit(self, pairs) -> NearestMeanHSV:
        sums, counts = np.zeros((3, 3)), np.zeros(3)
        for image, mask in pairs:
            f = _hsv_features(image[::4, ::4])
            m = mask[::4, ::4].ravel()
            for c in range(3):
                sums[c] += f[m == c].sum(0)
                counts[c] += (m == c).sum()
        self.means = (sums / counts[:, None]).astype(np.float32)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        f = _hsv_features(image)
        d = ((f[:, None, :] - self.means[None]) ** 2).sum(-1)
        return d.argmin(1).astype(np.uint8).reshape(image.shape[:2])


class ColourLUT:
    """Colour baseline 2: the best per-pixel colour rule, a Bayes lookup table over RGB
    quantised to 32 levels per channel, fitted on the training pixels."""

    def fit(self, pairs) -> ColourLUT:
        counts = np.zeros((32**3, 3), np.int64)
        for image, mask in pairs:
            q = (image[::2, ::2] // 8).reshape(-1, 3).astype(np.int64)
            idx = (q[:, 0] * 32 + q[:, 1]) * 32 + q[:, 2]
            np.add.at(counts, (idx, mask[::2, ::2].ravel()), 1)
        self.table = counts.argmax(1).astype(np.uint8)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        q = (image // 8).astype(np.int64)
        return self.table[(q[..., 0] * 32 + q[..., 1]) * 32 + q[..., 2]]


# --- training ------------------------------------------------------------------------------------


def quarter(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale a full-size pair by ``DOWNSCALE``: the mean colour of each block (exactly
    the graph's average pooling) and each class's share of the block (soft training targets)."""
    from models.recipes.seg_net import DOWNSCALE

    h, w = mask.shape
    size = (w // DOWNSCALE, h // DOWNSCALE)
    img = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    onehot = (mask[..., None] == np.arange(3)).astype(np.float32)
    frac = cv2.resize(onehot, size, interpolation=cv2.INTER_AREA)
    return img, frac


def _sample_crop(rng, image, frac, crop: int, recolour_p: float = 0.0, scale_range=(0.85, 1.2)):
    """A random crop of a downscaled pair at a random scale, on the model more often than not."""
    h, w = frac.shape[:2]
    s = rng.uniform(*scale_range)
    src = min(int(round(crop / s)), h, w)
    if rng.random() < 0.7:
        ys, xs = np.nonzero(frac[::4, ::4, 0] < 0.5)
        j = rng.integers(len(ys))
        cy, cx = ys[j] * 4, xs[j] * 4
    else:
        cy, cx = rng.integers(h), rng.integers(w)
    y0 = int(np.clip(cy - src // 2 + rng.integers(-src // 4, src // 4 + 1), 0, h - src))
    x0 = int(np.clip(cx - src // 2 + rng.integers(-src // 4, src // 4 + 1), 0, w - src))
    img = image[y0 : y0 + src, x0 : x0 + src]
    tgt = frac[y0 : y0 + src, x0 : x0 + src]
    if src != crop:
        img = cv2.resize(img, (crop, crop), interpolation=cv2.INTER_LINEAR)
        tgt = cv2.resize(tgt, (crop, crop), interpolation=cv2.INTER_LINEAR)
    k = int(rng.integers(4))
    img, tgt = np.rot90(img, k), np.rot90(tgt, k)
    if rng.random() < 0.5:
        img, tgt = img[:, ::-1], tgt[:, ::-1]
    img = img * np.float32(rng.uniform(0.88, 1.12)) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    if rng.random() < recolour_p:
        img = recolour(rng, img)
    return np.clip(img, 0, 255), np.ascontiguousarray(tgt)


def recolour(rng, img: np.ndarray) -> np.ndarray:
    """Turn the hue of a whole crop by any angle and scale its saturation and contrast.

    Renders pair only so many base, plate and lighting colours; this makes every pairing, among
    them a base as pale as the teeth and a plate the colour of stone, so the network has to read
    shape and context rather than colour.
    """
    grey = img.mean(axis=-1, keepdims=True)
    chroma = img - grey
    a = rng.uniform(-np.pi, np.pi)
    # rotation about the grey axis (1, 1, 1) by angle a (Rodrigues' formula)
    k = np.full((3, 3), (1 - np.cos(a)) / 3) + np.cos(a) * np.eye(3)
    k += np.sin(a) / np.sqrt(3) * np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    chroma = chroma @ k.T.astype(np.float32) * np.float32(rng.uniform(0.3, 1.5))
    m = grey.mean()
    grey = (grey - m) * np.float32(rng.uniform(0.75, 1.25)) + m
    return grey + chroma


def train(pairs, args, log) -> object:
    import torch
    import torch.nn.functional as F

    from models.recipes.seg_net import ScanSegNet, normalise

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    small = [quarter(image, mask) for image, mask in pairs]
    model = ScanSegNet()
    net = model.inner
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    weight = torch.tensor([1.0, 1.0, 1.5])
    net.train()
    t0 = time.time()
    running = 0.0
    difficulty = np.ones(len(small))
    for step in range(1, args.steps + 1):
        picks = [
            int(rng.choice(len(small), p=difficulty / difficulty.sum()))
            if rng.random() < args.hard_share
            else int(rng.integers(len(small)))
            for _ in range(args.batch)
        ]
        batch = [_sample_crop(rng, *small[i], args.crop, args.recolour) for i in picks]
        x = normalise(torch.from_numpy(np.stack([b[0] for b in batch])))
        y = torch.from_numpy(np.stack([b[1] for b in batch])).permute(0, 3, 1, 2)
        per_crop = F.cross_entropy(net(x), y, weight=weight, reduction="none").mean(dim=(1, 2))
        for i, v in zip(picks, per_crop.detach().numpy(), strict=True):
            difficulty[i] = 0.7 * difficulty[i] + 0.3 * float(v)
        loss = per_crop.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        running = 0.95 * running + 0.05 * value if step > 1 else value
        if step % 50 == 0 or step == args.steps:
            log(f"  step {step}/{args.steps} loss {running:.4f} {time.time() - t0:.0f}s")
        if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
            log(f"  stopping at step {step}: time budget of {args.max_minutes} min reached")
            break
    model.eval()
    return model, step, time.time() - t0


# --- evaluation through ONNX Runtime ------------------------------------------------------------


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_labels(session, image: np.ndarray) -> np.ndarray:
    mean = np.array(MANIFEST["mean"], np.float32)
    std = np.array(MANIFEST["std"], np.float32)
    x = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
    return session.run(["output"], {"input": np.ascontiguousarray(x)})[0][0].argmax(0)


def write_manifest(path: Path) -> None:
    from app.core.fileio import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(MANIFEST, indent=2) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--heldout-images", type=int, default=20)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--crop", type=int, default=160, help="crop side on the downscaled image")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--hard-share",
        type=float,
        default=0.0,
        help="share of crops drawn from images in proportion to their recent loss",
    )
    ap.add_argument(
        "--recolour", type=float, default=0.5, help="share of crops whose colours are turned"
    )
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop training early (0: off)")
    ap.add_argument("--work", type=Path, default=None, help="data cache (default recipes/work)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the model, manifest, weights and metrics to this folder instead of the "
        "shipped places (a trial run)",
    )
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="export and evaluate the last trained weights (work/scanseg_demo.pt, or in "
        "--out) again, keeping the training figures in the metrics file",
    )
    args = ap.parse_args(argv)

    os.environ["LP_NUM_THREADS"] = str(args.threads)
    import torch

    from app.core.fileio import atomic_write_bytes
    from models.recipes import scanseg_data
    from models.recipes.seg_net import ScanSegNet, count_parameters, export_onnx

    torch.set_num_threads(args.threads)
    work = args.work or scanseg_data.WORK_DIR
    t_all = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_all:7.1f}s] {msg}", flush=True)

    log("data: rendering or reading the cache")
    t = time.time()
    train_seeds = [scanseg_data.TRAIN_SEED0 + i for i in range(args.train_images)]
    held_seeds = [scanseg_data.HELDOUT_SEED0 + i for i in range(args.heldout_images)]
    train_pairs = scanseg_data.dataset(train_seeds, work, log)
    held_pairs = scanseg_data.dataset(held_seeds, work, log)
    data_s = time.time() - t

    if args.out is None:
        onnx_path, metrics_path = MODELS / "scanseg_demo.onnx", METRICS_PATH
        checkpoint = Path(work) / "scanseg_demo.pt"
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        onnx_path, checkpoint = args.out / "scanseg_demo.onnx", args.out / "scanseg_demo.pt"
        metrics_path = args.out / METRICS_PATH.name
    manifest_path = onnx_path.with_suffix(".json")
    if args.eval_only:
        log(f"evaluating the weights in {checkpoint} (no training)")
        model = ScanSegNet()
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
        model.eval()
        training = json.loads(metrics_path.read_text())["training"]
    else:
        log(f"training {args.steps} steps, batch {args.batch}, crop {args.crop}")
        model, steps_done, train_s = train(train_pairs, args, log)
        torch.save(model.state_dict(), checkpoint)
        training = {
            "train_images": len(train_pairs),
            "steps": steps_done,
            "batch": args.batch,
            "crop": args.crop,
            "lr": args.lr,
            "recolour": args.recolour,
            "hard_share": args.hard_share,
            "threads": args.threads,
            "data_seconds": round(data_s, 1),
            "train_seconds": round(train_s, 1),
            "torch": torch.__version__,
        }

    tmp_onnx = onnx_path.with_suffix(".tmp.onnx")
    export_onnx(model, tmp_onnx)
    sess = ort_session(tmp_onnx, args.threads)
    image = held_pairs[0][0]
    with torch.no_grad():
        from models.recipes.seg_net import normalise

        ref = model(normalise(torch.from_numpy(image[None].copy()))).numpy()
    mean = np.array(MANIFEST["mean"], np.float32)
    std = np.array(MANIFEST["std"], np.float32)
    x = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
    got = sess.run(["output"], {"input": np.ascontiguousarray(x)})[0]
    onnx_diff = float(np.abs(got - ref).max())
    onnx_agree = float((got.argmax(1) == ref.argmax(1)).mean())
    log(f"onnx vs torch: max |logit diff| {onnx_diff:.2e}, label agreement {onnx_agree:.6f}")
    tmp_onnx.replace(onnx_path)
    write_manifest(manifest_path)

    log("evaluating on held-out full-size renders through ONNX Runtime")
    sess = ort_session(onnx_path, args.threads)
    baselines = {
        "colour_lut_rgb": ColourLUT().fit(train_pairs),
        "nearest_mean_hsv": NearestMeanHSV().fit(train_pairs),
    }
    cms = {"model": np.zeros((3, 3), np.int64)} | {k: np.zeros((3, 3), np.int64) for k in baselines}
    per_image = []
    for image, mask in held_pairs:
        pred = ort_labels(sess, image)
        cm = confusion(pred, mask)
        cms["model"] += cm
        per_image.append(float(np.nanmean(iou_from_confusion(cm))))
        for k, b in baselines.items():
            cms[k] += confusion(b.predict(image), mask)

    from app.core.manifest import load_manifest
    from app.core.runtime import RuntimeConfig, SessionPool
    from app.core.segment.pipeline import segment_image

    spec = load_manifest(manifest_path)
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=args.threads))
    roi_agree = []
    for image, _ in held_pairs:
        full = segment_image(image, spec, pool, roi=False).labels
        crop = segment_image(image, spec, pool, roi=True)
        roi_agree.append(float((full == crop.labels).mean()))

    timing_sess = ort_session(onnx_path, 2)
    x = np.zeros((1, 3, 1400, 1600), np.float32)
    x[:] = np.random.default_rng(0).normal(size=x.shape)
    timing_sess.run(["output"], {"input": x})
    times = []
    for _ in range(5):
        t = time.perf_counter()
        timing_sess.run(["output"], {"input": x})
        times.append(time.perf_counter() - t)

    names = [c["name"] for c in MANIFEST["classes"]]
    results = {}
    for k, cm in cms.items():
        iou = iou_from_confusion(cm)
        results[k] = {
            "iou": dict(zip(names, [round(v, 4) for v in iou], strict=True)),
            "miou": round(float(np.mean(iou)), 4),
            "pixel_accuracy": round(float(np.trace(cm) / cm.sum()), 4),
        }
    metrics = {
        "heldout_images": len(held_pairs),
        "heldout_seeds": [held_seeds[0], held_seeds[-1]],
        "image_size": [1400, 1600],
        "iou_note": "IoU over all held-out pixels pooled; evaluated through ONNX Runtime (CPU)",
        "model": results.pop("model") | {"per_image_miou_min": round(min(per_image), 4)},
        "baselines": results,
        "roi_vs_full_agreement": {
            "min": round(min(roi_agree), 5),
            "mean": round(float(np.mean(roi_agree)), 5),
        },
        "onnx_vs_torch": {"max_abs_logit_diff": onnx_diff, "label_agreement": onnx_agree},
        "ort_cpu_seconds_1400x1600_2threads": {
            "min": round(min(times), 3),
            "median": round(float(np.median(times)), 3),
        },
        "parameters": count_parameters(model),
        "onnx_bytes": onnx_path.stat().st_size,
        "training": training,
    }
    if not args.eval_only:
        training["total_seconds"] = round(time.time() - t_all, 1)
    atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2) + "\n").encode())
    log(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
