"""LowRes two-stage inference ("Accelerating 3D Medical Image Segmentation by Adaptive Small-Scale Target
Localization", J. Imaging 7(2):35, 2021; reference code neuro-ml/low-resolution).

Stage one: the image, averaged down 2x per axis, goes through a light U-Net-like network that
predicts a foreground probability map at 1/8 resolution (trained with weighted cross-entropy against
the label max-pooled by 8). The map is thresholded, split into 26-connected components, and each
component gets a bounding box with a margin (in low-resolution voxels), clipped to the volume; the
boxes are scaled to full resolution. Stage two: a detailed network segments each box from the image
and the stage-one features of the same box (shared, not recomputed) and writes it into a full-size
map that starts at zero; where boxes overlap, the larger value wins. Stage one is frozen while stage
two trains. One target class: sigmoid; several: softmax.

Train in two runs of the base trainer, ``model.extra.stage=1``, then ``model.extra.stage=2`` with
``train.init_checkpoint`` pointing at the first run (see ``configs/lowres_chest.yaml``); predict with
``leanseg predict --model RUN`` (``inference.mode`` whole: the model does its own cropping).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leanseg.config import ModelConfig, build_section
from leanseg.models.protocol import Graph, OnnxPart, SegmentationModel
from leanseg.nn.blocks import ConvNormAct, ResidualBlock
from leanseg.registry import MODELS

Box = tuple[slice, slice, slice]


def low_res_boxes(prob: np.ndarray, threshold: float = 0.5, margin: int = 1) -> list[Box]:
    """Bounding boxes (with ``margin`` voxels, clipped to the map) of the components of ``prob >= threshold``.

    Args:
        prob: (D, H, W) low-resolution probability map.
    Returns:
        One tuple of slices per component, in component order.
    """
    import scipy.ndimage as ndi

    from leanseg.objects import components

    labels, n = components(np.asarray(prob) >= threshold)
    boxes = []
    for sl in ndi.find_objects(labels, max_label=n):
        if sl is None:
            continue
        boxes.append(tuple(slice(max(s.start - margin, 0), min(s.stop + margin, size)) for s, size in zip(sl, labels.shape)))
    return boxes  # type: ignore[return-value]


def scale_box(box: Box, factor: int | Sequence[int], full_shape: Sequence[int]) -> Box:
    """A low-resolution box in full-resolution voxels (``factor`` per axis), clipped to ``full_shape``."""
    f = (factor,) * 3 if isinstance(factor, int) else tuple(factor)
    return tuple(slice(s.start * k, min(s.stop * k, n)) for s, k, n in zip(box, f, full_shape))  # type: ignore[return-value]


def box_fraction(boxes: Sequence[Box], shape: Sequence[int]) -> float:
    """Share of the volume's voxels inside at least one box."""
    covered = np.zeros(tuple(shape), bool)
    for b in boxes:
        covered[b] = True
    return float(covered.mean())


def paste_boxes(shape: Sequence[int], boxes: Sequence[Box], outputs: Sequence[torch.Tensor], channels: int = 1) -> torch.Tensor:
    """A zero (C, D, H, W) map with each output (C, d, h, w) written into its box (element-wise max where boxes overlap)."""
    full = torch.zeros((channels, *shape), dtype=outputs[0].dtype if outputs else torch.float32)
    for b, out in zip(boxes, outputs):
        region = full[(slice(None), *b)]
        if tuple(out.shape[-3:]) != tuple(region.shape[-3:]):
            raise ValueError(f"output {tuple(out.shape)} does not fit its box {tuple(region.shape)}")
        full[(slice(None), *b)] = torch.maximum(region, out)
    return full


# ----------------------------------------------------------------------------------------------
# networks


class StageOne(nn.Module):
    """The light low-resolution network: the image averaged down 2x per axis, a small U-Net to 1/16,
    decoded back to 1/8 of the input resolution.

    Shapes: (B, C, D, H, W), each size a multiple of 16 -> features (B, F, D/8, H/8, W/8) and
    foreground logits (B, 1, D/8, H/8, W/8).
    """

    def __init__(self, in_channels: int, features: Sequence[int] = (16, 32, 64, 96)) -> None:
        super().__init__()
        f0, f1, f2, f3 = features
        self.stem = ConvNormAct(in_channels, f0)
        self.down1 = ResidualBlock(f0, f1, stride=2)  # 1/4
        self.down2 = ResidualBlock(f1, f2, stride=2)  # 1/8
        self.down3 = ResidualBlock(f2, f3, stride=2)  # 1/16
        self.up = nn.ConvTranspose3d(f3, f2, 2, stride=2, bias=False)
        self.fuse = nn.Sequential(ConvNormAct(2 * f2, f2), ConvNormAct(f2, f2))
        self.head = nn.Conv3d(f2, 1, 1)
        self.out_features = f2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.avg_pool3d(x, 2)
        e2 = self.down2(self.down1(self.stem(x)))
        feats = self.fuse(torch.cat([self.up(self.down3(e2)), e2], 1))
        return feats, self.head(feats)


