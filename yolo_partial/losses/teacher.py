"""Teacher-student pseudo-labelling (`teacher=True`): a moving average of the student mines the unlabelled objects.

The family this follows: Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) for the averaged teacher; Unbiased Teacher
(Liu et al., ICLR 2021) for the weak view to the teacher and the strong, geometry-preserving view to the student;
Calibrated Teacher (Wang et al., AAAI 2023, "Calibrated Teacher for Sparsely Annotated Object Detection") for making
one score rule work for every class and for down-weighting the pseudo boxes it is less sure of; SparseDet (Suri et al.,
ICCV 2023) and Co-Student (ECCV 2024) for treating the middle band of scores as neither object nor background. This is
a port to Ultralytics' anchor-free loss, not a reimplementation of any one of them.

Every training batch (trainer side, `Teacher.preprocess_batch`):

1. The teacher is looked up afresh (Ultralytics rebuilds its EMA on resume and NaN recovery): `teacher_decay=0` uses
   the trainer's own `ModelEMA`; `teacher_decay=d` keeps a separate average of the student, updated after every
   optimizer step with decay d (ramped as Ultralytics ramps its EMA, over `RAMP` updates), and restarted from the
   trainer's EMA whenever Ultralytics replaces that EMA.
2. It runs in eval mode under no_grad on the batch exactly as Ultralytics augmented it (the weak view). Its per-anchor
   boxes and class probabilities come from the branch the head infers with (one-to-one on YOLO26).
3. Calibration data, kept over the epoch as per-class histograms: for every labelled box, the teacher's best
   probability of the box's class among its predictions that overlap the box with IoU >= `CAL_IOU`; and the scores
   of the teacher's detections (class-wise NMS, score >= `LO_MIN`), split into those matching a labelled box of their
   class (IoU >= `CAL_IOU`) and the others.
4. Mining (from epoch `teacher_warmup` on): class-wise NMS at `teacher_nms`; boxes overlapping a GT of their class
   with IoU > `teacher_gt_iou` are skipped (that object is labelled). `teacher_classes` says what the teacher may
   assume of an object's class: `any` nothing; `one` one class per object, so boxes on a GT of any class are skipped
   too (a labelled object's class is known: another class's box on it is a confusion, the teacher's commonest
   invented box) and of boxes of different classes on one object (IoU > `teacher_nms`) only the best is kept; `sure`
   as `one`, but an object on which two classes reach tau_lo gets no positive (all its boxes are uncertain: the teacher
   has not decided its class, and a wrong-class pseudo label teaches the confusion it came from). The rest split by
   their class's thresholds:
   score >= tau_hi: extra positive; tau_lo <= score < tau_hi: uncertain; below: ordinary background. Positives of a
   class that outnumber `teacher_unmatched` times its label-matching detections at tau_hi in this very batch are
   demoted to uncertain (`demote_invented`: the thresholds' bound on invented boxes, applied at once, with calibrated
   and fixed thresholds alike; `teacher_unmatched=inf` lifts it).
5. With `teacher_strong=True`, the student's images are replaced by a strong view of them (`strong_view`: photometric
   jitter and cutout, no geometric change, so every label and teacher box stays valid), as Unbiased Teacher does. It
   is off by default: on the accuracy benchmark (shapes, hard, 15 epochs from scratch) it cost 4.4 mAP50 points
   against the same teacher without it, one seed (benchmarks/results/accuracy_cpu/ablation.md).

In the loss (`TeacherLoss` around the criterion, and `Teacher.apply` inside every PartialDetectionLoss): the positives
are appended to the GT, so Ultralytics' assigner gives them anchors like any label; with `teacher_soft=True` their
classification target is capped at the teacher's score and their box terms are weighted by it (the student learns
the teacher's confidence and never more, so a pseudo box cannot inflate itself from one batch to the next; the
confidence-weighted pseudo positives of the Calibrated Teacher family, in the form that suits IoU-aware targets). The anchors whose centre
lies in an uncertain box of class c leave the background term of class c (`Terms.ignore_background`, the mechanism
ignore regions share). Terms asserted by class-partial labels are never relaxed: teacher boxes of a class asserted at
their centre are dropped before the loss (`class_partial.drop_asserted`, as Co-mining does), anchors of `Terms.asserted`
leave no uncertain box's background, and a pseudo positive reaching an asserted term is turned back into background.
Images without any label are verified background (no teacher boxes there) unless `partial_empty=True`.

Thresholds (`teacher_calib=recall`, per class c, recomputed at the end of every epoch from that epoch's histograms,
summed over DDP ranks): tau_hi[c] is the score at which the teacher recalls `teacher_recall_hi` of the labelled boxes
of class c, raised where needed so that at tau_hi and above the teacher's detections of class c that match no label
are at most `teacher_unmatched` times those that match one (the bound on invented boxes: a self-trained teacher can
collapse into predicting one box shape everywhere, which this rule sees as unmatched detections far above the
labelled objects' scores, and stops); tau_lo[c] is the score at which it recalls `teacher_recall_lo` of them; tau_hi
is clamped to `HI_RANGE`, tau_lo to [`LO_MIN`, tau_hi]. A class with fewer than `MIN_BOXES` scored boxes in the epoch takes the thresholds of
all classes pooled, or keeps its previous ones. `teacher_calib=fixed` uses `teacher_hi` and `teacher_lo` throughout
(they are also the starting values of calibrated thresholds). The thresholds are saved in checkpoints.

With `teacher_relabel=E`, every E epochs (from the warm-up on) the teacher also detects on the training images
themselves, and its boxes at precision `teacher_precision` on the validation images are labels of the epochs that
follow, until the next pass replaces them (teacher_relabel.py: the review loop inside one run). In the batches they
are positives scored 1 (so `teacher_soft` leaves them as labels), and the per-batch mining skips them as it skips
labels.

`teacher_calib=precision` measures what the bound above can only guess. On a training batch a detection that matches
no label is a hidden object or an invented box, and the two cannot be told apart, so on sparse labels (several missing
objects per labelled one) the bound blocks real objects: on the 40-epoch extreme split it held tau_hi at 0.62-0.81 and
the teacher mined 0.005 positives per image (benchmarks/results/teacher_stages.md). The validation images are labelled
completely (or nearly: a partially labelled one only makes the rule stricter), so there an unmatched detection is a
false one. At every epoch end the teacher detects on the validation set (class-wise NMS at `teacher_nms`) and tau_hi[c]
is the lowest score from which on its detections of class c reach precision `teacher_precision` (matched at IoU
`CAL_IOU`; a running count below `MIN_BOXES` detections is not judged, so one confident false box cannot block a
class; 1.0, no positives, when no judged threshold reaches it), at least `HI_RANGE[0]` (measured, so not capped at
`HI_RANGE[1]`); tau_lo keeps the recall rule on the training labels, and the per-batch bound is off.
"""

from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from ultralytics.utils import LOGGER
from ultralytics.utils.loss import E2ELoss
from ultralytics.utils.metrics import box_iou
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import clip_boxes, xywh2xyxy, xyxy2xywh
from ultralytics.utils.tal import dist2bbox, make_anchors

from ..errors import PartialConfigError
from ..keyspec import at_least, choice, flag, unit
from .geometry import train_outputs
from .method import Method, Terms

