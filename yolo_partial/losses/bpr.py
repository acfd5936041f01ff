"""Box Prediction Rebalancing (Haque & McEver, 2022): drop negative predictions from the box and objectness terms.

A prediction is negative when its decoded box overlaps every GT of its image by less than `neg_iou` (Faster R-CNN's
negative threshold, as in the paper). Partial labels make many such "negatives" unlabelled objects, so a fraction of
them is left out of the loss, re-drawn every batch.

The objectness drop's candidates are background anchors, whose decoded box no loss trains; `neg_region=prior` judges
them by a fixed prior box instead (see losses.method.PRIOR_SCALE), a region that does not drift. The box drop acts on
foreground predictions, which the box loss does train, and keeps their decoded boxes.

On the YOLOv5 objectness head the paper's sentence on the objectness drop (section 3, the objectness paragraph: a
percentage of negative predictions removed "from the tensor of IoUs") reads two ways, offered as `bpr_scope`:
`unmatched` (default) removes negative cells, those matched to no GT, from the objectness BCE; `matched` removes
matched predictions whose box overlaps the GTs by less than `neg_iou` from it (YOLOv5's IoU tensor holds only matches).
Images without labels are verified background and left alone unless `partial_empty=True`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..keyspec import choice, unit
from .method import Method, Terms


class BoxPredictionRebalancing(Method):
    """Choose which negative anchors are removed from the box terms and from the background classification term.

    Args:
        drop_box (float): Fraction of negative foreground anchors removed from the box (CIoU + DFL/L1) terms.
        drop_obj (float): Fraction of negative background anchors removed from the classification (objectness) term.
        mode (str): 'random' (the paper) or 'score' (drop the highest-scoring negatives first).
        neg_iou (float): IoU below which a prediction is negative.
    """

    KEYS = {
        "neg_iou": unit(0.3, True, True, "a prediction is negative when its box's IoU with every GT is below this"),
        "drop_neg_box": unit(0.0, False, False, "BPR: fraction of negative foreground predictions left out of the box terms"),
        "drop_neg_obj": unit(0.0, False, False, "BPR: fraction of negative background anchors left out of the objectness term"),
        "drop_mode": choice("random", "random", "score", help="BPR: drop at random (the paper) or highest scores first"),
        "neg_region": choice("pred", "pred", "prior", help="BPR objectness drop: negatives judged by decoded or prior boxes"),
        "bpr_scope": choice("unmatched", "unmatched", "matched",
                            help="BPR objectness drop on the YOLOv5 head: negative cells, or low-IoU matched predictions"),
    }
    NAME = "bpr"
    SWITCH = "drop_neg_obj"

    def __init__(self, drop_box: float, drop_obj: float, mode: str, neg_iou: float, region: str = "pred",
                 scope: str = "unmatched", partial_empty: bool = False):
        self.drop_box, self.drop_obj, self.mode, self.neg_iou = drop_box, drop_obj, mode, neg_iou
        self.region, self.scope, self.partial_empty = region, scope, partial_empty

    @classmethod
    def from_args(cls, k: dict[str, Any]) -> BoxPredictionRebalancing | None:
        bpr = cls(k["drop_neg_box"], k["drop_neg_obj"], k["drop_mode"], k["neg_iou"], k["neg_region"], k["bpr_scope"],
                  k["partial_empty"])
        return bpr if bpr.enabled else None

    @property
    def enabled(self) -> bool:
        return self.drop_box > 0 or self.drop_obj > 0

    def apply(self, t: Terms) -> None:
        """Mask the dropped anchors out of the classification term (all classes) and the box terms."""
        a = t.a
        scores = a.pred_scores.detach().amax(-1).sigmoid() if self.mode == "score" else None
        relax = None if self.partial_empty else t.labelled().expand_as(a.fg_mask)
        if t.asserted is not None:  # an anchor asserted for every class has nothing to drop: not a candidate
            some = ~t.asserted.all(-1)
            relax = some if relax is None else relax & some
        box_drop, obj_drop = self.drop_masks(t.max_iou(), a.fg_mask, scores, t.region_iou(self.region), relax)
        keep = (~obj_drop)[..., None]
        if t.asserted is not None:  # an asserted class's background is known to be right: never dropped
            keep = keep | t.asserted
        t.cls_elem = t.cls_elem * keep
        t.box_fg = t.box_fg & ~box_drop
        t.stats.update(box_drop=box_drop.sum().float(), obj_drop=obj_drop.sum().float())

    def apply_objectness(self, t) -> None:
        """Drop negative unmatched cells from the objectness BCE and low-IoU matches from the box term; each draws only
        among its own candidates. mode=score ranks by predicted objectness, this head's "is an object" score."""
        p, max_iou = t.p, t.max_iou()
        score = p.obj_logit.detach().sigmoid() if self.mode == "score" else None
        region = t.prior_iou() if self.region == "prior" else max_iou
        relax = torch.ones_like(p.matched) if self.partial_empty else t.labelled().expand_as(p.matched)
        cells = ~p.matched if self.scope == "unmatched" else p.matched
        obj_drop = self._choose(cells & (region < self.neg_iou) & relax, self.drop_obj, score)
        match_iou = max_iou.view(-1)[p.flat][None]
        match_score = None if score is None else score.view(-1)[p.flat][None]
        box_drop = self._choose((match_iou < self.neg_iou) & relax.reshape(-1)[p.flat][None], self.drop_box, match_score)[0]
        t.keep_cell = t.keep_cell & ~obj_drop
        t.keep_match = t.keep_match & ~box_drop
        t.stats.update(box_drop=box_drop.sum().float(), obj_drop=obj_drop.sum().float())

    def drop_masks(
        self, max_iou: torch.Tensor, fg_mask: torch.Tensor, scores: torch.Tensor, obj_iou: torch.Tensor | None = None,
        relax: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (box_drop, obj_drop), boolean (B, A) masks of the anchors removed from each term.

        Args:
            max_iou (torch.Tensor): (B, A) IoU of each decoded prediction with the best GT of its image.
            fg_mask (torch.Tensor): (B, A) anchors the assigner made foreground.
            scores (torch.Tensor): (B, A) detached best class probability, the ranking used by mode='score'.
            obj_iou (torch.Tensor, optional): (B, A) IoU judging the background candidates (default max_iou).
            relax (torch.Tensor, optional): (B, A) anchors that may be dropped at all (default every anchor).
        """
        box_cand = fg_mask & (max_iou < self.neg_iou)
        obj_cand = ~fg_mask & ((max_iou if obj_iou is None else obj_iou) < self.neg_iou)
        if relax is not None:
            box_cand, obj_cand = box_cand & relax, obj_cand & relax
        return self._choose(box_cand, self.drop_box, scores), self._choose(obj_cand, self.drop_obj, scores)

    def _choose(self, candidates: torch.Tensor, fraction: float, scores: torch.Tensor) -> torch.Tensor:
        """Mark round(fraction * n) of the n candidate anchors of the whole batch, at random or by highest score."""
        drop = torch.zeros_like(candidates)
        if fraction <= 0:
            return drop
        idx = candidates.flatten().nonzero().squeeze(1)
        k = int(fraction * idx.numel() + 0.5)
        if k == 0:
            return drop
        if self.mode == "score":
            pick = idx[scores.flatten()[idx].topk(k).indices]
        else:
            pick = idx[torch.randperm(idx.numel(), device=idx.device)[:k]]
        return drop.view(-1).index_fill_(0, pick, True).view_as(candidates)
