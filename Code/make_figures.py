"""Figures of the README, drawn by the project itself into ``Assets/``.

    python Code/make_figures.py architecture            # Assets/architecture.png  (the network, as built)
    python Code/make_figures.py phantom [--raw DIR]     # Assets/phantom_samples.png (built-in data, with masks)
    python Code/make_figures.py curves RUN [RUN ...]    # Assets/training_curves.png (val Dice / accuracy; test too
                                                        # only for runs that logged test curves: eval.test_curves)
    python Code/make_figures.py pretrain-curves RUN [RUN ...] --out PNG   # pretrain.py runs: InfoNCE, std, k-NN
    python Code/make_figures.py label-curve SIM [SIM ...] --out PNG [--metric dice accuracy ...] [--select best|final]
        # simulate_labeling.py folders: test metric against labels per strategy x method, band = min-max over
        # draws; the table (mean, std, min, max, n in %) is written beside the figure as PNG's name with .csv;
        # [--compare entropy@144 random@168 [--compare-method hermes]]: paired 95 % intervals, <stem>_compare.csv

An existing figure is replaced only with ``--force`` and only when it is a matplotlib figure; never an input (README
"Outputs and --force"). Written atomically.
"""
import _bootstrap  # noqa: F401

import argparse
import csv
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from Code.errors import UserError, run_cli  # noqa: E402
from Code.outputs import matplotlib_file, prepare_output_file, write_atomically  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "Assets"

# (x, y, w, h, text, colour) of the architecture diagram, in axis units of a 16 x 7 canvas.
BOXES = {
    "img": (0.2, 3.0, 1.4, 1.0, "ultrasound\nimage", "#dddddd"),
    "enc": (2.2, 2.6, 2.0, 1.8, "shared encoder\n(smp, resnet34)\nf1 … f5", "#9ecae1"),
    "dec": (5.2, 4.6, 2.6, 1.4, "U-Net decoder\nd1 … d4", "#a1d99b"),
    "seg": (9.0, 4.8, 2.0, 1.0, "seg logits\n2 × H × W", "#a1d99b"),
    "cls": (5.2, 0.8, 2.6, 1.4, "classification branch\nconv blocks on f3 … f5", "#fdae6b"),
    "ias": (5.6, 2.75, 1.8, 1.1, "IAS attention\nchannel + spatial", "#fdd0a2"),
    "sal": (8.4, 2.75, 1.8, 1.1, "saliency (CAM)\n→ decoder at 1/4", "#c7e9c0"),
    "gap": (9.0, 1.0, 2.0, 1.0, "GAP → cls logits\nbenign / malignant", "#fdae6b"),
    "pix": (12.0, 5.6, 3.6, 0.9, "pixel projection (256-d, 1/8)\npixel contrast + bank", "#bcbddc"),
    "imgp": (12.0, 0.3, 3.6, 0.9, "image projection (128-d)\nimage contrast + bank", "#bcbddc"),
    "cons": (12.0, 2.95, 3.6, 1.1, "consistency projections\n1 − cos(g_seg, g_cls)", "#fcbba1"),
}
ARROWS = [("img", "enc"), ("enc", "dec"), ("enc", "cls"), ("dec", "seg"), ("dec", "ias"), ("ias", "cls"),
          ("cls", "sal"), ("sal", "dec"), ("cls", "gap"), ("seg", "pix"), ("gap", "imgp"), ("seg", "cons"),
          ("gap", "cons")]


