"""Build the network and the optimisers from a resolved config."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from Code.models import HermesNet


def build_model(config: Dict[str, Any]) -> HermesNet:
    """``HermesNet`` from ``config['model']`` and the data's channel count (:meth:`HermesNet.from_config`)."""
    return HermesNet.from_config(config)


def build_optimizers(model: HermesNet, config: Dict[str, Any]) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The reference's pair: Adam for the segmentation side (encoder when shared), SGD (or Adam, with
    ``train.cls_optimizer: adam``) for the classification side."""
    train = config["train"]
    groups = model.param_groups()
    seg_opt = torch.optim.Adam(groups["seg"], lr=train["seg_lr"], weight_decay=train["seg_weight_decay"])
    if train["cls_optimizer"] == "adam":
        cls_opt = torch.optim.Adam(groups["cls"], lr=train["cls_lr"], weight_decay=train["cls_weight_decay"])
    else:
        cls_opt = torch.optim.SGD(groups["cls"], lr=train["cls_lr"], momentum=train["cls_momentum"],
                                  weight_decay=train["cls_weight_decay"])
    return seg_opt, cls_opt
