"""Build the network and the optimisers from a resolved config."""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

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


def add_networks(networks: Sequence[HermesNet], optimizers: Tuple[torch.optim.Optimizer, torch.optim.Optimizer],
                 channels_last: bool = False) -> None:
    """Networks a method trains besides the run's (``Method.extra_networks``, e.g. abd's second student) join the
    (seg, cls) optimisers as further param groups at the optimisers' defaults, so that one optimiser step, one
    GradScaler and one lr schedule (built after this) cover them; no network: the optimisers are left as they were."""
    for net in networks:
        if channels_last:
            net.to(memory_format=torch.channels_last)
        groups = net.param_groups()
        for opt, name in zip(optimizers, ("seg", "cls")):
            if groups[name]:
                opt.add_param_group({"params": groups[name]})
