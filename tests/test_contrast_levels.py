"""Where a contrastive loss can lie (``supcon_levels``): the floor and the chance level logged beside the image and
pixel contrast, by value.

Mutations checked: chance counting the anchor itself as a key; empty bank slots counted as keys; the floor using
|P| + 1 (the anchor counted as its own positive); the levels ignoring the anchor weights; Hermes not logging them.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from Code.losses import PixelContrastLoss, SupConLoss
from Code.losses.contrastive import supcon_levels

pytestmark = pytest.mark.usefixtures("single_thread")


def test_levels_by_hand():
    labels, bank = torch.tensor([0, 0, 1]), torch.tensor([0, 1, -1])  # 3 anchors, 2 filled bank slots
    floor, chance = supcon_levels(labels, None, bank, 2, 0.1, 0.1).tolist()
    assert chance == pytest.approx(math.log(4))  # 2 other anchors + 2 bank entries
    assert floor == pytest.approx((math.log(2) + math.log(2) + math.log(1)) / 3)
    floor, chance = supcon_levels(labels, torch.tensor([1.0, 0.0, 1.0]), bank, 2, 0.1, 0.2).tolist()
    assert floor == pytest.approx(0.5 * (math.log(2) + 0) / 2) and chance == pytest.approx(0.5 * math.log(4))
    # an anchor without a positive is left out of both, as out of the loss; an invalid label is a key, no anchor
    floor, chance = supcon_levels(torch.tensor([0, 1, -1]), None, None, 2, 1.0, 1.0).tolist()
    assert floor == 0.0 and chance == 0.0  # no anchor qualifies
    floor, chance = supcon_levels(torch.tensor([0, 0, -1]), None, None, 2, 1.0, 1.0).tolist()
    assert floor == pytest.approx(0.0) and chance == pytest.approx(math.log(2))


def test_loss_meets_chance_and_floor():
    loss = SupConLoss(temperature=0.05, base_temperature=0.05, num_classes=2)
    labels = torch.tensor([0, 1, 0, 1, 1])
    same = F.normalize(torch.ones(5, 2, 4), dim=-1)  # nothing learned: every similarity equal
    value = loss(same, labels, bank_features=same[:3, 0], bank_labels=torch.tensor([0, 1, -1]))
    assert value.item() == pytest.approx(loss.last_levels[1].item(), rel=1e-5)  # exactly chance
    direction = torch.tensor([1.0, 0, 0, 0])
    apart = torch.stack([direction if y == 0 else -direction for y in labels.tolist()])[:, None].expand(5, 2, 4)
    value = loss(apart.contiguous(), labels)
    assert value.item() == pytest.approx(loss.last_levels[0].item(), abs=1e-6)  # perfectly separated: the floor
    rand = F.normalize(torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    value = loss(rand, labels)
    assert loss.last_levels[0] <= value  # the floor bounds every embedding (above chance is possible: worse)


def test_pixel_levels_and_hermes_logs():
    from test_step import StubNet, labeled_batch, make_config, views
    from Code.methods import build_method

    pixel = PixelContrastLoss(temperature=0.1, max_samples=16, max_views=4, min_pixels=1)
    embed = F.normalize(torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    labels = (torch.arange(32).reshape(2, 4, 4) % 2)
    value = pixel(embed, labels, labels)
    anchors = pixel.last_anchors[1]
    assert torch.equal(pixel.last_levels, supcon_levels(anchors, None, None, 2, 0.1, 0.1))
    assert pixel.last_levels[0] <= value
    method = build_method(make_config(), torch.device("cpu"))
    weak, strong = views([6.0, -6.0])
    _, logs, _ = method.step(StubNet(), labeled_batch(), (weak, strong), 50)
    for name in ("image_contrast", "pixel_contrast"):
        floor, chance = logs[f"{name}/floor"], logs[f"{name}/chance"]
        assert 0 <= floor <= chance and floor <= logs[name] + 1e-6