def _edge_points(a, b):
    """Where the straight line between the centres of boxes ``a`` and ``b`` leaves ``a`` and enters ``b``."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = BOXES[a][:4], BOXES[b][:4]
    ca, cb = (xa + wa / 2, ya + ha / 2), (xb + wb / 2, yb + hb / 2)
    dx, dy = cb[0] - ca[0], cb[1] - ca[1]

    def reach(w, h):
        return min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf")) + 0.02

    ta, tb = reach(wa + 0.1, ha + 0.1), reach(wb + 0.1, hb + 0.1)
    return (ca[0] + dx * ta, ca[1] + dy * ta), (cb[0] - dx * tb, cb[1] - dy * tb)


def draw_architecture(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(16, 7))
    for x, y, w, h, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#333333"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10)
    for a, b in ARROWS:
        start, end = _edge_points(a, b)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#444444",
                                     shrinkA=0, shrinkB=0))
    ax.text(0.2, 6.6, "Hermes network as built in Code/models (weak view → dual-threshold pseudo-labels → strong "
                      "view losses)", fontsize=12, weight="bold")
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 7)
    ax.axis("off")
    return _save(fig, out)


def draw_phantom(raw: Optional[Path], out: Path) -> Path:
    import cv2
    import numpy as np

    if raw is None:
        from Code.DataProcess.default_data import ensure_phantom_split

        raw = Path(ensure_phantom_split()).parent / "phantom_raw"
    fig, axes = plt.subplots(2, 6, figsize=(15, 5.8))
    for row, cls in enumerate(("benign", "malignant")):
        first_frames = {}
        for path in sorted((raw / cls / "image").glob("*.png")):  # one frame per case: PH-<case>-<frame>.png
            first_frames.setdefault(path.stem.rsplit("-", 1)[0], path)
        images = list(first_frames.values())[:6]
        if not images:
            raise UserError(f"no images under {raw / cls / 'image'}")
        for ax, path in zip(axes[row], images):
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            mask = cv2.imread(str(raw / cls / "mask" / path.name), cv2.IMREAD_GRAYSCALE)
            rgb = np.dstack([image] * 3)
            contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, contours, -1, (255, 60, 60), 1)
            ax.imshow(rgb)
            ax.set_title(f"{cls}: {path.stem}", fontsize=9)
            ax.axis("off")
    fig.suptitle("Built-in ultrasound phantom (lesion outline in red)")
    return _save(fig, out)


def check_run_kind(run: Path, figure: str) -> None:
    """One line when ``run`` is a run of the other kind than ``figure`` (``curves`` or ``pretrain-curves``) draws."""
    from Code.engine.run_kind import describe_task, folder_task

    task = folder_task(run)
    if figure == "curves" and task == "pretrain":
        raise UserError(f"{run} is {describe_task(task)}; 'curves' draws seg_train.py/cls_train.py runs: use "
                        f"make_figures.py pretrain-curves {run}")
    if figure == "pretrain-curves" and task in ("seg", "cls"):
        raise UserError(f"{run} is {describe_task(task)}; 'pretrain-curves' draws pretrain.py runs: use "
                        f"make_figures.py curves {run}")


def draw_curves(runs: Sequence[Path], out: Path) -> Path:
    """Val lesion Dice and val accuracy per evaluation (solid); the test ones (dashed, "… test") only for runs whose
    ``metrics.csv`` has test columns (``eval.test_curves: true``, or runs made before the test split was sealed)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for run in runs:
        check_run_kind(run, "curves")
        path = Path(run) / "metrics.csv"
        if not path.is_file():
            raise UserError(f"no metrics.csv in {run}")
        with path.open() as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        fields = reader.fieldnames or []
        if "step" not in fields or not {"dice", "accuracy", "val_dice", "val_accuracy"} & set(fields):
            raise UserError(f"{path} has no step and (val_)dice / (val_)accuracy columns: 'curves' draws the "
                            "metrics.csv of seg_train.py/cls_train.py runs")
        steps = [int(r["step"]) for r in rows]
        columns = rows[0].keys() if rows else ()
        for ax, key in zip(axes, ("dice", "accuracy")):
            for column, style, suffix in ((f"val_{key}", "-", ""), (key, "--", " test")):
                if column in columns:
                    ax.plot(steps, [100 * float(r[column]) for r in rows], style, marker="o",
                            label=Path(run).name + suffix)
    for ax, title in zip(axes, ("val lesion Dice (%)", "val accuracy (%)")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


PRETRAIN_PANELS = (("loss/infonce", "InfoNCE loss"), ("health/embed_std", "embedding std (collapse → 0)"),
                   ("val/knn_accuracy", "val 20-NN accuracy (%)"))


def _pretrain_scalars(run: Path) -> dict:
    """``{tag: {step: value}}`` of a pretrain.py run folder (its tensorboard/) or of its ``curve.csv`` (a folder
    holding one, or the file: what ``python -m Code.reporting.scalars`` writes under ``results/``)."""
    from Code.reporting.scalars import read_scalars, read_scalars_csv

    run = Path(run)
    table = run if run.suffix == ".csv" else run / "curve.csv"
    if table.is_file():
        scalars = read_scalars_csv(table)
    elif (run / "tensorboard").is_dir():
        check_run_kind(run, "pretrain-curves")
        scalars = read_scalars(run / "tensorboard")
    else:
        check_run_kind(run, "pretrain-curves")
        raise UserError(f"no curve.csv or tensorboard/ in {run}")
    if not any(scalars.get(tag) for tag, _ in PRETRAIN_PANELS):
        raise UserError(f"{run} holds none of the pre-training curves ({', '.join(t for t, _ in PRETRAIN_PANELS)}): "
                        "'pretrain-curves' draws pretrain.py runs, or their curve.csv")
    return scalars


def draw_pretrain_curves(runs: Sequence[Path], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(PRETRAIN_PANELS), figsize=(15, 4))
    for run in runs:
        scalars = _pretrain_scalars(run)
        label = Path(run).parent.name if Path(run).suffix == ".csv" else Path(run).name
        for ax, (tag, _) in zip(axes, PRETRAIN_PANELS):
            points = sorted(scalars.get(tag, {}).items())
            scale = 100 if tag.startswith("val/") else 1
            ax.plot([p[0] for p in points], [scale * p[1] for p in points], marker="o" if tag.startswith("val/")
                    else None, markersize=3, label=label)
    for ax, (_, title) in zip(axes, PRETRAIN_PANELS):
        ax.set_title(title)
        ax.set_xlabel("pre-training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


LABEL_CURVE_METRICS = ("dice", "accuracy", "balanced_accuracy", "auc")


def draw_label_curve(args: argparse.Namespace) -> Path:
    """The label-efficiency curve (``Code/reporting/label_curve.py``), its table (``--out`` with suffix .csv) and,
    with ``--compare``, the paired intervals (``Code/reporting/label_target.py``) in ``<stem>_compare.csv``.
    Everything is checked and computed before anything is written."""
    from Code.outputs import text_file_starting
    from Code.reporting import label_curve, label_target

    out = args.out
    if out.suffix.lower() == ".csv":
        raise UserError(f"--out {out}: name the figure (e.g. .png); its table is written beside it as .csv")
    table, compared = out.with_suffix(".csv"), out.with_name(out.stem + "_compare.csv")
    files = [(table, label_curve.TABLE_COLUMNS, "a label-curve table")]
    files += [(compared, label_target.COLUMNS, "a label-curve comparison")] if args.compare else []
    for path, columns, what in files:
        prepare_output_file(path, "make_figures.py", args.force, figure_inputs(args),
                            kind=text_file_starting(",".join(columns)), kind_name=f"{what} of make_figures.py")
    metrics = list(dict.fromkeys(args.metric))
    rows = label_curve.summarise(label_curve.collect(args.sims, metrics, args.select))
    tests = [row for side, baseline in args.compare or []
             for row in label_target.compare(args.sims, args.compare_method, side, baseline, args.select)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    label_curve.draw(axes[0], rows, metrics, args.select)
    write_atomically(table, lambda tmp: label_curve.write_csv(tmp, rows))
    print(f"wrote {table}")
    if tests:
        for row in tests:
            print(f"{row['method']} {row['metric']}: {row['strategy']}@{row['labels']} - {row['baseline']}@"
                  f"{row['baseline_labels']} = {row['delta']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] "
                  f"{row['words']} (draws {row['draws']}, {row['n_images']} test images)")
        write_atomically(compared, lambda tmp: label_curve.write_csv(tmp, tests, label_target.COLUMNS))
        print(f"wrote {compared}")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    write_atomically(out, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    print(f"wrote {out}")
    return out


def figure_inputs(args: argparse.Namespace) -> List[Tuple[Path, str]]:
    """What a figure reads, as ``(path, name)``: a run's metrics.csv, curve.csv and tensorboard/ (or the file
    given), the phantom folder. ``--out`` may be none of them nor inside a folder among them."""
    inputs = [(args.raw, f"--raw {args.raw}")] if getattr(args, "raw", None) else []
    inputs += [(Path(sim) / "rounds.csv", f"the simulation file {Path(sim) / 'rounds.csv'}")
               for sim in getattr(args, "sims", [])]
    for run in getattr(args, "runs", []):
        files = [run] if run.is_file() else [run / "metrics.csv", run / "curve.csv", run / "tensorboard"]
        inputs += [(path, f"the run file {path}") for path in files]
    return inputs


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the README's figures into Assets/.")
    sub = parser.add_subparsers(dest="figure", required=True)
    architecture = sub.add_parser("architecture")
    architecture.add_argument("--out", type=Path, default=ASSETS / "architecture.png")
    phantom = sub.add_parser("phantom")
    phantom.add_argument("--raw", type=Path, help="phantom raw folder (default: the built-in one)")
    phantom.add_argument("--out", type=Path, default=ASSETS / "phantom_samples.png")
    curves = sub.add_parser("curves")
    curves.add_argument("runs", nargs="+", type=Path)
    curves.add_argument("--out", type=Path, default=ASSETS / "training_curves.png")
    pretrain = sub.add_parser("pretrain-curves")
    pretrain.add_argument("runs", nargs="+", type=Path, help="pretrain.py run folders, or their curve.csv")
    pretrain.add_argument("--out", type=Path, default=ASSETS / "pretrain_curves.png")
    label = sub.add_parser("label-curve")
    label.add_argument("sims", nargs="+", type=Path, help="simulate_labeling.py --out folders (draws pool)")
    label.add_argument("--out", type=Path, required=True, help="the figure; its table is written beside it (.csv)")
    label.add_argument("--metric", nargs="+", choices=LABEL_CURVE_METRICS, default=["dice", "accuracy"])
    label.add_argument("--select", choices=("best", "final"), default="best",
                       help="test at the val-chosen step (best.pt, default) or at the final step")
    label.add_argument("--compare", nargs=2, action="append", metavar=("STRATEGY@N", "BASELINE@M"),
                       help="paired 95%% interval of the difference, e.g. entropy@144 random@168 (repeatable)")
    label.add_argument("--compare-method", default="hermes", help="the method of --compare (default hermes)")
    for figure in (architecture, phantom, curves, pretrain, label):
        figure.add_argument("--force", action="store_true", help="replace an existing figure of this script at --out")
    args = parser.parse_args(argv)
    prepare_output_file(args.out, "make_figures.py", args.force, figure_inputs(args), kind=matplotlib_file,
                        kind_name="a figure drawn by matplotlib")
    if args.figure == "architecture":
        draw_architecture(args.out)
    elif args.figure == "phantom":
        draw_phantom(args.raw, args.out)
    elif args.figure == "label-curve":
        draw_label_curve(args)
    elif args.figure == "pretrain-curves":
        draw_pretrain_curves(args.runs, args.out)
    else:
        draw_curves(args.runs, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
