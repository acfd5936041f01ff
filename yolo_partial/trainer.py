"""PartialDetectionTrainer: Ultralytics' DetectionTrainer with the method keys, the partial-label loss, the methods'
trainer hooks (e.g. Co-mining's two-view batches) and a per-batch non-finite loss guard."""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from copy import copy
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from ultralytics.cfg import cfg2dict
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from .data import (check_dropped_labels, drop_zero_area_boxes, explain_no_valid_images, find_cfg, load_yaml,
                   resolve_data, warn_large_images)
from .errors import PartialConfigError
from .hidden_labels import manifest_path
from .keys import METHOD_DEFAULTS, METHOD_KEYS, check_method_args, coerce
from .losses.class_partial import switch_class_partial
from .losses.criterion import partial_criterion
from .losses.method import CHECKPOINT_KEY
from .losses.registry import build_methods
from .models import resolve_model
from .nonfinite import SKIPPED_COLUMN, NonFiniteGuard
from .partial_labels import partial_for_data
from .partial_val import validator_for
from .patches import install_offline_guards, relocate_label_cache, strip_optimizer_atomic


class PartialDetectionTrainer(DetectionTrainer):
    """Detection trainer whose criterion is PartialDetectionLoss, configured by the method keys (yolo_partial.keys).

    The method keys' defaults are merged into the base cfg here, so every construction path accepts them: Python
    overrides, the CLI, and Ultralytics' DDP worker (which rebuilds the trainer from the plain default cfg plus the
    saved args). The model stays a stock DetectionModel, so checkpoints load in stock Ultralytics (except the
    YOLOv5-objectness models, whose head is yolo-partial's own: see yolo_partial/models).

    With `comining=True` every training batch gets a colour-jittered copy of its images appended (one forward pass sees
    both views) and, when the data YAML names a hidden-box manifest, the training dataset carries the hidden boxes
    through augmentation for the `pseudo_hit` item. For every method, a batch whose loss is not finite is skipped
    (no gradient, optimizer step or EMA update) and counted in results.csv; `nan_patience` in a row stop training.
    Checkpoints are replaced atomically: a run killed while writing one leaves the previous last.pt/best.pt intact.

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("yolov8n.yaml").train(trainer=PartialDetectionTrainer, data="data/shapes.yaml", drop_neg_obj=0.75)
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        install_offline_guards()
        relocate_label_cache()
        # Pillow warns (without naming the file) about large images while Ultralytics scans them; warn_large_images
        # says it once, with the file
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        overrides = dict(overrides or {})
        if overrides.get("cfg"):  # a path or a shipped name (brl.yaml); its keys give way to the explicit ones
            path = find_cfg(overrides["cfg"])
            overrides = {**load_yaml(path, "cfg file"), **overrides, "cfg": str(path)}
        project = overrides.get("project")
        self._new_project = Path(project) if project and not Path(project).exists() else None  # removed with its run
        for k in METHOD_KEYS.keys() & overrides.keys():
            overrides[k] = coerce(k, overrides[k])
        if not overrides.get("resume"):
            overrides["data"] = resolve_data(overrides.get("data"))
        try:
            super().__init__({**METHOD_DEFAULTS, **cfg2dict(cfg)}, overrides, _callbacks)
        except OSError as e:
            # Ultralytics creates the run folder between setting save_dir and the checkpoint paths: only a failure
            # there is the user's unwritable project folder, anything else keeps its traceback
            if "save_dir" not in self.__dict__ or "last" in self.__dict__:
                self._remove_unstarted_run()
                raise
            raise PartialConfigError(
                f"cannot create the run folder {self.save_dir} ({e.strerror or e}): expected project= to name a "
                f"writable folder") from None
        except BaseException:
            self._remove_unstarted_run()
            raise
        keys = check_method_args(vars(self.args))  # the one validation; resume restored the checkpoint's args
        try:  # the data's partial: file turns class_partial on; a bad one stops here, leaving no run folder
            self.partial_labels = partial_for_data(self.args.data, self.data)
            keys = switch_class_partial(keys, overrides, self.partial_labels, bool(self.args.resume))
        except BaseException:
            self._remove_unstarted_run()
            raise
        for k, v in keys.items():
            setattr(self.args, k, v)
        try:
            self.methods = build_methods(keys)  # may refuse a combination of keys (e.g. teacher with comining)
        except PartialConfigError:
            self._remove_unstarted_run()
            raise
        # decided here, once: the losses and methods never look at files themselves
        self.hidden_manifest = manifest_path(self.args.data)
        self.guard = NonFiniteGuard(self.args.nan_patience)

    def train(self):
        """Ultralytics' training; a run that fails before writing its first checkpoint leaves no run folder behind."""
        try:
            return super().train()
        except BaseException:
            self._remove_unstarted_run()
            raise

    def _remove_unstarted_run(self) -> None:
        """Delete this run's folder if training never got to write anything in it but Ultralytics' args.yaml, so a run
        that failed on bad input leaves no debris and does not shift the trainN numbering. Resumed runs are kept."""
        save_dir = self.__dict__.get("save_dir")
        if not save_dir or getattr(self, "resume", False) or not Path(save_dir).is_dir():
            return
        kept = {"args.yaml", "weights"}
        if any(p.name not in kept for p in Path(save_dir).iterdir()) or any((Path(save_dir) / "weights").glob("*")):
            return
        shutil.rmtree(save_dir, ignore_errors=True)
        project = self.__dict__.get("_new_project")
        if project is not None and project.is_dir() and not any(project.iterdir()):
            project.rmdir()

    @property
    def loss(self):
        """The current batch's summed loss (Ultralytics' attribute), checked for finiteness when assigned."""
        return self.__dict__.get("_loss")

    @loss.setter
    def loss(self, value):
        # Ultralytics assigns the batch loss here right before its backward pass: the one hook between the two
        guard = self.__dict__.get("guard")
        if value is not None and guard is not None and not guard.checked and guard.check_loss(value, str(self.last)):
            # the running mean stays as it was, and the backward pass adds zero gradients
            items = self.tloss or {k: v.nan_to_num(0.0, 0.0, 0.0) for k, v in self.loss_items.items()}
            self.loss_items = dict(items)
            value = self._zero_loss()
        self.__dict__["_loss"] = value

    def _zero_loss(self) -> torch.Tensor:
        """A zero loss with a path to every trainable weight: under DDP every rank still completes its gradient
        reduction (a backward pass that reaches no weight would leave it pending)."""
        return sum(p.view(-1)[0] for p in self.model.parameters() if p.requires_grad) * 0.0

    def progress_string(self) -> str:
        """Ultralytics' progress-bar header, its names fitted to the bar's 11-character columns: the loss names,
        which Ultralytics takes from the first batch's loss dict, include the methods' counts (teacher_covered, ...),
        and a name of 11 characters or more ran into its neighbour."""
        names = [_column(k) for k in self.loss_names]
        return ("\n" + "%11s" * (4 + len(names))) % ("Epoch", "GPU_mem", *names, "Instances", "Size")

    def preprocess_batch(self, batch: dict) -> dict:
        """Ultralytics' preprocessing, then each method's (e.g. Co-mining's second view)."""
        self.guard.start_batch(getattr(self, "epoch", 0))  # set by the training loop
        batch = super().preprocess_batch(batch)
        for m in self.methods:
            batch = m.preprocess_batch(batch, self)
        return batch

    def optimizer_step(self):
        """Ultralytics' step, skipped (gradients zeroed) when only bad batches were accumulated or, without AMP's own
        overflow handling, when the gradients are not finite (counted as a bad step)."""
        step = self.guard.pending
        if step and not self.scaler.is_enabled():
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            step = not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
            if not step:
                self.guard.record(True, str(self.last))
        if step:
            super().optimizer_step()
        else:
            self.optimizer.zero_grad()
        self.guard.pending = False

    def save_metrics(self, metrics):
        """Write the results.csv row with the epoch's count of skipped non-finite batches and steps, and with
        Co-mining's share of pseudo boxes that match a hidden box (a ratio of the epoch means, not a mean of ratios)."""
        extra = {SKIPPED_COLUMN: self.guard.skipped}
        if "train/pseudo_hit" in metrics:
            n = float(metrics["train/pseudo_n"])
            extra["train/pseudo_share"] = float(metrics["train/pseudo_hit"]) / n if n > 0 else 0.0
        for m in self.methods:  # each method's own columns (e.g. the teacher's thresholds)
            extra.update(m.results_columns(metrics))
        super().save_metrics({**metrics, **extra})

    def run_callbacks(self, event: str):
        """Ultralytics' callbacks; at the end of each training epoch the methods' `epoch_end` hooks run first (every DDP
        rank, before validation, the results.csv row and the checkpoint: e.g. the teacher's all-reduced calibration)."""
        if event == "on_train_epoch_end":
            for m in self.__dict__.get("methods", ()):
                m.epoch_end(self)
        super().run_callbacks(event)

    def _load_checkpoint_state(self, ckpt):
        """Ultralytics' restore of optimizer, EMA and stopper (resume and NaN recovery), then the methods' state."""
        super()._load_checkpoint_state(ckpt)
        saved = ckpt.get(CHECKPOINT_KEY) or {}
        for m in self.methods:
            m.load_state_dict(saved.get(m.NAME) or {})

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Build the YOLO dataset, stopping with the file named if Ultralytics rejected any image or label file.

        Each method may then adapt it (e.g. Co-mining's hidden boxes carried through augmentation).
        """
        try:
            dataset = super().build_dataset(img_path, mode, batch)
        except RuntimeError as e:  # Ultralytics rejected every image: say why for the first one
            if "No valid images found" not in str(e):
                raise
            explain_no_valid_images(img_path, len(self.data["names"]))
            raise
        check_dropped_labels(dataset)
        drop_zero_area_boxes(dataset)
        warn_large_images(dataset)
        for m in self.methods:
            m.setup_dataset(dataset, mode, self)
        return dataset

    def save_model(self):
        """Ultralytics' checkpoint writes (last.pt, best.pt, epochN.pt), each made atomic.

        Ultralytics writes the files in place, so a process killed mid-write would leave a truncated last.pt and nothing
        to resume from. Here it writes them into a hidden temporary folder inside weights/ (same filesystem; hidden, so
        `resume=True`'s search for the latest last*.pt never finds a partial file there), then each is moved over its
        final name with os.replace. Swapping the three paths that Ultralytics derives the file names from is less
        fragile than wrapping the byte writes: it holds however Ultralytics serialises the checkpoint.
        """
        wdir, last, best = self.wdir, self.last, self.best
        tmp = wdir / f".saving-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier killed process that had our pid
        self.wdir, self.last, self.best = tmp, tmp / last.name, tmp / best.name
        try:
            with _checkpoint_entry({m.NAME: s for m in self.methods if (s := m.state_dict())}):
                saved = super().save_model()
            for f in sorted(tmp.iterdir()):
                os.replace(f, wdir / f.name)
        finally:
            self.wdir, self.last, self.best = wdir, last, best
            shutil.rmtree(tmp, ignore_errors=True)
        return saved

    def final_eval(self):
        """Ultralytics' final evaluation, with its in-place rewrite of last.pt/best.pt (strip_optimizer) made atomic."""
        with strip_optimizer_atomic():
            super().final_eval()

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """Build the detection model, finding yolo-partial's shipped model YAMLs by name (e.g. yolov5n-obj.yaml)."""
        warn_pretraining_leak(weights, self.data, self.hidden_manifest)
        return super().get_model(resolve_model(cfg), weights, verbose)

    def get_validator(self):
        """Return a DetectionValidator given only Ultralytics' own keys (its cfg check rejects others)."""
        args = copy(self.args)
        for k in METHOD_KEYS:
            delattr(args, k)
        return validator_for(self, args)  # with the partial-aware mAP when the data's partial: file lists val images

    def set_class_weights(self):
        """Set class weights, then install the partial criterion before the EMA copy is made so both carry it."""
        super().set_class_weights()
        self._install_criterion()

    def resume_training(self, ckpt):
        """Resume, then replace the stock criterion that Ultralytics rebuilds for end-to-end heads."""
        super().resume_training(ckpt)
        if ckpt is not None and self.resume:
            updates = getattr(unwrap_model(self.model).criterion, "updates", None)
            self._install_criterion()
            if updates is not None:  # E2ELoss's one-to-many/one-to-one schedule continues where it stopped
                crit = unwrap_model(self.model).criterion
                crit = getattr(crit, "base", crit)  # inside CoMiningLoss
                crit.updates = updates - 1
                crit.update()

    def _install_criterion(self):
        model, hidden = unwrap_model(self.model), self.hidden_manifest is not None
        model.criterion = partial_criterion(model, hidden)
        if self.ema:
            self.ema.ema.criterion = partial_criterion(self.ema.ema, hidden)



def _column(name: str) -> str:
    """A loss item's name fitted to the progress bar's 11-character columns: a name longer than 10 characters keeps
    its first word's initial (teacher_hidden -> t_hidden), so neighbouring names never run together."""
    if len(name) <= 10 or "_" not in name:
        return name[:10]
    head, rest = name.split("_", 1)
    return f"{head[0]}_{rest}"[:10]


def warn_pretraining_leak(weights, data: dict, manifest) -> bool:
    """Warn (once per run) when weights pretrained on COCO start training on a COCO-derived partial split: the boxes the
    split hid were labels of the pretraining set, so the model has seen them and the split measures less than it seems.
    -> whether it warned. COCO-derived: a hidden-box manifest and COCO's 80 class names."""
    from ultralytics.utils import LOGGER

    pre = getattr(weights, "args", None) or {}
    pre_data = str(pre.get("data", "") if isinstance(pre, dict) else getattr(pre, "data", ""))
    if manifest is None or "coco" not in Path(pre_data).name.lower():
        return False
    names = list((data or {}).get("names", {}).values()) if isinstance((data or {}).get("names"), dict) else []
    if len(names) != 80 or names != list(getattr(weights, "names", {}).values()):
        return False
    LOGGER.warning(f"these weights were pretrained on COCO ({pre_data}) and this dataset is a COCO-derived partial split "
                   f"(hidden boxes in {manifest}): the hidden labels were in the pretraining, so results on it overstate "
                   f"what the method recovers; train from scratch (model=*.yaml) or from weights not trained on COCO")
    return True


@contextmanager
def _checkpoint_entry(state: dict[str, Any]):
    """Within the block, the checkpoint dict Ultralytics' save_model passes to torch.save gets a `CHECKPOINT_KEY`
    entry holding the methods' state (plain values: stock Ultralytics ignores the key, even with weights_only).

    Ultralytics builds that dict inside save_model with no hook, and a second load-and-save of every checkpoint would
    double its cost; the patch lives only for the one call and touches only a dict carrying Ultralytics' own keys.
    """
    if not state:
        yield
        return
    save = torch.save

    def save_with_state(obj, *args, **kwargs):
        if isinstance(obj, dict) and "train_args" in obj and "ema" in obj:
            obj = {**obj, CHECKPOINT_KEY: state}
        return save(obj, *args, **kwargs)

    torch.save = save_with_state
    try:
        yield
    finally:
        torch.save = save