POS, UNC, COUNTS = "teacher_pos", "teacher_unc", "teacher_counts"  # batch keys the trainer hook adds
TARGET_KEYS = ("batch_idx", "cls", "bboxes")
CAL_IOU = 0.5  # a teacher prediction "finds" a labelled (or hidden) box at this IoU with the same class
BINS = 1000  # calibration histogram resolution: thresholds are multiples of 1 / BINS
MIN_BOXES = 10  # scored labelled boxes a class needs in an epoch for its own thresholds
HI_RANGE = (0.2, 0.9)  # clamp of calibrated tau_hi
LO_MIN = 0.05  # floor of calibrated tau_lo (and the lowest score NMS keeps)
RAMP = 10  # own-EMA decay ramp d * (1 - exp(-updates / RAMP)), Ultralytics' ramp with a short time constant
MAX_BOXES = 300  # teacher boxes per image at most (Ultralytics' max_det)
ERASE = ((0.7, 0.02, 0.1), (0.5, 0.02, 0.1))  # cutout patches: (probability, min and max share of the image area)
ERASE_FILL = None  # cutout fill: None = uniform noise per pixel (a flat grey patch would look like mosaic padding)
JITTER_P, JITTER = 0.8, 0.4  # share of images jittered; brightness/contrast/saturation factors in 1 +- JITTER
COUNT_KEYS = ("teacher_pos", "teacher_unc")  # per-image counts logged every batch
HIDDEN_COUNT_KEYS = ("teacher_hit", "teacher_hidden", "teacher_covered")  # with a hidden-box manifest


# ----------------------------------------------------------------------------------------------- strong view
@torch.no_grad()
def strong_view(img: torch.Tensor, p_jitter: float = JITTER_P, erase=ERASE) -> torch.Tensor:
    """A strong, geometry-preserving view of (B, 3, H, W) float images in [0, 1], computed for the whole batch at once.

    Each image, with probability `p_jitter`, gets brightness, contrast and saturation factors drawn in 1 +- JITTER
    (hue is left alone: it is the costly one); then each cutout patch of `erase` is placed with its probability, its
    area a uniform share of the image in [min, max], aspect ratio log-uniform in [1/3, 3], filled with uniform noise
    (as Unbiased Teacher's random erasing; a flat grey patch over a labelled object would teach that Ultralytics'
    grey mosaic padding is an object, which the teacher then finds in the weak view). Pixels
    move nowhere, so the labels and the teacher's boxes hold for the result.
    """
    b, _, h, w = img.shape
    dev = img.device
    r = torch.rand(b, 4)
    on = (r[:, 0] < p_jitter).float()
    f = 1 + on[:, None] * JITTER * (2 * r[:, 1:] - 1)  # (B, 3) brightness, contrast, saturation; 1 when off
    f = f.to(dev, img.dtype)[..., None, None, None]
    weights = torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=img.dtype).view(1, 3, 1, 1)
    out = img * f[:, 0]
    mean = (out * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    out = (out - mean) * f[:, 1] + mean
    gray = (out * weights).sum(1, keepdim=True)
    out = ((out - gray) * f[:, 2] + gray).clamp_(0, 1)
    out = torch.where(on.bool().to(dev).view(-1, 1, 1, 1), out, img)  # images not drawn stay exactly as they were
    if erase:
        pr = torch.rand(b, len(erase), 5)
        prob, lo, hi = (torch.tensor(c, dtype=torch.float32) for c in zip(*erase))
        area = (lo + (hi - lo) * pr[..., 1]) * h * w
        aspect = torch.exp((2 * pr[..., 2] - 1) * math.log(3))
        ph = (area * aspect).sqrt().clamp(max=h)
        pw = (area / aspect).sqrt().clamp(max=w)
        y0, x0 = pr[..., 3] * (h - ph), pr[..., 4] * (w - pw)
        box = torch.stack((x0, y0, x0 + pw, y0 + ph), -1).to(dev)  # (B, P, 4)
        box[~(pr[..., 0] < prob).to(dev)] = 0  # patches not drawn cover nothing
        ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, 1, h, 1) + 0.5
        xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w) + 0.5
        x1, y1, x2, y2 = (box[..., i, None, None] for i in range(4))
        cut = ((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)).any(1, keepdim=True)  # (B, 1, H, W)
        fill = torch.rand_like(out) if ERASE_FILL is None else torch.full_like(out, ERASE_FILL)
        out = torch.where(cut, fill, out)
    return out


# ----------------------------------------------------------------------------------------------- teacher outputs
def head_of(model: torch.nn.Module) -> torch.nn.Module:
    """The detection head of a DetectionModel."""
    return model.model[-1]


