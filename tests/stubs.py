"""A one-parameter stub network for the methods' by-value tests: outputs chosen by the input.

``seg_logits`` = [0, s·x₀] per pixel (lesion logit = the first input channel), ``cls_logits`` = [0, mean(s·x₀)]
per image; ``s`` (= 1) is the one parameter, so the losses keep a graph.
"""
import torch
from torch import nn


class ScaleStub(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        lesion = self.s * x[:, :1]
        mean = lesion.mean(dim=(1, 2, 3))
        return {"seg_logits": torch.cat([torch.zeros_like(lesion), lesion], 1),
                "cls_logits": torch.stack([torch.zeros_like(mean), mean], 1)}
