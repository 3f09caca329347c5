"""HermesNet: U-Net segmentation + classification branch with inter-task attention and saliency
(docs/design.md, "Network").

    x ──► encoder ──► f0…f5 ──► U-Net decoder, deep part: s32 = center(f5), d16, d8
          (cls_encoder when shared_encoder=False)            │ (detached unless detach_seg_for_cls=False)
           └──► f3, f4, f5 ──► ClassificationBranch (+ IAS with s8=d8, s16=d16, s32 when ias) ──► c5 (1/32)
                                 c5 ──► GAP ──► cls_head (linear) ──► cls_logits B×K
                                 c5, cls_head ──► CAM of the predicted class (B×1×H/32×W/32)
          saliency map S (B×1×H/4×W/4, CAM or input gradient) ──► concatenated to the skip f2 of the 1/4 stage
          d8 ──► U-Net decoder, shallow part (1/4 with [f2; S], 1/2, 1/1) ──► seg_head ──► seg_logits B×2×H×W

Heads: pixel_embed = PixelProjection(d8) (B×D×H/8×W/8, unit norm); image_embed = MLP(GAP(c5)) (B×d, unit norm);
consist_seg = MLP(pool(d8; p_lesion)), consist_cls = MLP(pool(c5; CAM)) (B×256), where pool is the weighted mean
of the feature under the task's own lesion map (the segmentation's lesion probability, the classifier's CAM;
weights detached, +0.01 floor so that an empty map degrades to global average pooling): each task's feature of
*where it thinks the lesion is*, which the inter-task consistency loss pulls together.

IAS + saliency together are not circular: the classification branch needs the decoder features at 1/32, 1/16
and 1/8, the decoder needs the saliency only at its 1/4 stage, which comes after them. The forward therefore runs
encoder → decoder down to 1/8 → classification branch → saliency → decoder from 1/4 on; one pass, no iteration.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Sequence

import torch
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from Code.errors import UserError
from Code.models.encoders import build_encoder
from Code.models.heads import ClassificationBranch, MLPProjection, PixelProjection, masked_average_pool
from Code.models.saliency import SALIENCY_MODES, class_activation_map, input_gradient_saliency

_BOOL_SETTINGS = ("ias", "saliency", "shared_encoder", "detach_seg_for_cls", "detach_saliency")
_DIM_SETTINGS = ("num_classes", "pixel_embed_dim", "image_embed_dim", "consist_dim")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(settings: Dict) -> None:
    """Raise a one-line UserError naming the first invalid ``model.*`` setting."""
    for name in _BOOL_SETTINGS:
        if not isinstance(settings[name], bool):
            raise UserError(f"model.{name} must be true or false, got {settings[name]!r}")
    for name in _DIM_SETTINGS:
        if not _is_int(settings[name]) or settings[name] < (2 if name == "num_classes" else 1):
            raise UserError(f"model.{name} must be a positive integer (num_classes >= 2), got {settings[name]!r}")
    if settings["in_channels"] not in (1, 3) or not _is_int(settings["in_channels"]):
        raise UserError(f"model.in_channels must be 1 or 3, got {settings['in_channels']!r}")
    if settings["saliency_mode"] not in SALIENCY_MODES:
        raise UserError(f"model.saliency_mode must be one of {', '.join(SALIENCY_MODES)}, "
                        f"got {settings['saliency_mode']!r}")
    channels = settings["decoder_channels"]
    if (not isinstance(channels, (list, tuple)) or len(channels) != 5
            or not all(_is_int(c) and c > 0 for c in channels)):
        raise UserError(f"model.decoder_channels must be 5 positive integers, got {channels!r}")
    if not isinstance(settings["encoder_name"], str) or not settings["encoder_name"]:
        raise UserError(f"model.encoder_name must be an smp encoder name, got {settings['encoder_name']!r}")


class HermesNet(nn.Module):
    """Joint lesion segmentation (2 classes) and image classification (``num_classes``); see module docstring.

    ``forward(x)`` with x: B×in_channels×H×W, H and W multiples of 32, returns a dict: ``seg_logits`` B×2×H×W,
    ``cls_logits`` B×K, ``pixel_embed`` B×pixel_embed_dim×H/8×W/8, ``image_embed`` B×image_embed_dim,
    ``consist_seg`` and ``consist_cls`` B×consist_dim, and ``saliency`` B×1×H/4×W/4 in [0, 1] when ``saliency``.
    All arguments are keyword-only; unknown or invalid ones raise :class:`UserError`.
    """

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "HermesNet":
        """The network of a resolved config: ``config['model']`` and ``config['data']['in_channels']``."""
        return cls(in_channels=config["data"]["in_channels"], **config["model"])

    def __init__(self, *, encoder_name: str = "resnet34", encoder_weights=None, in_channels: int = 1,
                 num_classes: int = 2, ias: bool = False, saliency: bool = False, saliency_mode: str = "cam",
                 shared_encoder: bool = True, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 pixel_embed_dim: int = 256, image_embed_dim: int = 128, consist_dim: int = 256,
                 detach_seg_for_cls: bool = True, detach_saliency: bool = True, **unknown):
        super().__init__()
        if unknown:
            raise UserError(f"model: unknown setting(s) {', '.join(sorted(unknown))}")
        settings = dict(encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
                        num_classes=num_classes, ias=ias, saliency=saliency, saliency_mode=saliency_mode,
                        shared_encoder=shared_encoder, decoder_channels=decoder_channels,
                        pixel_embed_dim=pixel_embed_dim, image_embed_dim=image_embed_dim, consist_dim=consist_dim,
                        detach_seg_for_cls=detach_seg_for_cls, detach_saliency=detach_saliency)
        _validate(settings)
        self.settings = settings
        self.in_channels, self.num_classes = in_channels, num_classes
        self.ias, self.saliency, self.saliency_mode = ias, saliency, saliency_mode
        self.detach_seg_for_cls, self.detach_saliency = detach_seg_for_cls, detach_saliency
        decoder_channels = list(decoder_channels)

        self.encoder = build_encoder(encoder_name, in_channels, encoder_weights)
        self.cls_encoder = None if shared_encoder else build_encoder(encoder_name, in_channels, encoder_weights)
        encoder_channels = list(self.encoder.out_channels)
        skip_channels = list(encoder_channels)
        skip_channels[2] += int(saliency)  # the saliency map joins the 1/4-scale skip connection
        self.decoder = UnetDecoder(encoder_channels=skip_channels, decoder_channels=decoder_channels, n_blocks=5)
        self.seg_head = SegmentationHead(decoder_channels[-1], 2, kernel_size=3)

        cls_source = self.cls_encoder if self.cls_encoder is not None else self.encoder
        seg_channels_for_ias = (decoder_channels[1], decoder_channels[0], encoder_channels[5]) if ias else None
        self.cls_branch = ClassificationBranch(list(cls_source.out_channels)[3:6], seg_channels=seg_channels_for_ias)
        cls_channels = self.cls_branch.out_channels
        self.cls_head = nn.Linear(cls_channels, num_classes)

        self.pixel_projection = PixelProjection(decoder_channels[1], pixel_embed_dim)
        self.image_projection = MLPProjection(cls_channels, image_embed_dim, normalize=True)
        self.consist_seg_projection = MLPProjection(decoder_channels[1], consist_dim, normalize=False)
        self.consist_cls_projection = MLPProjection(cls_channels, consist_dim, normalize=False)

    def param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters split by optimiser: "seg" (Adam) and "cls" (SGD), each parameter exactly once."""
        seg = [self.encoder, self.decoder, self.seg_head, self.pixel_projection, self.consist_seg_projection]
        cls = [self.cls_branch, self.cls_head, self.image_projection, self.consist_cls_projection]
        if self.cls_encoder is not None:
            cls.insert(0, self.cls_encoder)
        return {name: [p for module in modules for p in module.parameters() if p.requires_grad]
                for name, modules in (("seg", seg), ("cls", cls))}

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise UserError(f"HermesNet expects input B×{self.in_channels}×H×W (model.in_channels), "
                            f"got shape {tuple(x.shape)}")
        if x.shape[2] % 32 or x.shape[3] % 32:
            raise UserError(f"HermesNet input size must be a multiple of 32, got {x.shape[2]}×{x.shape[3]} "
                            f"(resize or pad the images, e.g. to 224×224)")

    def _decode_deep(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """U-Net center and first two blocks → [s32, d16, d8] (1/32, 1/16, 1/8)."""
        x = self.decoder.center(features[5])
        outputs = [x]
        for block, skip in zip(self.decoder.blocks[:2], (features[4], features[3])):
            x = block(x, *skip.shape[-2:], skip_connection=skip)
            outputs.append(x)
        return outputs

    def _decode_shallow(self, d8: torch.Tensor, features: List[torch.Tensor], saliency) -> torch.Tensor:
        """Remaining U-Net blocks (1/4 with [f2; saliency], 1/2, 1/1) → B×decoder_channels[-1]×H×W."""
        skip = features[2] if saliency is None else torch.cat([features[2], saliency.to(features[2].dtype)], 1)
        x = self.decoder.blocks[2](d8, *features[2].shape[-2:], skip_connection=skip)
        x = self.decoder.blocks[3](x, *features[1].shape[-2:], skip_connection=features[1])
        return self.decoder.blocks[4](x, *features[0].shape[-2:], skip_connection=None)

    def _saliency_map(self, cam, cls_logits, x, grad_enabled: bool) -> torch.Tensor:
        size = (x.shape[2] // 4, x.shape[3] // 4)
        if self.saliency_mode == "cam":
            saliency = nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)
        else:
            saliency = input_gradient_saliency(cls_logits, x, size,
                                               create_graph=grad_enabled and not self.detach_saliency)
        return saliency.detach() if self.detach_saliency else saliency

    @staticmethod
    @contextlib.contextmanager
    def _record_graph():
        """Gradient saliency needs the classification path recorded even under no_grad or inference_mode
        (e.g. for the weak view or at evaluation)."""
        with torch.inference_mode(False), torch.enable_grad():
            yield

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        self._check_input(x)
        grad_enabled = torch.is_grad_enabled()
        input_gradient = self.saliency and self.saliency_mode == "gradient"
        with self._record_graph() if input_gradient else contextlib.nullcontext():
            if input_gradient and not x.requires_grad:
                x = (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)
            features = self.encoder(x)
            cls_features = features if self.cls_encoder is None else self.cls_encoder(x)
            s32, d16, d8 = self._decode_deep(features)
            seg_for_cls = None
            if self.ias:
                seg_for_cls = [d8, d16, s32]
                if self.detach_seg_for_cls:
                    seg_for_cls = [f.detach() for f in seg_for_cls]
            cls_feature = self.cls_branch(cls_features[3:6], seg_for_cls)
            pooled_cls = cls_feature.mean(dim=(2, 3))
            cls_logits = self.cls_head(pooled_cls)
            cam = class_activation_map(cls_feature, self.cls_head.weight, cls_logits.detach().argmax(dim=1))
            saliency = self._saliency_map(cam, cls_logits, x, grad_enabled) if self.saliency else None
        seg_logits = self.seg_head(self._decode_shallow(d8, features, saliency))
        lesion_probability = seg_logits.detach().float().softmax(dim=1)[:, 1:2]
        outputs = {
            "seg_logits": seg_logits,
            "cls_logits": cls_logits,
            "pixel_embed": self.pixel_projection(d8),
            "image_embed": self.image_projection(pooled_cls),
            "consist_seg": self.consist_seg_projection(masked_average_pool(d8, lesion_probability)),
            "consist_cls": self.consist_cls_projection(masked_average_pool(cls_feature, cam.detach())),
        }
        if saliency is not None:
            outputs["saliency"] = saliency
        if not grad_enabled:  # drop the graph that gradient saliency had to record
            outputs = {name: value.detach() for name, value in outputs.items()}
        return outputs
