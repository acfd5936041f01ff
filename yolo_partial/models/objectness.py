"""ObjectnessDetect: YOLOv5's anchor-based detection head, with an objectness output, behind Ultralytics' Detect API.

Each level predicts, for each of its anchors and cells, (x, y, w, h, objectness, class logits). Training returns the raw
per-level maps for YOLOv5's loss (yolo_partial.losses.objectness); inference returns Ultralytics' Detect format,
(B, 4 + nc, N) with xywh pixel boxes and scores sigmoid(obj) * sigmoid(cls), so Ultralytics' NMS, validator, predictor
and exporter use it unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from ultralytics.nn.modules import Detect
from ultralytics.utils.ops import xywh2xyxy

YOLOV5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


def decode_boxes(p: torch.Tensor, anchor_wh: torch.Tensor, stride: float | torch.Tensor) -> torch.Tensor:
    """(B, na, H, W, 4) xywh pixel boxes of one level's raw map `p` (B, na, H, W, 5 + nc), YOLOv5's decoding.

    Args:
        p (torch.Tensor): Raw level map.
        anchor_wh (torch.Tensor): (na, 2) anchor sizes in pixels.
        stride (float | torch.Tensor): The level's stride in pixels.
    """
    _, na, h, w, _ = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
    grid = torch.stack((gx, gy), -1).to(p.dtype)  # (H, W, 2) cell column, row
    xy = (p[..., :2].sigmoid() * 2 - 0.5 + grid) * stride
    wh = (p[..., 2:4].sigmoid() * 2) ** 2 * anchor_wh.view(1, na, 1, 1, 2)
    return torch.cat((xy, wh), -1)


class ObjectnessDetect(Detect):
    """YOLOv5's detection head: one 1x1 conv per level predicting na anchors x (4 box, 1 objectness, nc classes).

    A Detect subclass so that DetectionModel computes its strides and Ultralytics' trainer, validator, predictor and
    exporter treat it as a detection head; none of Detect's anchor-free layers exist here.

    Args:
        nc (int): Number of classes.
        anchors (sequence): Per level, the anchors' (w, h) pixel pairs flattened, e.g. YOLOv5's defaults.
        ch (sequence[int]): Input channels of each level.

    Examples:
        >>> head = ObjectnessDetect(nc=3, ch=(64, 128, 256))
        >>> head.stride = torch.tensor([8.0, 16.0, 32.0])
        >>> y, raw = head.eval()([torch.rand(1, c, 64 // s, 64 // s) for c, s in zip((64, 128, 256), (8, 16, 32))])
        >>> y.shape  # (B, 4 + nc, 3 anchors x (8*8 + 4*4 + 2*2) cells)
        torch.Size([1, 7, 252])
    """

    # Detect's anchor-free branches, absent; Ultralytics probes them: it iterates cv2 (weight loading) and skips a None cv3
    cv2, cv3 = (), None

    def __init__(self, nc: int = 80, anchors: Any = YOLOV5_ANCHORS, ch: tuple[int, ...] = ()):
        nn.Module.__init__(self)  # Detect.__init__ would build the anchor-free layers
        self.nc, self.nl = nc, len(ch)
        self.na = len(anchors[0]) // 2
        self.no = 5 + nc  # outputs per anchor
        self.stride = torch.zeros(self.nl)  # set by DetectionModel
        self.register_buffer("anchor_wh", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    @property
    def end2end(self) -> bool:
        """Always False: there is no one-to-one branch, predictions go through NMS."""
        return False

    @end2end.setter
    def end2end(self, value: bool) -> None:
        """Ignored; validators and exporters set it on every Detect head."""

    def forward(self, x: list[torch.Tensor]) -> dict | torch.Tensor | tuple[torch.Tensor, dict]:
        """Run the head on the level feature maps.

        Returns:
            In training, {"feats": x, "maps": [(B, na, H, W, 5 + nc) raw maps]}; in inference the (B, 4 + nc, N)
            predictions, alone in export mode and otherwise as (predictions, training dict).
        """
        maps = []
        for conv, xi in zip(self.m, x):
            b, _, h, w = xi.shape
            maps.append(conv(xi).view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        raw = {"feats": x, "maps": maps}
        if self.training:
            return raw
        y = self._inference(maps)
        return y if self.export else (y, raw)

    def _inference(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, 4 + nc, N) boxes (xywh pixels; xyxy when an exporter embeds NMS) and class scores, N = sum of na*H*W."""
        out = []
        for i, p in enumerate(maps):
            box = decode_boxes(p, self.anchor_wh[i], self.stride[i])
            scores = p[..., 4:5].sigmoid() * p[..., 5:].sigmoid()  # YOLOv5's confidence: objectness x class
            out.append(torch.cat((box, scores), -1).view(p.shape[0], -1, 4 + self.nc))
        y = torch.cat(out, 1)
        if self.xyxy:
            y = torch.cat((xywh2xyxy(y[..., :4]), y[..., 4:]), -1)
        return y.permute(0, 2, 1)

    def bias_init(self) -> None:
        """YOLOv5's prior: about 8 objects per 640-pixel image and class probability 0.6 / nc (needs the strides)."""
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.data.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:] += math.log(0.6 / (self.nc - 0.99999))

    @classmethod
    def from_row(cls, row: list, d: dict, stand_in: Detect) -> ObjectnessDetect:
        """Build the head of a model YAML's last row `[from, n, 'ObjectnessDetect', args]` (see yolo_partial.models).

        Args:
            row (list): The YAML row; string args name top-level YAML keys (e.g. `[nc, anchors]`).
            d (dict): The model YAML.
            stand_in (Detect): The Detect that Ultralytics' parse_model built in the row's place, for its channels.
        """
        f, _, _, args = row
        args = [d[a] if isinstance(a, str) and a in d else a for a in args]
        head = cls(*args, ch=[seq[0].conv.in_channels for seq in stand_in.cv2])
        head.i, head.f, head.type = stand_in.i, f, f"{cls.__module__}.{cls.__name__}"
        head.np = sum(x.numel() for x in head.parameters())
        return head