@torch.no_grad()
def teacher_predictions(model: torch.nn.Module, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` (eval mode) on `img` -> ((B, A, 4) xyxy pixel boxes, (B, A, C) class probabilities), float32.

    The per-anchor outputs of the branch the head infers with: one-to-one on end-to-end heads (YOLO26), decoded as the
    head decodes them.
    """
    raw = train_outputs(model(img))
    branch = raw["one2one"] if "one2one" in raw else raw
    head = head_of(model)
    anchors, strides = make_anchors(branch["feats"], head.stride, 0.5)
    dist = head.dfl(branch["boxes"].float()) if head.reg_max > 1 else branch["boxes"].float()
    xyxy = dist2bbox(dist, anchors.T.unsqueeze(0), xywh=False, dim=1) * strides.T  # (B, 4, A)
    return xyxy.permute(0, 2, 1).contiguous(), branch["scores"].float().sigmoid().permute(0, 2, 1).contiguous()


def _gt_pixels(batch: dict[str, Any], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n,) image index, (n,) class, (n, 4) xyxy pixel boxes of a batch's labels."""
    scale = torch.tensor([w, h, w, h], device=batch["bboxes"].device, dtype=torch.float32)
    return batch["batch_idx"].long(), batch["cls"].view(-1).long(), xywh2xyxy(batch["bboxes"].float() * scale)


@torch.no_grad()
def labelled_box_scores(boxes: torch.Tensor, scores: torch.Tensor, idx: torch.Tensor, cls: torch.Tensor,
                        gt: torch.Tensor, iou: float = CAL_IOU) -> torch.Tensor:
    """(n,) for each labelled box: the teacher's best probability of its class among the predictions of its image whose
    box overlaps it with IoU >= iou (0 when none does): the score at which the teacher would still find it.

    Args:
        boxes (torch.Tensor): (B, A, 4) xyxy pixel boxes of the teacher's predictions.
        scores (torch.Tensor): (B, A, C) class probabilities.
        idx, cls (torch.Tensor): (n,) image index and class of each labelled box.
        gt (torch.Tensor): (n, 4) xyxy pixel labelled boxes.
    """
    if not len(idx):
        return scores.new_zeros(0)
    pb = boxes[idx]  # (n, A, 4)
    lt = torch.maximum(pb[..., :2], gt[:, None, :2])
    rb = torch.minimum(pb[..., 2:], gt[:, None, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (pb[..., 2:] - pb[..., :2]).clamp(min=0).prod(-1) + (gt[:, 2:] - gt[:, :2]).clamp(min=0).prod(-1)[:, None]
    overlap = inter / (area - inter + 1e-7)  # (n, A)
    s = scores.permute(0, 2, 1)[idx, cls]  # (n, A) probability of the box's class at every anchor of its image
    return (s * (overlap >= iou)).amax(1)


def histogram(scores: torch.Tensor, cls: torch.Tensor, nc: int, bins: int = BINS) -> torch.Tensor:
    """(C, bins) counts of scores in [0, 1] per class; bin k holds [k / bins, (k + 1) / bins), the last one includes 1."""
    k = (scores.float() * bins).floor().long().clamp_(0, bins - 1)
    return torch.bincount(cls * bins + k, minlength=nc * bins).view(nc, bins)


def at_or_above(hist: torch.Tensor) -> torch.Tensor:
    """(..., BINS) counts -> (..., BINS) float64 [k] = the number of scores >= k / BINS."""
    return hist.flip(-1).cumsum(-1).flip(-1).double()


def lowest_holding(ok: torch.Tensor) -> torch.Tensor:
    """(..., BINS) bool per bin -> (...) the lowest bin k from which on `ok` holds at every bin (BINS when the top
    bin fails)."""
    bins = ok.shape[-1]
    ok = ok.flip(-1).cumprod(-1).flip(-1).bool()
    return torch.where(ok, torch.arange(bins, device=ok.device), bins).amin(-1)


def pooled_where(per: torch.Tensor, few: torch.Tensor) -> torch.Tensor:
    """(C, ...) per-class counts with the rows of the classes in `few` (C,) replaced by all classes' sum."""
    shape = (-1,) + (1,) * (per.dim() - 1)
    return torch.where(few.view(shape), per.sum(0, keepdim=True).expand_as(per), per)


def recall_threshold(hist: torch.Tensor, share: float) -> torch.Tensor:
    """(...) the largest bin edge t = k / bins such that at least `share` of the scores in `hist` (..., bins) are >= t,
    i.e. the score at which a detector recalls that share of the boxes; NaN where the histogram is empty."""
    bins = hist.shape[-1]
    need = share * hist.sum(-1, keepdim=True).double()
    ok = at_or_above(hist) >= need - 1e-9
    k = torch.where(ok, torch.arange(bins, device=hist.device), -1).amax(-1)
    return torch.where(hist.sum(-1) > 0, k.double() / bins, math.nan)


def detections(boxes: torch.Tensor, scores: torch.Tensor, conf: float, nms: float) -> list[torch.Tensor]:
    """Per image, (n, 6) xyxy pixel boxes, score, class of the teacher's predictions after class-wise NMS."""
    pred = torch.cat((xyxy2xywh(boxes), scores), 2).permute(0, 2, 1)  # NMS layout (B, 4 + C, A)
    return non_max_suppression(pred, conf_thres=conf, iou_thres=nms, max_det=MAX_BOXES)


@torch.no_grad()
def matched_detections(dets: list[torch.Tensor], idx: torch.Tensor, cls: torch.Tensor,
                       gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All images' detections as one (n, 6) tensor, and (n,) whether each matches a labelled box of its image and
    class (IoU >= CAL_IOU)."""
    dev = gt.device
    rows = [(b, d) for b, d in enumerate(dets) if len(d)]
    if not rows:
        return gt.new_zeros(0, 6), torch.zeros(0, dtype=torch.bool, device=dev)
    d = torch.cat([x for _, x in rows]).to(dev)
    b = torch.cat([torch.full((len(x),), i, device=dev, dtype=torch.long) for i, x in rows])
    matched = torch.zeros(len(d), dtype=torch.bool, device=dev)
    if len(idx):
        ov = box_iou(d[:, :4], gt.to(d))  # (n, m)
        matched = ((ov >= CAL_IOU) & (d[:, 5:6].long() == cls[None]) & (b[:, None] == idx[None])).any(1)
    return d, matched


def detection_histograms(dets: list[torch.Tensor], idx: torch.Tensor, cls: torch.Tensor, gt: torch.Tensor,
                         nc: int) -> torch.Tensor:
    """(2, C, BINS) score counts of the teacher's detections per class: [0] those matching a labelled box of their
    image and class (IoU >= CAL_IOU), [1] the others (an unlabelled object, or a box the teacher invented)."""
    out = torch.zeros(2, nc, BINS, dtype=torch.long, device=gt.device)
    d, matched = matched_detections(dets, idx, cls, gt)
    for k, sel in enumerate((matched, ~matched)):
        out[k] = histogram(d[sel, 4], d[sel, 5].long(), nc)
    return out


def demote_invented(mined: Mined, dets: list[torch.Tensor], batch: dict[str, Any], hw: tuple[int, int],
                    tau_hi: torch.Tensor, ratio: float) -> Mined:
    """The same bound as the calibration's, on this batch: a class whose positives outnumber `ratio` times its
    detections at or above tau_hi that match a label has its positives demoted to uncertain boxes (ignored, not
    taught), so a teacher that starts inventing one kind of box is stopped at once, not only at the epoch's end."""
    if not len(mined.pos):
        return mined
    gi, gc, gb = _gt_pixels(batch, *hw)
    d, matched = matched_detections(dets, gi, gc, gb)
    nc = len(tau_hi)
    dc = d[:, 5].long()
    hit = matched & (d[:, 4] >= tau_hi.to(d)[dc])
    m = torch.bincount(dc[hit], minlength=nc)[:nc].to(mined.pos.device)
    pc = mined.pos[:, 1].long()
    n_pos = torch.bincount(pc, minlength=nc)[:nc]
    bad = (n_pos > ratio * m)[pc]
    if not bad.any():
        return mined
    return Mined(mined.pos[~bad], torch.cat((mined.unc, mined.pos[bad])))


def invented_threshold(hist: torch.Tensor, ratio: float) -> torch.Tensor:
    """(...) the lowest bin edge t such that at every threshold t' >= t, the detections scored >= t' that match no
    label are at most `ratio` times those that match one, from (..., 2, BINS) [matched, unmatched] counts (1.0 when
    even the top bin fails; 0 when there are no detections)."""
    m, u = at_or_above(hist[..., 0, :]), at_or_above(hist[..., 1, :])  # [k]: matched / unmatched scored >= k / BINS
    return lowest_holding(u <= ratio * m).double() / hist.shape[-1]


def precision_threshold(hist: torch.Tensor, target: float, min_count: int = MIN_BOXES) -> torch.Tensor:
    """(...) the lowest bin edge t such that at every threshold t' >= t with at least `min_count` detections scored
    >= t', those matching a label are at least `target` of them, from (..., 2, BINS) [matched, unmatched] counts on
    completely labelled images; 1.0 (no positives) when no threshold with `min_count` detections passes."""
    m = at_or_above(hist[..., 0, :])  # [k]: matched detections scored >= k / BINS
    n = m + at_or_above(hist[..., 1, :])
    k = lowest_holding((m >= target * n - 1e-9) | (n < min_count))
    bins = hist.shape[-1]
    judged = n.gather(-1, k.clamp(max=bins - 1)[..., None])[..., 0] >= min_count  # n falls with k: judged at k or never
    return torch.where(judged & (k < bins), k.double() / bins, 1.0)


@torch.no_grad()
def validation_histograms(model: torch.nn.Module, loader: Any, nc: int, nms: float) -> torch.Tensor:
    """(2, C, BINS) score counts of the teacher's detections on every batch of a validation loader (Ultralytics' uint8
    letterboxed images, labels normalised to them): [0] matching a label of their image and class, [1] the others."""
    out, dev = None, next(model.parameters()).device
    for batch in loader:
        img = batch["img"].to(dev).float() / 255
        boxes, scores = teacher_predictions(model, img)
        dets = detections(boxes, scores, LO_MIN, nms)
        labels = {k: batch[k].to(dev) for k in TARGET_KEYS}
        hist = detection_histograms(dets, *_gt_pixels(labels, *img.shape[2:]), nc)
        out = hist if out is None else out + hist
    return out.cpu() if out is not None else torch.zeros(2, nc, BINS, dtype=torch.long)


@dataclass
class Mined:
    """One batch's teacher boxes, in the batch's label layout: rows (batch_idx, cls, x, y, w, h normalised, score)."""

    pos: torch.Tensor  # (m, 7) extra positives
    unc: torch.Tensor  # (u, 7) uncertain boxes


@torch.no_grad()
def split_boxes(boxes: torch.Tensor, scores: torch.Tensor, batch: dict[str, Any], hw: tuple[int, int],
                tau_hi: torch.Tensor, tau_lo: torch.Tensor, nms: float, gt_iou: float,
                dets: list[torch.Tensor] | None = None, classes: str = "any") -> Mined:
    """Class-wise NMS of the teacher's predictions, skip those overlapping a same-class GT above `gt_iou`, split the
    rest by their class's thresholds into positives (score >= tau_hi) and uncertain boxes (tau_lo <= score < tau_hi).

    `classes` says what the teacher may assume of an object's class. `any`: nothing (each class on its own). `one`: an
    object has one class, so boxes overlapping a GT of any class above `gt_iou` are skipped (the labelled object's
    class is known) and of boxes of different classes overlapping above `nms` only the best-scored one is kept. `sure`:
    as `one`, but where two classes both reach tau_lo on one object the teacher has not decided its class, so no
    positive is made there: every such box is uncertain (out of its class's background term, taught as nothing).

    Args:
        boxes (torch.Tensor): (B, A, 4) xyxy pixel boxes; scores (B, A, C) class probabilities.
        batch (dict): The batch's labels (batch_idx, cls, bboxes normalised xywh).
        hw (tuple): Image height and width in pixels.
        tau_hi, tau_lo (torch.Tensor): (C,) per-class thresholds.
        dets (list): The teacher's detections after NMS (see `detections`) when already computed at a floor <= tau_lo.
    """
    h, w = hw
    if dets is None:
        dets = detections(boxes, scores, float(tau_lo.min().clamp(min=1e-3)), nms)
    gi, gc, gb = _gt_pixels(batch, h, w)
    scale = boxes.new_tensor([w, h, w, h])
    rows, allowed = [], []  # allowed: (n,) per image, whether a box may become a positive
    for b, det in enumerate(dets):
        box, conf, c = clip_boxes(det[:, :4], (h, w)), det[:, 4], det[:, 5].long()
        keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]) & (conf >= tau_lo.to(conf)[c])
        mine = gi == b
        if mine.any() and len(box):
            over = box_iou(box, gb[mine]) > gt_iou
            keep &= ~(over if classes != "any" else over & (c[:, None] == gc[mine][None])).any(1)
        box, conf, c = box[keep], conf[keep], c[keep]
        may_pos = torch.ones_like(conf, dtype=torch.bool)
        if classes != "any" and len(box) > 1:
            best = torchvision.ops.nms(box, conf, nms)  # class-agnostic: each object's best-scored class
            if classes == "one":
                box, conf, c, may_pos = box[best], conf[best], c[best], may_pos[best]
            else:  # sure: a box that suppressed another class's box (class-wise NMS left no same-class overlap) is undecided
                beaten = torch.ones_like(may_pos)
                beaten[best] = False
                if beaten.any():
                    may_pos[best] = ~(box_iou(box[best], box[beaten]) > nms).any(1)
                    may_pos[beaten] = False
        rows.append(torch.cat((torch.full_like(conf[:, None], b), c[:, None].float(), xyxy2xywh(box) / scale,
                               conf[:, None]), 1))  # fmt: skip
        allowed.append(may_pos)
    rows = torch.cat(rows) if rows else boxes.new_zeros(0, 7)
    hi = rows[:, 6] >= tau_hi.to(rows)[rows[:, 1].long()]
    hi &= torch.cat(allowed) if allowed else torch.zeros_like(hi)
    return Mined(rows[hi], rows[~hi])


def relabel_rows(batch: dict[str, Any]) -> torch.Tensor:
    """(r, 7) the relabelling pass's boxes of a batch (split out of its labels as `relabel_*`) in the mined rows'
    layout, scored 1: they are taught as labels."""
    if "relabel_cls" not in batch:
        return batch["bboxes"].new_zeros(0, 7)
    idx, cls, box = batch["relabel_batch_idx"].view(-1, 1), batch["relabel_cls"].view(-1, 1), batch["relabel_bboxes"]
    return torch.cat((idx.to(box), cls.to(box), box, torch.ones_like(idx, dtype=box.dtype)), 1)


def with_rows(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The batch with (r, 7) mined-layout rows added to its labels (batch_idx, cls, bboxes)."""
    if not len(rows):
        return batch
    return {**batch, "batch_idx": torch.cat((batch["batch_idx"].view(-1).to(rows), rows[:, 0])),
            "cls": torch.cat((batch["cls"].view(-1, 1).to(rows), rows[:, 1:2])),
            "bboxes": torch.cat((batch["bboxes"].to(rows), rows[:, 2:6]))}  # fmt: skip


def hidden_counts(mined: Mined, batch: dict[str, Any], n_img: int) -> torch.Tensor:
    """(3,) per image: positives matching a hidden box (same class, IoU >= CAL_IOU), hidden boxes, and hidden boxes
    matched by a positive or an uncertain box."""
    hid = batch.get("hidden_cls")
    out = mined.pos.new_zeros(3)
    if hid is None or not len(hid):
        return out
    hb = xywh2xyxy(batch["hidden_bboxes"].float())
    hi, hc = batch["hidden_batch_idx"].view(-1), hid.view(-1)

    def match(rows):  # (len(rows), n_hidden) bool
        if not len(rows):
            return torch.zeros(0, len(hb), dtype=torch.bool, device=hb.device)
        ov = box_iou(xywh2xyxy(rows[:, 2:6]), hb, eps=1e-12)  # normalised coordinates give the pixel IoU
        return (ov >= CAL_IOU) & (rows[:, 1:2] == hc[None]) & (rows[:, 0:1] == hi[None])

    mp, mu = match(mined.pos), match(mined.unc)
    covered = mp.any(0) | mu.any(0)
    return out.new_tensor([float(mp.any(1).sum()), float(len(hb)), float(covered.sum())]) / n_img


# ----------------------------------------------------------------------------------------------- loss side
@dataclass
class TeacherBatch:
    """What the loss needs of one batch's teacher boxes, for Teacher.apply (set by TeacherLoss around each call)."""

    n_gt: torch.Tensor  # (B,) labelled boxes per image: in the merged targets an image's pseudo boxes follow them
    pos_cls: torch.Tensor  # (B, P) class of the p-th pseudo positive of each image (-1 padding)
    pos_score: torch.Tensor  # (B, P) its teacher score
    unc: torch.Tensor  # (u, 6) uncertain boxes: image, class, xyxy pixels (scaled once the image size is known)


def _within_image(idx: torch.Tensor, n_img: int) -> torch.Tensor:
    """Position of each row among the rows of its image (rows grouped by image, in order)."""
    offsets = torch.zeros(n_img + 1, dtype=torch.long, device=idx.device)
    offsets.scatter_add_(0, idx + 1, torch.ones_like(idx))
    return torch.arange(len(idx), device=idx.device) - offsets.cumsum(0)[idx]


def merge_positives(batch: dict[str, Any], pos: torch.Tensor, n_img: int) -> tuple[dict[str, torch.Tensor], TeacherBatch]:
    """The batch's labels with the pseudo positives appended, grouped by image (labels first, then that image's pseudo
    boxes in their order), and the TeacherBatch that lets `apply` find the pseudo boxes among the assigned GTs."""
    gt_idx = batch["batch_idx"].view(-1).long()
    n_gt = torch.bincount(gt_idx, minlength=n_img)
    merged = {
        "batch_idx": torch.cat((batch["batch_idx"].view(-1).to(pos), pos[:, 0])),
        "cls": torch.cat((batch["cls"].view(-1, 1).to(pos), pos[:, 1:2])),
        "bboxes": torch.cat((batch["bboxes"].to(pos), pos[:, 2:6])),
    }
    order = torch.argsort(merged["batch_idx"], stable=True)
    merged = {k: v[order] for k, v in merged.items()}
    pi = pos[:, 0].long()
    j = _within_image(pi, n_img) if len(pi) else pi
    width = int(j.max()) + 1 if len(j) else 0
    pos_cls = torch.full((n_img, width), -1, dtype=torch.long, device=pos.device)
    pos_score = pos.new_zeros(n_img, width)
    pos_cls[pi, j] = pos[:, 1].long()
    pos_score[pi, j] = pos[:, 6]
    return merged, TeacherBatch(n_gt, pos_cls, pos_score, pos.new_zeros(0, 6))


class TeacherLoss:
    """The teacher's boxes into a detection criterion: positives appended to the labels, uncertain boxes and soft
    weights handed to `Teacher.apply` of every PartialDetectionLoss inside (both branches of E2ELoss).

    Items: the base criterion's, then `teacher_pos` and `teacher_unc` (teacher boxes per image of the batch) and, with
    a hidden-box manifest, `teacher_hit` (positives matching a hidden box), `teacher_hidden` (hidden boxes) and
    `teacher_covered` (hidden boxes matched by a positive or uncertain box), all per image. The key set is fixed at
    construction (DDP needs every rank and batch to return the same keys); a batch without teacher boxes (warm-up, the
    validator's) gets the base loss and zero counts.
    """

    def __init__(self, base, hidden: bool = False):
        self.base, self.hidden = base, hidden
        inner = [base.one2many, base.one2one] if isinstance(base, E2ELoss) else [base]
        self.methods = [m for loss in inner if hasattr(loss, "method") and (m := loss.method(Teacher.NAME))]

    def update(self) -> None:
        """Advance the base criterion's per-epoch schedule (E2ELoss's branch weights), called by the trainer."""
        if hasattr(self.base, "update"):
            self.base.update()

    def __call__(self, preds: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pos, keys = batch.get(POS), COUNT_KEYS + (HIDDEN_COUNT_KEYS if self.hidden else ())
        if pos is None:
            loss, items = self.base(preds, batch)
            return loss, {**items, **dict.fromkeys(keys, loss.new_zeros(()).detach())}
        n_img = len(batch["img"])
        merged, ctx = merge_positives(batch, pos, n_img)
        unc = batch[UNC]
        h, w = batch["img"].shape[2:]
        scale = unc.new_tensor([w, h, w, h])
        ctx.unc = torch.cat((unc[:, :2], xywh2xyxy(unc[:, 2:6]) * scale), 1)
        for m in self.methods:
            m.ctx = ctx
        try:
            loss, items = self.base(preds, {**batch, **merged})
        finally:
            for m in self.methods:
                m.ctx = None
        counts = batch[COUNTS].to(loss.device)
        return loss, {**items, **dict(zip(keys, counts[: len(keys)].detach()))}


# ----------------------------------------------------------------------------------------------- the method
class Teacher(Method):
    """Teacher-student pseudo-labelling on the loss's terms, the criterion and the trainer's batches (see module doc).

    Args:
        decay (float): 0: the trainer's EMA is the teacher; else the decay of the teacher's own EMA of the student.
        warmup (int): Epochs without mining (the teacher is calibrated during the last of them).
        hi, lo (float): Fixed thresholds, and the starting values of calibrated ones.
        calib (str): 'recall' (per-class thresholds from the teacher's recall of labelled boxes), 'fixed', or
            'precision' (tau_hi from the teacher's precision on the validation images, tau_lo by the recall rule).
        recall_hi, recall_lo (float): Shares of labelled boxes recalled at tau_hi and at tau_lo.
        soft (bool): Weight pseudo positives by the teacher's score (else they count as labels).
        nms (float): Class-wise NMS IoU on the teacher's boxes.
        gt_iou (float): Skip teacher boxes overlapping a same-class GT above this IoU.
        classes (str): What the teacher may assume of an object's class: 'any', 'one' or 'sure' (see split_boxes).
        partial_empty (bool): Mine on images without any label too (default: they are verified background).
        unmatched (float): At tau_hi, at most this many detections matching no label per detection matching one.
        precision (float): With calib='precision', the validation precision tau_hi is set to reach.
        relabel (int): Epochs between relabelling passes over the training images (0: none; teacher_relabel.py).
    """

    KEYS = {
        "teacher": flag("teacher-student pseudo-labelling: an EMA of the student mines the unlabelled objects"),
        "teacher_decay": unit(0.0, False, True, "teacher: 0 = Ultralytics' EMA is the teacher, else the decay of the "
                                                "teacher's own EMA of the student (per optimizer step)"),
        "teacher_warmup": at_least(1, 0, "teacher: epochs before mining starts"),
        "teacher_hi": unit(0.5, True, True, "teacher: fixed tau_hi (score of an extra positive), start of calibration"),
        "teacher_lo": unit(0.2, True, True, "teacher: fixed tau_lo (score of an uncertain box), start of calibration"),
        "teacher_calib": choice("recall", "recall", "fixed", "precision",
                                help="teacher: per-class thresholds from the teacher's recall of labelled boxes, fixed "
                                     "ones, or tau_hi from its precision on the validation images"),
        "teacher_precision": unit(0.9, True, True, "teacher: with teacher_calib=precision (tau_hi) and teacher_relabel, "
                                                   "the lowest score at which the teacher's detections on the val images "
                                                   "reach this"),
        "teacher_recall_hi": unit(0.5, True, True, "teacher: share of labelled boxes the teacher recalls at tau_hi"),
        "teacher_recall_lo": unit(0.9, True, True, "teacher: share of labelled boxes the teacher recalls at tau_lo"),
        "teacher_unmatched": at_least(2.0, 0, "teacher: at tau_hi, at most this many teacher boxes matching no label "
                                               "per box matching one (bounds invented boxes; ~ missing / labelled)"),
        "teacher_soft": flag("teacher: pseudo positives' targets capped at (box terms weighted by) the teacher's "
                             "score", default=True),
        "teacher_nms": unit(0.5, True, True, "teacher: class-wise NMS IoU on the teacher's boxes"),
        "teacher_gt_iou": unit(0.4, True, True, "teacher: skip teacher boxes overlapping a same-class GT above this"),
        "teacher_classes": choice("sure", "any", "one", "sure", help="teacher: classes per object: 'any' (classes "
                                  "apart), 'one' (no teacher box on a GT of any class; best class per object), 'sure' "
                                  "('one', and an object two classes reach is uncertain, no positive)"),
        "teacher_relabel": at_least(0, 0, "teacher: every this many epochs (0 = never) the teacher detects on the "
                                          "training images; its boxes at precision teacher_precision on the val images "
                                          "are labels of the epochs that follow (teacher_relabel.py)"),
        "teacher_strong": flag("teacher: the student trains on a strong view (jitter, cutout) of the teacher's batch "
                               "(off by default: it cost 4.4 mAP50 points in the accuracy benchmark's ablation)"),
    }
    OBJECTNESS = False  # the anchor-based head has no decoded per-anchor class scores to mine from
    NAME = "teacher"
    SWITCH = "teacher"

    def __init__(self, decay: float = 0.0, warmup: int = 1, hi: float = 0.5, lo: float = 0.2, calib: str = "recall",
                 recall_hi: float = 0.5, recall_lo: float = 0.9, soft: bool = True, nms: float = 0.5,
                 gt_iou: float = 0.4, partial_empty: bool = False, unmatched: float = 2.0,
                 strong: bool = False, classes: str = "sure", precision: float = 0.9, relabel: int = 0):  # fmt: skip
        self.decay, self.warmup, self.hi, self.lo, self.calib = decay, warmup, hi, lo, calib
        self.recall_hi, self.recall_lo, self.soft, self.nms, self.gt_iou = recall_hi, recall_lo, soft, nms, gt_iou
        self.partial_empty, self.unmatched, self.strong, self.classes = partial_empty, unmatched, strong, classes
        self.precision, self.relabel = precision, relabel
        self.relabelled: dict[str, np.ndarray] = {}  # image file -> (n, 5) class, xywh normalised: the last pass's boxes
        self.ctx: TeacherBatch | None = None  # loss side: the current batch's teacher boxes (set by TeacherLoss)
        # trainer side
        self.tau_hi: torch.Tensor | None = None  # (C,) current thresholds, float32 on the CPU
        self.tau_lo: torch.Tensor | None = None
        self.hist: torch.Tensor | None = None  # (3, C, BINS) this epoch's labelled-box and detection scores
        self.calibrations = 0  # epochs whose scores have set the thresholds
        self._own: torch.nn.Module | None = None  # teacher_decay > 0: the teacher's own EMA
        self._own_updates = 0
        self._seen: tuple[int, int] | None = None  # (id of the trainer's ModelEMA, its update count) last synced

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> Teacher | None:
        """The teacher, or None when off; refuses combinations it does not support in one line. The trainer passes
        the run's whole args (Ultralytics' keys too), the loss only the method keys."""
        if not k["teacher"]:
            return None
        if k.get("comining"):
            raise PartialConfigError(
                "teacher=True cannot be combined with comining=True (both turn the model's own detections into pseudo "
                "labels for the same unlabelled objects): expected one of them")
        if k.get("distill_model"):
            raise PartialConfigError(
                f"teacher=True cannot be combined with distill_model={k['distill_model']} (Ultralytics' distillation "
                "wraps the model whose EMA is the teacher): expected distill_model unset, or teacher=False")
        if k["teacher_lo"] > k["teacher_hi"]:
            raise PartialConfigError(
                f"teacher_lo={k['teacher_lo']} is invalid: expected a number <= teacher_hi={k['teacher_hi']}")
        if k["teacher_recall_lo"] < k["teacher_recall_hi"]:
            raise PartialConfigError(
                f"teacher_recall_lo={k['teacher_recall_lo']} is invalid: expected a number >= "
                f"teacher_recall_hi={k['teacher_recall_hi']} (tau_lo <= tau_hi)")
        return cls(k["teacher_decay"], k["teacher_warmup"], k["teacher_hi"], k["teacher_lo"], k["teacher_calib"],
                   k["teacher_recall_hi"], k["teacher_recall_lo"], k["teacher_soft"], k["teacher_nms"],
                   k["teacher_gt_iou"], k.get("partial_empty", False), k["teacher_unmatched"],
                   k["teacher_strong"], k["teacher_classes"], k["teacher_precision"],
                   k["teacher_relabel"])  # fmt: skip

    # ------------------------------------------------------------------------------------------- loss hooks
    def wrap(self, criterion: Any, context: dict[str, Any]) -> TeacherLoss:
        return TeacherLoss(criterion, hidden=bool(context.get("hidden")))

    def apply(self, t: Terms) -> None:
        """Soft weights of the pseudo positives, uncertain boxes out of their class's background term, and pseudo
        positives on asserted terms turned back into background."""
        ctx = self.ctx
        if ctx is None:
            return
        a = t.a
        b, n_anchors, nc = t.cls_elem.shape
        j = a.target_gt_idx - ctx.n_gt.to(a.target_gt_idx)[:, None]  # (B, A) index among the image's pseudo boxes
        pseudo = a.fg_mask & (j >= 0)
        if ctx.pos_cls.shape[1] and pseudo.any():
            jj = j.clamp(0, ctx.pos_cls.shape[1] - 1)
            c = ctx.pos_cls.gather(1, jj).clamp(min=0)  # (B, A) class of the anchor's pseudo box
            onehot = F.one_hot(c, nc).bool() & pseudo[..., None]  # (B, A, C)
            if t.asserted is not None:  # class-partial labels say class c's background is right here: no positive
                wrong = (onehot & t.asserted).any(-1)
                if wrong.any():
                    bg = F.binary_cross_entropy_with_logits(a.pred_scores, torch.zeros_like(t.targets), reduction="none")
                    t.cls_elem = torch.where(wrong[..., None], bg, t.cls_elem)
                    t.targets = t.targets.masked_fill(wrong[..., None], 0.0)
                    t.box_fg = t.box_fg & ~wrong
                    pseudo, onehot = pseudo & ~wrong, onehot & ~wrong[..., None]
            if self.soft:  # the student learns the teacher's confidence, never more: no self-inflation
                score = ctx.pos_score.gather(1, jj).to(t.targets.dtype)  # (B, A)
                capped = torch.where(onehot, torch.minimum(t.targets, score[..., None]), t.targets)
                bce = F.binary_cross_entropy_with_logits(a.pred_scores, capped, reduction="none")
                t.cls_elem = torch.where(onehot, bce.to(t.cls_elem.dtype), t.cls_elem)
                t.targets = capped
                weight = torch.where(pseudo, score, torch.ones_like(score))
                t.box_scores = t.box_scores * weight[..., None].to(t.box_scores.dtype)
        if len(ctx.unc):
            pts = (a.anchor_points * a.stride_tensor).to(ctx.unc)  # (A, 2) anchor centres, pixels
            u = ctx.unc
            inside = ((pts[None, :, 0] > u[:, None, 2]) & (pts[None, :, 0] < u[:, None, 4])
                      & (pts[None, :, 1] > u[:, None, 3]) & (pts[None, :, 1] < u[:, None, 5]))  # (u, A)  # fmt: skip
            mask = torch.zeros(b, nc, n_anchors, dtype=torch.int32, device=inside.device)
            mask.index_put_((u[:, 0].long(), u[:, 1].long()), inside.int(), accumulate=True)
            mask = mask.permute(0, 2, 1) > 0  # (B, A, C)
            if t.asserted is not None:
                mask &= ~t.asserted
            t.ignore_background(mask)

    # ------------------------------------------------------------------------------------------- trainer hooks
    def setup_dataset(self, dataset: Any, mode: str, trainer: Any) -> None:
        """The training set carries through augmentation the hidden boxes of a hidden-box manifest (teacher_hit) and,
        with teacher_relabel, the relabelling pass's boxes (looked up when each sample is made)."""
        if mode != "train":
            return
        from ..hidden_labels import RELABEL, attach_hidden_boxes, attach_markers

        if getattr(trainer, "hidden_manifest", None):
            from ..hidden import load_manifest

            attach_hidden_boxes(dataset, load_manifest(trainer.hidden_manifest))  # comining (the other user) is refused
        if self.relabel:
            attach_markers(dataset, RELABEL, self.relabelled_rows, "teacher_relabel: the relabelled boxes")

    def relabelled_rows(self, im_file: str) -> np.ndarray:
        """(n, 5) class, xywh normalised: the last relabelling pass's boxes on one training image."""
        from .teacher_relabel import NONE

        return self.relabelled.get(im_file, NONE)

    def teacher_model(self, trainer: Any) -> torch.nn.Module | None:
        """The teacher for this batch, looked up afresh: the trainer's EMA, or (teacher_decay > 0) the own EMA, brought
        up to date with the optimizer steps since the last batch and restarted when Ultralytics replaced its EMA."""
        ema = getattr(trainer, "ema", None)
        if ema is None or getattr(ema, "ema", None) is None:
            return None
        if self.decay <= 0:
            return ema.ema
        from ultralytics.utils.torch_utils import unwrap_model

        seen = self._seen
        if self._own is None or seen is None or seen[0] != id(ema) or ema.updates < seen[1]:
            self._own = deepcopy(ema.ema).eval()  # a new or restored EMA (start, resume, NaN recovery)
            self._own.criterion = None
            for p in self._own.parameters():
                p.requires_grad_(False)
            self._own_updates = ema.updates
        elif ema.updates > seen[1]:
            msd = unwrap_model(trainer.model).state_dict()
            with torch.no_grad():
                for _ in range(ema.updates - seen[1]):
                    self._own_updates += 1
                    d = self.decay * (1 - math.exp(-self._own_updates / RAMP))
                    for k, v in self._own.state_dict().items():
                        if v.dtype.is_floating_point:
                            v.lerp_(msd[k].detach().to(v.dtype), 1 - d)
        self._seen = (id(ema), ema.updates)
        return self._own

    def _thresholds(self, nc: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tau_hi is None or len(self.tau_hi) != nc:
            self.tau_hi = torch.full((nc,), self.hi)
            self.tau_lo = torch.full((nc,), self.lo)
        return self.tau_hi.to(device), self.tau_lo.to(device)

    def preprocess_batch(self, batch: dict[str, Any], trainer: Any) -> dict[str, Any]:
        """Hidden boxes split out; from the last warm-up epoch on, the teacher's calibration scores; after the warm-up,
        its boxes split three ways (batch keys POS, UNC, COUNTS) and the student's images replaced by a strong view."""
        from ..hidden_labels import RELABEL, split_hidden, split_markers

        if "hidden_batch_idx" not in batch and getattr(trainer, "hidden_manifest", None):
            batch = split_hidden(batch)
        if self.relabel and "relabel_batch_idx" not in batch:
            batch = split_markers(batch, RELABEL, "relabel")
        epoch = getattr(trainer, "epoch", 0)
        mining = epoch >= self.warmup
        calibrating = self.calib != "fixed" and epoch >= self.warmup - 1
        model = self.teacher_model(trainer) if (mining or calibrating) else None  # an own EMA starts when first needed
        if model is None or not (mining or calibrating):
            return batch
        img = batch["img"]
        h, w = img.shape[2:]
        boxes, scores = teacher_predictions(model, img)
        # a non-finite prediction finds nothing (scored 0); a NaN that reaches the loss anyway is the guard's
        scores = scores.masked_fill(~(torch.isfinite(boxes).all(-1, keepdim=True) & torch.isfinite(scores)), 0.0)
        nc = scores.shape[-1]
        dets = detections(boxes, scores, LO_MIN, self.nms)  # every calibrated tau_lo is >= LO_MIN
        if calibrating:
            gi, gc, gb = _gt_pixels(batch, h, w)
            s = labelled_box_scores(boxes, scores, gi, gc, gb)
            hist = torch.cat((histogram(s, gc, nc)[None], detection_histograms(dets, gi, gc, gb, nc)))
            self.hist = hist if self.hist is None or self.hist.shape != hist.shape else self.hist + hist.to(self.hist)
        if not mining:
            return batch
        tau_hi, tau_lo = self._thresholds(nc, img.device)
        fixed_below = self.calib == "fixed" and self.lo < LO_MIN  # fixed thresholds may go below the NMS floor
        relabelled = relabel_rows(batch)  # (r, 7) the relabelling pass's boxes: taught as labels, mined around
        labels = with_rows(batch, relabelled)
        mined = split_boxes(boxes, scores, labels, (h, w), tau_hi, tau_lo, self.nms, self.gt_iou,
                            dets=None if fixed_below else dets, classes=self.classes)  # fmt: skip
        # the bound on invented boxes holds for fixed thresholds too: without it a young teacher passed a fixed 0.5 on
        # 33 boxes per image at epoch 5 of the 40-epoch extreme run, 0.2 % of them on hidden objects (accuracy.py)
        if self.calib != "precision":  # the precision rule measures on complete labels what the bound guesses
            mined = demote_invented(mined, dets, labels, (h, w), tau_hi, self.unmatched)
        pos = torch.cat((relabelled.to(mined.pos), mined.pos))
        mined = self.allowed(Mined(pos[torch.argsort(pos[:, 0], stable=True)], mined.unc), batch)  # grouped by image
        n = len(img)
        counts = torch.cat((img.new_tensor([len(mined.pos) / n, len(mined.unc) / n]), hidden_counts(mined, batch, n)))
        batch[POS], batch[UNC], batch[COUNTS] = mined.pos, mined.unc, counts
        if self.strong:
            batch["img"] = strong_view(img)
        return batch

    def allowed(self, mined: Mined, batch: dict[str, Any]) -> Mined:
        """The teacher boxes a method that relaxes labels may use: none on an image without any label (a verified
        background image, unless partial_empty=True, as for BPR and BRL), none of a class that class-partial labels
        assert at the box's centre."""
        from .class_partial import drop_asserted, has_partial

        out = []
        for rows in (mined.pos, mined.unc):
            if not self.partial_empty and len(rows):
                n_img = int(rows[:, 0].max()) + 1
                labelled = torch.bincount(batch["batch_idx"].view(-1).long(), minlength=n_img)[:n_img] > 0
                rows = rows[labelled.to(rows.device)[rows[:, 0].long()]]
            if has_partial(batch) and len(rows):
                kept = drop_asserted({"batch_idx": rows[:, 0], "cls": rows[:, 1:2], "bboxes": rows[:, 2:6],
                                      "row": torch.arange(len(rows), device=rows.device)}, batch)  # fmt: skip
                rows = rows[kept["row"]]
            out.append(rows)
        return Mined(*out)

    def epoch_end(self, trainer: Any) -> None:
        """Recalibrate the thresholds, then on the epochs teacher_relabel names relabel the training images."""
        self.recalibrate(trainer)
        done = trainer.epoch + 1
        if self.relabel and done >= self.warmup and done % self.relabel == 0 and done < trainer.epochs:
            self.relabel_training_images(trainer)

    def relabel_training_images(self, trainer: Any) -> None:
        """The relabelling pass (teacher_relabel.py), made by the first rank and sent to the others; the training
        loader's workers are restarted so that the next epoch's samples carry the new boxes."""
        import torch.distributed as dist

        from .teacher_relabel import relabel_images

        ddp = dist.is_available() and dist.is_initialized()
        found = None
        if not ddp or dist.get_rank() == 0:
            model, loader = self.teacher_model(trainer), getattr(trainer, "test_loader", None)
            if model is None or loader is None:
                LOGGER.warning("teacher_relabel: no teacher or no validation images to set its thresholds, skipped")
            else:
                nc = len(trainer.data["names"])
                per = validation_histograms(model, loader, nc, self.nms).permute(1, 0, 2)  # (C, 2, BINS)
                tau = precision_threshold(pooled_where(per, per.sum((1, 2)) < MIN_BOXES), self.precision).float()
                tau = tau.clamp(HI_RANGE[0], 1.0)
                found = relabel_images(self, model, trainer.train_loader.dataset, tau, trainer.args.imgsz)
                n = sum(len(v) for v in found.values())
                LOGGER.info(f"teacher_relabel after epoch {trainer.epoch + 1}: {n} boxes on {len(found)} training "
                            f"images ({n / max(len(found), 1):.2f} per image), thresholds "
                            + ", ".join(f"{trainer.data['names'][c]} {t:.3f}" for c, t in enumerate(tau.tolist())))
        if ddp:
            box = [found]
            dist.broadcast_object_list(box, src=0)
            found = box[0]
        if found is not None:
            self.relabelled = found
            trainer.train_loader.reset()

    def recalibrate(self, trainer: Any) -> None:
        """Recalibrate the thresholds from this epoch's labelled-box scores (and, with teacher_calib=precision, the
        teacher's detections on the validation images, made by the rank that holds them), summed over DDP ranks, and
        log them."""
        if self.calib == "fixed":
            return
        import torch.distributed as dist

        nc = len(trainer.data["names"])
        hist = self.hist if self.hist is not None else torch.zeros(3, nc, BINS, dtype=torch.long)
        self.hist = None
        scored = int(hist[0].sum()) > 0  # no labelled box scored: a warm-up epoch before the last
        if self.calib == "precision":
            loader, model = getattr(trainer, "test_loader", None), self.teacher_model(trainer)
            val = (validation_histograms(model, loader, nc, self.nms) if scored and loader is not None
                   and model is not None else torch.zeros(2, nc, BINS, dtype=torch.long))  # fmt: skip
            hist = torch.cat((hist.to(val.device), val))
        if dist.is_available() and dist.is_initialized():  # every rank calls this at every epoch end
            hist = hist.to(trainer.device)
            dist.all_reduce(hist)
        if int(hist[0].sum()) == 0:
            return
        self.calibrate(hist[:3].cpu(), hist[3:].cpu() if self.calib == "precision" else None)
        names = trainer.data["names"]
        per = ", ".join(f"{names[c]} {self.tau_hi[c]:.3f}/{self.tau_lo[c]:.3f}" for c in range(nc))
        LOGGER.info(f"teacher thresholds tau_hi/tau_lo after epoch {trainer.epoch + 1}: {per}")

    def calibrate(self, hist: torch.Tensor, val: torch.Tensor | None = None) -> None:
        """Set tau_hi and tau_lo (C,) from score counts (see the module doc for the rule): (3, C, BINS) labelled-box
        scores, matched and unmatched detections, or (C, BINS) labelled-box scores alone (no bound on invented boxes);
        with `val` (2, C, BINS), the matched and unmatched detections on the validation images, tau_hi by precision.
        """
        dets = hist[1:] if hist.dim() == 3 else None
        hist = hist[0] if hist.dim() == 3 else hist
        nc = hist.shape[0]
        tau_hi, tau_lo = self._thresholds(nc, "cpu")
        few = hist.sum(1) < MIN_BOXES
        use = pooled_where(hist, few)
        enough = ~few | bool(hist.sum() >= MIN_BOXES)
        hi = recall_threshold(use, self.recall_hi)
        if val is not None:
            per = val.permute(1, 0, 2)  # (C, 2, BINS), pooled for the classes with too few detections
            hi = precision_threshold(pooled_where(per, per.sum((1, 2)) < MIN_BOXES), self.precision)
        elif dets is not None:  # (C, 2, BINS), pooled for the classes with too few labelled boxes
            hi = torch.maximum(hi, invented_threshold(pooled_where(dets.permute(1, 0, 2), few), self.unmatched))
        hi = hi.float().clamp(HI_RANGE[0], 1.0 if val is not None else HI_RANGE[1])
        lo = torch.minimum(recall_threshold(use, self.recall_lo).float().clamp(min=LO_MIN), hi)
        self.tau_hi = torch.where(enough, hi, tau_hi)
        self.tau_lo = torch.where(enough, lo, tau_lo)
        self.calibrations += 1

    def results_columns(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Mean thresholds over classes, and with hidden boxes the share of positives that find one and the share of
        hidden boxes covered by a positive or uncertain box (ratios of the epoch means)."""
        out = {}
        if self.relabel:
            out["teacher_relabel"] = sum(map(len, self.relabelled.values())) / max(len(self.relabelled), 1)
        if self.tau_hi is not None:
            out.update(teacher_tau_hi=float(self.tau_hi.mean()), teacher_tau_lo=float(self.tau_lo.mean()))
        else:
            out.update(teacher_tau_hi=self.hi, teacher_tau_lo=self.lo)
        if "train/teacher_hit" in metrics:
            pos, hidden = float(metrics["train/teacher_pos"]), float(metrics["train/teacher_hidden"])
            out["teacher_hit_share"] = float(metrics["train/teacher_hit"]) / pos if pos > 0 else 0.0
            out["teacher_cover_share"] = float(metrics["train/teacher_covered"]) / hidden if hidden > 0 else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """The calibrated thresholds and the relabelled boxes, as plain lists (checkpoints stay loadable with
        weights_only)."""
        out = {"relabelled": {f: r.tolist() for f, r in self.relabelled.items()}} if self.relabelled else {}
        if self.tau_hi is None:
            return out
        return {**out, "tau_hi": self.tau_hi.tolist(), "tau_lo": self.tau_lo.tolist(), "calibrations": self.calibrations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the thresholds and relabelled boxes saved by state_dict (resume, NaN recovery)."""
        if state and state.get("relabelled"):
            self.relabelled = {f: np.asarray(r, dtype=np.float32).reshape(-1, 5) for f, r in state["relabelled"].items()}
        if state and state.get("tau_hi") is not None:
            self.tau_hi = torch.tensor(state["tau_hi"], dtype=torch.float32)
            self.tau_lo = torch.tensor(state["tau_lo"], dtype=torch.float32)
            self.calibrations = int(state.get("calibrations", 0))
