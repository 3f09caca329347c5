"""Write the built-in synthetic ultrasound data set (docs/design.md, "The built-in phantom") in the SZ-TUS raw layout.

    python Code/DataProcess/make_phantom.py --out DIR [--n-benign N] [--n-malignant N] [--size S] [--seed K] [--force]

Layout: ``DIR/{benign,malignant}/{image,mask}/PH-<case>-<frame>.png`` (8-bit grayscale images, masks 0/255) and
``DIR/phantom.json`` (arguments and counts, written last: its presence marks a complete set).
A case is one lesion imaged in 1–4 frames (fresh speckle, small pose change), like SZ-TUS's ``L1-0001-2.png``;
case ids are shuffled across classes so that they reveal nothing. Same arguments → byte-identical files.

Random streams: the case plan uses ``default_rng([seed, 0])``, case c ``default_rng([seed, 1, c])``, its frame f
``default_rng([seed, 2, c, f])``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from Code.DataProcess.phantom_synth import render_frame, sample_case, tissue_log_map  # noqa: E402
from Code.errors import UserError, run_cli  # noqa: E402
from Code.outputs import FORCE_HELP, prepare_output_folder  # noqa: E402

DEFAULT_PHANTOM = {"n_benign": 300, "n_malignant": 300, "size": 256, "seed": 0}
GENERATOR = "hermes-phantom/2"  # bump whenever the synthesis changes, so that cached phantoms are regenerated
FRAMES_PER_CASE = (1, 2, 3, 4)
FRAME_PROBABILITIES = (0.15, 0.3, 0.35, 0.2)
CLASS_FOLDERS = ("benign", "malignant")


def plan_cases(n_benign: int, n_malignant: int, seed: int) -> list:
    """Cases as (case id, class folder, frame count); frame counts sum to exactly n per class.

    Case ids 1..C are a seeded permutation, so an id says nothing about the class."""
    rng = np.random.default_rng([seed, 0])
    drafts = []
    for folder, total in zip(CLASS_FOLDERS, (n_benign, n_malignant)):
        left = total
        while left > 0:
            frames = int(min(rng.choice(FRAMES_PER_CASE, p=FRAME_PROBABILITIES), left))
            drafts.append((folder, frames))
            left -= frames
    ids = rng.permutation(len(drafts)) + 1
    return [(int(case_id), folder, frames) for case_id, (folder, frames) in zip(ids, drafts)]


def _prepare_out(out: Path, force: bool) -> None:
    prepare_output_folder(out, "make_phantom.py", force)  # README "Outputs and --force"
    for folder in CLASS_FOLDERS:
        for kind in ("image", "mask"):
            (out / folder / kind).mkdir(parents=True, exist_ok=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise UserError(f"cannot encode {path}")
    path.write_bytes(encoded.tobytes())


def generate_phantom(out, n_benign: int = DEFAULT_PHANTOM["n_benign"],
                     n_malignant: int = DEFAULT_PHANTOM["n_malignant"], size: int = DEFAULT_PHANTOM["size"],
                     seed: int = DEFAULT_PHANTOM["seed"], force: bool = False) -> dict:
    """Generate the phantom into `out`; returns {"images", "cases", "seconds", "images_per_second", ...}."""
    if n_benign < 0 or n_malignant < 0 or n_benign + n_malignant == 0:
        raise UserError("--n-benign and --n-malignant must be >= 0 and not both 0")
    if not 32 <= size <= 4096:
        raise UserError(f"--size {size} must be between 32 and 4096")
    out = Path(out)
    _prepare_out(out, force)
    start = time.perf_counter()
    cases = plan_cases(n_benign, n_malignant, seed)
    for case_id, folder, frames in cases:
        case = sample_case(np.random.default_rng([seed, 1, case_id]), malignant=folder == "malignant")
        tissue = tissue_log_map(case.tissue, size)
        for frame in range(1, frames + 1):
            image, mask = render_frame(case, np.random.default_rng([seed, 2, case_id, frame]), size, tissue)
            name = f"PH-{case_id:04d}-{frame}.png"
            _write_png(out / folder / "image" / name, image)
            _write_png(out / folder / "mask" / name, mask)
    seconds = time.perf_counter() - start
    summary = {"generator": GENERATOR, "n_benign": n_benign, "n_malignant": n_malignant, "size": size,
               "seed": seed, "cases": {f: sum(1 for _, c, _ in cases if c == f) for f in CLASS_FOLDERS}}
    (out / "phantom.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    n_images = n_benign + n_malignant
    return dict(summary, images=n_images, seconds=seconds, images_per_second=n_images / max(seconds, 1e-9))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (SZ-TUS raw layout)")
    parser.add_argument("--n-benign", type=int, default=DEFAULT_PHANTOM["n_benign"])
    parser.add_argument("--n-malignant", type=int, default=DEFAULT_PHANTOM["n_malignant"])
    parser.add_argument("--malignant-share", type=float, default=None, metavar="S",
                        help="imbalanced variant: --n-malignant = round(--n-benign * S / (1 - S)), e.g. 0.25 for 3:1")
    parser.add_argument("--size", type=int, default=DEFAULT_PHANTOM["size"], help="image side in pixels")
    parser.add_argument("--seed", type=int, default=DEFAULT_PHANTOM["seed"])
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    if args.malignant_share is not None:
        if not 0.0 < args.malignant_share < 1.0:
            raise UserError(f"--malignant-share {args.malignant_share} must be between 0 and 1 (exclusive)")
        args.n_malignant = max(1, round(args.n_benign * args.malignant_share / (1.0 - args.malignant_share)))
    result = generate_phantom(args.out, args.n_benign, args.n_malignant, args.size, args.seed, args.force)
    cases = result["cases"]
    print(f"phantom: {result['images']} images ({args.n_benign} benign in {cases['benign']} cases, "
          f"{args.n_malignant} malignant in {cases['malignant']} cases), {args.size}x{args.size}, into {args.out}")
    print(f"{result['seconds']:.2f} s, {result['images_per_second']:.0f} images/s")
    return 0


if __name__ == "__main__":
    run_cli(main)