class DetailNet(nn.Module):
    """The detailed full-resolution network for one box: a U-Net down to 1/8 whose bottleneck also takes
    the stage-one features of the same box.

    Shapes: image (B, C, 8d, 8h, 8w), features (B, F, d, h, w) -> logits (B, K', 8d, 8h, 8w).
    """

    def __init__(self, in_channels: int, shared_features: int, out_channels: int, features: Sequence[int] = (8, 16, 32, 48)) -> None:
        super().__init__()
        g0, g1, g2, g3 = features
        self.stem = ConvNormAct(in_channels, g0)
        self.down = nn.ModuleList([ResidualBlock(g0, g1, stride=2), ResidualBlock(g1, g2, stride=2), ResidualBlock(g2, g3, stride=2)])
        self.bottleneck = ConvNormAct(g3 + shared_features, g3)
        widths = [g3, g2, g1, g0]
        self.ups = nn.ModuleList([nn.ConvTranspose3d(widths[i], widths[i + 1], 2, stride=2, bias=False) for i in range(3)])
        self.decode = nn.ModuleList([ConvNormAct(2 * widths[i + 1], widths[i + 1]) for i in range(3)])
        self.head = nn.Conv3d(g0, out_channels, 1)

    def forward(self, image: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(image)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.bottleneck(torch.cat([skips.pop(), shared], 1))
        for up, dec in zip(self.ups, self.decode):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return self.head(x)


class LowResNet(SegmentationModel):
    """Both stages. ``stage`` says what is trained: 1 = the low-resolution network alone; 2 = the detailed
    network with stage one frozen (load stage one's weights with ``train.init_checkpoint``).

    Training (``model.train()``) returns a dict the trainer hands to :meth:`training_loss`. Inference
    (``model.eval()``) runs the two-stage pass on a whole padded volume and returns log-probabilities
    (B, K, D, H, W), so the base predictor's softmax recovers the probabilities; outside the boxes
    every voxel is background. With ``stage=1`` inference returns stage one's map, upsampled, as
    class 1 (a coarse check during stage-one training). :attr:`last_stats` holds the time of each
    stage, the number of boxes and the share of the volume sent to stage two for the last call.
    """

    FACTOR = 8  # stage one predicts at 1/8 resolution
    whole_volume = True  # the predictor runs it on whole volumes: it crops its own regions
    has_own_loss = True  # one loss per stage (training_loss)
    onnx_graphs = ("lowres_stage_one", "lowres_detail")  # one graph per network; the box loop runs in Python

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stage: int = 2,
        low_features: Sequence[int] = (16, 32, 64, 96),
        detail_features: Sequence[int] = (8, 16, 32, 48),
        threshold: float = 0.5,
        margin: int = 1,
        pos_weight: float = 10.0,
    ) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"model.extra.stage is {stage}; use 1 (low-resolution network) or 2 (detailed network)")
        self.stage, self.num_classes = stage, num_classes
        self.threshold, self.margin, self.pos_weight = threshold, margin, pos_weight
        self.binary = num_classes == 2  # sigmoid for one target class, softmax for several
        self.stage_one = StageOne(in_channels, low_features)
        self.detail = DetailNet(in_channels, self.stage_one.out_features, 1 if self.binary else num_classes, detail_features)
        if stage == 2:
            self.stage_one.requires_grad_(False)
        from monai.losses import DiceCELoss

        common = {"batch": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
        self._dice_ce = (
            DiceCELoss(sigmoid=True, **common)
            if self.binary
            else DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, **common)
        )
        self.divisor = (2 * self.FACTOR,) * 3
        self.last_stats: dict[str, float] = {}

    def train(self, mode: bool = True) -> LowResNet:
        super().train(mode)
        if self.stage == 2:
            self.stage_one.eval()  # frozen: it behaves as at inference
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.training:
            if self.stage == 1:
                return {"low_logits": self.stage_one(x)[1]}
            with torch.no_grad():
                feats, _ = self.stage_one(x)
            return {"logits": self.detail(x, feats)}
        return torch.cat([self.infer(xi[None]) for xi in x])

    def infer(self, x: torch.Tensor, stage_one: Callable | None = None, detail: Callable | None = None) -> torch.Tensor:
        """Two-stage inference on one padded volume (1, C, D, H, W) -> log-probabilities (1, K, D, H, W).

        ``stage_one`` (image -> features, low-resolution logits) and ``detail`` (image box, features box -> logits)
        replace the two networks, e.g. by ONNX Runtime sessions (:meth:`onnx_forward`); the box loop stays here."""
        stage_one = stage_one or self.stage_one
        detail = detail or self.detail
        shape = tuple(x.shape[-3:])
        t0 = time.perf_counter()
        feats, low = stage_one(x)
        prob = torch.sigmoid(low.float())[0, 0]
        t1 = time.perf_counter()
        boxes: list[Box] = []
        full_boxes: list[Box] = []
        if self.stage == 1:
            fg = F.interpolate(prob[None, None], size=shape, mode="trilinear")[0]
            fg_maps = torch.cat([fg, torch.zeros((self.num_classes - 2, *shape))])
        else:
            boxes = low_res_boxes(prob.cpu().numpy(), self.threshold, self.margin)
            full_boxes = [scale_box(b, self.FACTOR, shape) for b in boxes]
            outs = []
            for b, full in zip(boxes, full_boxes):
                logits = detail(x[(slice(None), slice(None), *full)], feats[(slice(None), slice(None), *b)]).float()[0]
                outs.append(torch.sigmoid(logits) if self.binary else torch.softmax(logits, 0)[1:])
            fg_maps = paste_boxes(shape, full_boxes, outs, channels=self.num_classes - 1)
        background = (1 - fg_maps.sum(0, keepdim=True)).clamp_min(0)
        t2 = time.perf_counter()
        self.last_stats = {
            "stage1": t1 - t0,
            "stage2": t2 - t1,
            "boxes": float(len(boxes)),
            "fraction": box_fraction(full_boxes, shape) if full_boxes else 0.0,
        }
        return torch.log(torch.cat([background, fg_maps]).clamp_min(1e-8))[None]

    def onnx_parts(self, example: torch.Tensor) -> dict[str, OnnxPart]:
        """Each network as its own graph; the box loop between them runs in Python (:meth:`onnx_forward`)."""
        with torch.no_grad():
            feats, _ = self.stage_one(example)
        return {
            "lowres_stage_one": OnnxPart(self.stage_one, (example,), ("image",), ("features", "low_logits")),
            "lowres_detail": OnnxPart(self.detail, (example, feats), ("image", "features"), ("logits",)),
        }

    def onnx_forward(self, graphs: Mapping[str, Graph]) -> Callable[[torch.Tensor], torch.Tensor]:
        one, two = graphs["lowres_stage_one"], graphs["lowres_detail"]
        return lambda x: torch.cat([self.infer(xi[None], stage_one=one, detail=lambda i, f: two(i, f)[0]) for xi in x])

    def training_loss(self, out: dict[str, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """Stage one: weighted binary cross-entropy against the foreground max-pooled by 8.
        Stage two: Dice + cross-entropy (sigmoid for one class, softmax for several) at full resolution.

        ``label``: (B, 1, D, H, W) class indices as floats.
        """
        if self.stage == 1:
            target = F.max_pool3d((label > 0).float(), self.FACTOR)
            weight = torch.tensor(self.pos_weight, dtype=torch.float32)
            return F.binary_cross_entropy_with_logits(out["low_logits"].float(), target, pos_weight=weight)
        logits = out["logits"].float()
        return self._dice_ce(logits, (label > 0).float() if self.binary else label)


@dataclass(frozen=True)
class LowResSettings:
    """``model.extra`` of ``lowres``."""

    stage: int = 2  # 1: train the low-resolution network; 2: the detailed one (stage one frozen)
    low_features: tuple[int, ...] = (16, 32, 64, 96)
    detail_features: tuple[int, ...] = (8, 16, 32, 48)
    threshold: float = 0.5  # stage-one probability that sends a region to stage two
    margin: int = 1  # low-resolution voxels added around each region
    pos_weight: float = 10.0  # weight of positives in stage one's loss


@MODELS.register("lowres", settings=LowResSettings)
def lowres(in_channels: int, out_channels: int, cfg: ModelConfig, features: Sequence[int], strides: Sequence[Sequence[int]]) -> nn.Module:
    """LowRes; settings in ``model.extra``: stage, low_features, detail_features, threshold, margin, pos_weight.
    The plan's widths and strides are not used: the two networks have their own."""
    return LowResNet(in_channels, out_channels, **asdict(build_section(LowResSettings, cfg.extra, "model.extra")))
