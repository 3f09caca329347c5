"""Check that the built-in phantom is worth semi-supervised learning (numbers for docs/phantom.md).

    python Code/DataProcess/calibrate_phantom.py [--size 128] [--iters 300] [--batch 8] [--threads 1]

1. generates the default phantom and splits it with two budgets: ~10 % of the train images and all of them
   (N = 2 · min per-class train count);
2. hand features of the ground-truth lesion (mean intensity, area, bounding-box aspect height/width): accuracy of
   the best single threshold, fitted on train and measured on test, and fitted on all images (an upper bound);
3. trains a plain smp U-Net (resnet18, encoder_weights=None) with a classification head on the 10 % labeled set
   and on the full labeled set, the same number of iterations (Adam 1e-3 with poly decay (1 − t/T)^0.9, batch 8,
   weak geometric augmentation; loss CE + soft Dice for the mask, CE for the class), and reports the test Dice
   (lesion, mean over images) and accuracy. Targets: gap ≥ 8 Dice points and ≥ 5 accuracy points; every hand
   feature ≤ 80 %.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from Code.data import SplitDataset, load_gray, load_mask, read_labeled_list  # noqa: E402
from Code.DataProcess.make_phantom import DEFAULT_PHANTOM, generate_phantom  # noqa: E402
from Code.DataProcess.raw_readers import read_sztus  # noqa: E402
from Code.DataProcess.split_plan import plan_split  # noqa: E402
from Code.DataProcess.splitting import split_dataset  # noqa: E402
from Code.errors import run_cli  # noqa: E402

FEATURES = ("mean_intensity", "area", "aspect")


def lesion_features(part_dir: Path) -> tuple:
    """(features (n, 3) float64: mean intensity in the mask, mask area, bbox height/width; labels (n,))."""
    rows, labels = [], []
    for image_name, mask_name, label in read_labeled_list(part_dir / "labeled.txt"):
        image, mask = load_gray(part_dir / "image" / image_name), load_mask(part_dir / "mask" / mask_name) > 0
        ys, xs = np.nonzero(mask)
        height, width = (np.ptp(ys) + 1, np.ptp(xs) + 1) if len(ys) else (1, 1)
        rows.append((image[mask].mean() if len(ys) else 0.0, mask.sum(), height / width))
        labels.append(label)
    return np.array(rows, np.float64), np.array(labels)


def best_threshold(x: np.ndarray, y: np.ndarray) -> tuple:
    """(threshold, sign, accuracy) of the best rule  predict 1 ⇔ sign·(x − threshold) > 0  on (x, y)."""
    candidates = np.unique(x)
    cuts = np.concatenate([[candidates[0] - 1], (candidates[1:] + candidates[:-1]) / 2, [candidates[-1] + 1]])
    best = (cuts[0], 1, 0.0)
    for cut in cuts:
        for sign in (1, -1):
            acc = float(np.mean((sign * (x - cut) > 0) == (y == 1)))
            if acc > best[2]:
                best = (float(cut), sign, acc)
    return best


def hand_feature_report(train_dir: Path, test_dir: Path) -> dict:
    """{feature: {"test": acc of the threshold fitted on train, "all": in-sample acc on train+test}}."""
    train_x, train_y = lesion_features(train_dir)
    test_x, test_y = lesion_features(test_dir)
    all_x, all_y = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    report = {}
    for k, name in enumerate(FEATURES):
        cut, sign, _ = best_threshold(train_x[:, k], train_y)
        test_acc = float(np.mean((sign * (test_x[:, k] - cut) > 0) == (test_y == 1)))
        report[name] = {"test": test_acc, "all": best_threshold(all_x[:, k], all_y)[2]}
    return report


def build_model(in_channels: int = 1) -> torch.nn.Module:
    import segmentation_models_pytorch as smp
    return smp.Unet("resnet18", encoder_weights=None, in_channels=in_channels, classes=2,
                    decoder_channels=(128, 64, 32, 16, 16),
                    aux_params={"classes": 2, "dropout": 0.2})


def train_and_test(labeled_dir: Path, test_dir: Path, size: int, iters: int, batch: int, seed: int) -> dict:
    """Train from scratch on `labeled_dir`, return {"dice", "accuracy", "seconds"} on `test_dir`."""
    torch.manual_seed(seed)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    poly = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 - t / iters) ** 0.9)
    data = SplitDataset(labeled_dir, "labeled", size=size, seed=seed)
    start, step, epoch = time.perf_counter(), 0, 0
    model.train()
    while step < iters:
        data.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(data))
        for first in range(0, len(order) - batch + 1 if len(order) >= batch else 1, batch):
            images, masks, labels = (torch.stack(t) for t in zip(*(data[int(i)] for i in order[first:first + batch])))
            seg_logits, cls_logits = model(images)
            probs = seg_logits.softmax(1)[:, 1]
            dice = 1 - (2 * (probs * masks).sum() + 1) / (probs.sum() + masks.sum() + 1)
            loss = F.cross_entropy(seg_logits, masks) + dice + F.cross_entropy(cls_logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            poly.step()
            step += 1
            if step >= iters:
                break
        epoch += 1
    return dict(evaluate(model, test_dir, size), seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: torch.nn.Module, test_dir: Path, size: int) -> dict:
    """Mean per-image Dice of the lesion class (empty∩empty = 1) and classification accuracy."""
    model.eval()
    data = SplitDataset(test_dir, "eval", size=size)
    dices, correct = [], 0
    for first in range(0, len(data), 16):
        batch = [data[i] for i in range(first, min(first + 16, len(data)))]
        images, masks, labels = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch]), \
            torch.stack([b[2] for b in batch])
        seg_logits, cls_logits = model(images)
        pred = seg_logits.argmax(1)
        inter = (pred * masks).sum((1, 2)).float()
        total = (pred.sum((1, 2)) + masks.sum((1, 2))).float()
        dices += torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)).tolist()
        correct += int((cls_logits.argmax(1) == labels).sum())
    return {"dice": 100 * float(np.mean(dices)), "accuracy": 100 * correct / len(data)}


def budgets_for(raw: Path, seed: int) -> tuple:
    """(~10 % budget, all-labels budget) from the train counts of the default split."""
    items = read_sztus(raw)
    plan = plan_split(items, [2], seed=seed)
    per_class = [sum(1 for i in plan.train if items[i].label == c) for c in (0, 1)]
    small = max(2, int(round(0.1 * sum(per_class) / 2)) * 2)
    return small, 2 * min(per_class)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="training/test input side")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="phantom, split and training seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="hermes_calib_") as tmp:
        raw, split = Path(tmp) / "raw", Path(tmp) / "split"
        generate_phantom(raw, **dict(DEFAULT_PHANTOM, seed=args.seed))
        small, full = budgets_for(raw, args.seed)
        split_dataset("sztus", raw, split, [small, full], seed=args.seed)
        test_dir = split / "test"
        features = hand_feature_report(split / "train" / str(full) / "labeled", test_dir)
        runs = {n: train_and_test(split / "train" / str(n) / "labeled", test_dir, args.size, args.iters,
                                  args.batch, args.seed) for n in (small, full)}
    result = {"arguments": vars(args), "labels": {"small": small, "full": full}, "hand_features": features,
              "runs": {str(n): r for n, r in runs.items()},
              "gap": {"dice": runs[full]["dice"] - runs[small]["dice"],
                      "accuracy": runs[full]["accuracy"] - runs[small]["accuracy"]}}
    print("| labels | test Dice % | test accuracy % | train time s |\n|---|---|---|---|")
    for n, r in runs.items():
        print(f"| {n} | {r['dice']:.1f} | {r['accuracy']:.1f} | {r['seconds']:.0f} |")
    print(f"gap: {result['gap']['dice']:.1f} Dice points, {result['gap']['accuracy']:.1f} accuracy points")
    print("| hand feature | threshold acc. on test % | best in-sample acc. % |\n|---|---|---|")
    for name, acc in features.items():
        print(f"| {name} | {100 * acc['test']:.1f} | {100 * acc['all']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
