"""A one-parameter stub network for the methods' by-value tests: outputs chosen by the input.

``seg_logits`` = [0, s·x₀] per pixel (lesion logit = the first input channel), ``cls_logits`` = [0, mean(s·x₀)]
per image; ``s`` (= 1 unless given) is the one parameter, so the losses keep a graph. ``seen`` records every batch
the stub was given (detached copies), so that a test can check what a method fed the network.
"""
import torch
from torch import nn


class ScaleStub(nn.Module):
    def __init__(self, s: float = 1.0):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s)))
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        lesion = self.s * x[:, :1]
        mean = lesion.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1)}
