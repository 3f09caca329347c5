"""``unimatch`` (Code/methods/unimatch.py) by value on a stub network, its two strong views in the data stream, and
a 3-iteration phantom run (straight, and stopped and resumed).

The stub's encoder returns [x, s·c_k·x] (k = 0…3, c = 0.5, 1, 1.5, 2); its lesion logit is the channel mean of
the second feature (background 0) and its malignancy logit the image mean of that. A clean view z therefore has
lesion logit 1.25·s·z; the feature-perturbed weak view has (1/4)·Σ_k m_k·c_k·s·weak with m_k ∈ {0, 2} the
Dropout2d multipliers (p = 0.5), read back from the features the stub received."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from Code.data import SplitDataset
from Code.engine.cli import main as train_main
from Code.engine.config import load_config
from Code.losses import seg_supervised_loss
from Code.methods import build_method, strong_views
from helpers import SMOKE_CONFIG

pytestmark = pytest.mark.usefixtures("single_thread")
SCALES = torch.tensor([0.5, 1.0, 1.5, 2.0]).view(1, 4, 1, 1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return [x, self.s * SCALES * x[:, :1]]


class Stub(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()

    def forward(self, x):
        features = self.encoder(x)  # after the method's hook, if any
        self.seen = [f.detach() for f in features]
        lesion = features[1].mean(1, keepdim=True)
        mean = lesion.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1)}


def masked_ce(logits, pseudo, keep):
    """By hand: mean over all samples of keep · (−log softmax(logits)[pseudo])."""
    picked = -logits.log_softmax(1).gather(1, pseudo.unsqueeze(1)).squeeze(1)
    return (picked * keep.float()).mean()


def _batch(seed=0, n=2, u=3, size=6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=gen)
    weak, s1, s2 = (3 * torch.randn(u, 1, size, size, generator=gen) for _ in range(3))
    return (x, (x[:, 0] > 0).long(), torch.tensor([0, 1])[:n]), (weak, s1, s2)


def _config(**unimatch):
    return load_config(None, [{"method": "unimatch", "unimatch": unimatch}])


def _dropout_multipliers(stub, weak, n, u):
    """m (u×4): the Dropout2d multipliers of the perturbed weak rows, checked to be 0 or 1/(1 − p) = 2."""
    seen = stub.seen[1][n + u:n + 2 * u]
    m = (seen / (SCALES * weak[:, :1])).mean(dim=(2, 3))
    assert torch.equal(stub.seen[0][n + u:n + 2 * u], weak)  # the perturbed rows are the weak view
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) or v.item() == pytest.approx(2.0, rel=1e-5)
               for v in m.flatten())
    return m.round()


def test_feature_dropout_stream_is_active_and_weighted_half():
    """The fp stream's features are the weak view's, channel-dropped (so its logits differ from the clean weak
    ones), and its loss enters the total with weight 0.5 per task.
    Mutations checked: no dropout on the fp rows (the stream is a copy of the weak view); dropout applied to the
    weak rows instead (pseudo-labels from perturbed features); the fp term left out of the total; its weight 0.5
    replaced by 0.25; the hook left active after the step."""
    torch.manual_seed(3)
    stub, config = Stub(), _config(threshold=0.7)
    method = build_method(config, torch.device("cpu"), stub)
    labeled, (weak, s1, s2) = _batch()
    n, u = labeled[0].shape[0], weak.shape[0]
    total, logs, vis = method.step(stub, labeled, (weak, s1, s2), 5)
    m = _dropout_multipliers(stub, weak, n, u)
    assert torch.equal(stub.seen[1][n:n + u], SCALES * weak)  # the clean weak rows are untouched
    fp_lesion = (m.view(u, 4, 1, 1) * SCALES).mean(1, keepdim=True) * weak
    clean_lesion = 1.25 * weak
    assert not torch.allclose(fp_lesion, clean_lesion)
    seg_probs = torch.cat([torch.zeros_like(clean_lesion), clean_lesion], 1).softmax(1)
    conf, pseudo = seg_probs.max(1)
    keep = conf >= 0.7
    assert 0 < keep.sum() < keep.numel()  # the threshold cuts
    assert torch.equal(vis["keep"], keep) and torch.equal(vis["pseudo"], pseudo)
    seg_fp = masked_ce(torch.cat([torch.zeros_like(fp_lesion), fp_lesion], 1), pseudo, keep)
    assert logs["seg_fp"].item() == pytest.approx(seg_fp.item(), rel=1e-5)
    cls_w = 1.25 * weak.mean(dim=(1, 2, 3))
    cls_conf, cls_pseudo = torch.stack([torch.zeros_like(cls_w), cls_w], 1).softmax(1).max(1)
    cls_fp = fp_lesion.mean(dim=(1, 2, 3))
    expected = masked_ce(torch.stack([torch.zeros_like(cls_fp), cls_fp], 1), cls_pseudo, cls_conf >= 0.7)
    assert logs["cls_fp"].item() == pytest.approx(expected.item(), rel=1e-5)
    # the total moves by 0.5 · loss.seg per unit of seg_fp and 0.5 · loss.cls per unit of cls_fp
    bumped = dict(logs, seg_fp=logs["seg_fp"] + 1.0, cls_fp=logs["cls_fp"] + 2.0)
    assert (method.total(bumped) - total).item() == pytest.approx(0.5 * 0.5 + 0.5 * 1.1 * 2.0, rel=1e-5)
    probe = torch.cat([labeled[0], weak, weak, s1, s2])
    stub(probe)
    assert torch.equal(stub.seen[1], SCALES * probe)  # no dropout outside the step


def test_two_strong_views_count_a_quarter_each():
    """Each strong view is trained against the weak view's kept pseudo-labels with weight 0.25; the total is the
    module docstring's L. Mutations checked: either strong view's term left out of the total; strong view 2 fed
    strong view 1's logits; the weight 0.25 changed; the pseudo-labels taken from a strong view; the supervised
    terms dropped."""
    torch.manual_seed(0)
    stub, config = Stub(), _config(threshold=0.7)
    method = build_method(config, torch.device("cpu"), stub)
    labeled, (weak, s1, s2) = _batch(seed=1)
    total, logs, _ = method.step(stub, labeled, (weak, s1, s2), 5)
    n, u = labeled[0].shape[0], weak.shape[0]
    m = _dropout_multipliers(stub, weak, n, u)

    def seg(z):
        return torch.cat([torch.zeros_like(z), z], 1)

    def cls(z):
        z = z.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(z), z], 1)

    lesion = {"s1": 1.25 * s1, "s2": 1.25 * s2, "fp": (m.view(u, 4, 1, 1) * SCALES).mean(1, keepdim=True) * weak}
    expected = {}
    for task, head in (("seg", seg), ("cls", cls)):
        conf, pseudo = head(1.25 * weak).softmax(1).max(1)
        for stream, z in lesion.items():
            expected[f"{task}_{stream}"] = masked_ce(head(z), pseudo, conf >= 0.7)
            assert logs[f"{task}_{stream}"].item() == pytest.approx(expected[f"{task}_{stream}"].item(), rel=1e-5)
    assert expected["seg_s1"].item() != pytest.approx(expected["seg_s2"].item(), rel=1e-3)
    x, mask, label = labeled
    assert logs["seg_sup"].item() == pytest.approx(seg_supervised_loss(seg(1.25 * x), mask).item(), rel=1e-5)
    assert logs["cls_sup"].item() == pytest.approx(F.cross_entropy(cls(1.25 * x), label).item(), rel=1e-5)
    unsup = {t: 0.25 * (expected[f"{t}_s1"] + expected[f"{t}_s2"]) + 0.5 * expected[f"{t}_fp"] for t in ("seg", "cls")}
    want = 0.5 * (logs["seg_sup"] + unsup["seg"]) + 1.1 * (logs["cls_sup"] + unsup["cls"])
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    total.backward()
    assert stub.encoder.s.grad is not None


def test_threshold_keeps_ties_and_drops_below():
    """keep = max p ≥ τ: at τ = 0.5 every pixel is kept (ties included); at τ = 1 none is, and the unsupervised
    terms are 0. Mutations checked: > instead of ≥; the threshold not read from ``unimatch.threshold``."""
    labeled, unlabeled = _batch(seed=2)
    for tau, kept in ((0.5, 1.0), (1.0, 0.0)):
        stub = Stub()
        method = build_method(_config(threshold=tau), torch.device("cpu"), stub)
        _, logs, _ = method.step(stub, labeled, tuple(torch.zeros_like(v) for v in unlabeled), 0)
        assert logs["seg_keep_ratio"].item() == kept and logs["cls_keep_ratio"].item() == kept
        if kept == 0.0:
            assert all(logs[f"{t}_{s}"].item() == 0.0 for t in ("seg", "cls") for s in ("s1", "s2", "fp"))


@pytest.mark.parametrize("shared", [True, False])
def test_feature_dropout_reaches_both_heads_of_hermesnet(shared):
    """On the real network (tiny smoke model) the perturbed rows' segmentation and classification logits differ
    from the clean weak rows', with one shared encoder or one per task. Mutation checked: only ``encoder`` hooked
    (with ``model.shared_encoder: false`` the classification head then sees clean features)."""
    from Code.engine.builders import build_model

    config = load_config(str(SMOKE_CONFIG), [{"method": "unimatch", "model": {"shared_encoder": shared}}])
    torch.manual_seed(0)
    model = build_model(config)
    method = build_method(config, torch.device("cpu"), model)
    x, weak = torch.randn(1, 1, 64, 64), torch.randn(2, 1, 64, 64)
    views = method.forward_streams(model, x, weak, weak + 0.1, weak - 0.1)
    for key in ("seg_logits", "cls_logits"):
        assert views["fp"][key].shape == views["w"][key].shape
        assert not torch.allclose(views["fp"][key], views["w"][key], atol=1e-5), key


def test_unlabeled_stream_gives_two_independent_strong_views(phantom_split):
    """The method asks for 2 strong views; the dataset then returns (weak, strong_1, strong_2[, mask, label]),
    strong_1 identical to the one-view stream's (other methods' data unchanged), strong_2 another draw.
    Mutations checked: ``strong_views`` not read from the method; the second view drawn before the first (changes
    strong_1); the second view a copy of the first."""
    assert strong_views(_config()) == 2 and strong_views(load_config(None, [{"method": "fixmatch"}])) == 1
    part = phantom_split / "train" / "4" / "unlabeled"
    one = SplitDataset(part, "unlabeled", size=64, truth=True)
    two = SplitDataset(part, "unlabeled", size=64, truth=True, strong_views=2)
    assert two.n_views == 3 and one.n_views == 2 and two.has_truth
    a, b = one[0], two[0]
    assert len(b) == len(a) + 1
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(b[1], b[2]) and not torch.equal(b[0], b[2])
    assert torch.equal(a[2], b[3]) and torch.equal(a[3], b[4])  # the truth follows the views


@pytest.mark.slow
def test_unimatch_trains_on_the_phantom_and_resumes_exactly(phantom_split, tmp_path, capsys):
    """``--method unimatch`` end to end on HermesNet (two strong views through the trainer, pseudo-label
    diagnostics on): 3 iterations straight, and 3 stopped after 2 and resumed, end with bit-equal weights (the
    dropout masks and both strong views replayed; the method has no state of its own, ``method`` is ``{}``).
    Mutations checked: the trainer splitting the unlabeled batch after two tensors (strong view 2 taken for the
    truth); the unlabeled stream built with one strong view."""
    runs = {name: tmp_path / name for name in ("whole", "parts")}

    def run(out, *extra):
        argv = ["--config", str(SMOKE_CONFIG), "--data", str(phantom_split), "--labels", "4", "--out", str(out),
                "--device", "cpu", "--method", "unimatch", "--set", "train.iters=3", "--set", "eval.every=10",
                *extra]
        assert train_main(argv, task="seg") == 0

    run(runs["whole"])
    run(runs["parts"], "--stop-after", "2")
    assert torch.load(runs["parts"] / "checkpoints" / "latest.pt", weights_only=False)["step"] == 2
    run(runs["parts"])
    assert "from step 2" in capsys.readouterr().err
    whole, parts = (torch.load(runs[k] / "checkpoints" / "latest.pt", weights_only=False) for k in ("whole", "parts"))
    assert whole["step"] == parts["step"] == 3 and whole["config"]["method"] == "unimatch"
    assert whole["method"] == parts["method"] == {}
    assert set(whole["model"]) == set(parts["model"])
    assert all(torch.equal(v, parts["model"][k]) for k, v in whole["model"].items())
    assert (runs["whole"] / "pseudo_labels.csv").is_file()  # the truth, after the two strong views, reached the monitor
