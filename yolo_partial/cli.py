"""The `yolo-partial` command: Ultralytics-style `key=value` arguments, the method keys, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .offline import set_offline_env

MODES = ("train", "val", "predict", "export", "reproduce")  # model modes: Ultralytics' keys plus the method keys
# dataset tools: their own keys, checked by their modules; name -> (module, entry function, boolean keys that may be
# given bare, as `yolo` takes `save` for save=True)
DATA_MODES = {
    "split": ("split", "run_split", {"keep_single"}),
    "convert": ("convert", "run_convert", set()),
    "download": ("download", "run_download", set()),
    "mine": ("mine", "run_mine", {"images", "augment", "exist_ok"}),
    "accept": ("accept", "run_accept", {"remove_labels"}),
    "merge": ("merge", "run_merge", set()),
}
MODE_USAGE = {
    "train": "yolo-partial train [cfg=FILE|NAME] [data=...] [model=...] [key=value ...]   (method keys: 'yolo-partial help')",
    "val": "yolo-partial val model=runs/detect/train/weights/best.pt [data=...] [hidden=True|PATH] [key=value ...]",
    "predict": "yolo-partial predict model=best.pt source=images/ [key=value ...]",
    "export": "yolo-partial export model=best.pt format=onnx [key=value ...]",
    "reproduce": "yolo-partial reproduce table=dusia-box|dusia-obj|brl-t|brl-weight|comining [data=...] [values=0,0.25] "
                 "[train keys]",
    "split": "yolo-partial split data=X.yaml mode=easy|hard|extreme|miss50|keep [ratio=r] [seed=0] [out=DIR]",
    "convert": "yolo-partial convert dusia|voc|coco|lvis key=value ...   (keys per converter: 'yolo-partial convert help')",
    "download": "yolo-partial download data=data/voc-hard.yaml   (the only command that uses the network)",
    "mine": "yolo-partial mine model=best.pt data=X.yaml [split=train] [conf=...] [match_iou=0.5] [precision=0.8] [uncertain=S] [out=DIR]",
    "accept": "yolo-partial accept data=X.yaml reviewed=candidates.xml|candidates.json out=DIR [remove_labels=False] [ignore_uncertain=True]",
    "merge": "yolo-partial merge data=a.yaml,b.yaml[,...] out=DIR",
}
USAGE = """Usage: yolo-partial MODE [cfg=FILE.yaml] [key=value ...]

Modes:
  train      train a detector; data= defaults to the embedded partially labelled 'shapes' dataset
  val        validate a checkpoint:      yolo-partial val model=runs/detect/train/weights/best.pt data=... [hidden=True]
  predict    run inference:              yolo-partial predict model=best.pt source=images/
  export     export a checkpoint:        yolo-partial export model=best.pt format=onnx
  split      partially labelled copy:    yolo-partial split data=X.yaml mode=easy|hard|extreme|miss50|keep [ratio=r] seed=0 [out=DIR]
  convert    convert to YOLO format:     yolo-partial convert dusia|voc|coco|lvis key=value ...  (see 'yolo-partial convert help')
  download   fetch a shipped dataset:    yolo-partial download data=data/voc-hard.yaml  (the only command using the network)
  reproduce  sweep one knob, tabulate:   yolo-partial reproduce table=dusia-box|dusia-obj|brl-t|brl-weight|comining [data=...] [values=0,0.25]
  mine       find unlabelled objects:    yolo-partial mine model=best.pt data=X.yaml [split=train] [out=DIR]  (CVAT/COCO review files)
  accept     fold a review back in:      yolo-partial accept data=X.yaml reviewed=candidates.xml out=DIR
  merge      merge class-partial sets:   yolo-partial merge data=a.yaml,b.yaml out=DIR
  help       print this message; 'yolo-partial MODE help' prints one mode's usage

Every Ultralytics key is accepted (https://docs.ultralytics.com/usage/cfg/). cfg= names a YAML file (a path, or a
shipped name such as brl.yaml) holding any mix of Ultralytics keys and the method keys below; keys on the command
line win. Method keys of yolo-partial (train, reproduce):
{keys}

Examples:
  yolo-partial train cfg=bpr_obj.yaml epochs=15 close_mosaic=5
  yolo-partial train cfg=brl.yaml data=dusia.yaml model=yolov8n.yaml imgsz=640
  yolo-partial train resume=True model=runs/detect/train/weights/last.pt
"""


def usage() -> str:
    from .keys import METHOD_KEYS

    rows = [f"  {k:<13} default {str(key.default):<7} {key.allowed}" for k, key in METHOD_KEYS.items()]
    return USAGE.format(keys="\n".join(rows))


def parse_pairs(tokens: list[str], bool_keys: set[str]) -> dict[str, Any]:
    """Parse `key=value` tokens (values typed like Ultralytics' CLI); a bare boolean key means True."""
    from ultralytics.cfg import smart_value

    from .errors import PartialConfigError

    args: dict[str, Any] = {}
    for tok in tokens:
        if "=" in tok:
            k, v = tok.split("=", 1)
            if not k or not v:
                raise PartialConfigError(f"'{tok}' is malformed: expected key=value with no spaces around '='")
            args[k] = smart_value(v)
        elif tok in bool_keys:
            args[tok] = True
        else:
            raise PartialConfigError(f"'{tok}' is not a key=value pair: expected e.g. epochs=10")
    return args


def build_args(mode: str, tokens: list[str]) -> dict[str, Any]:
    """Merge cfg= file and command-line keys, and check every key's name, type and range."""
    from ultralytics.cfg import check_cfg
    from ultralytics.utils import DEFAULT_CFG_DICT

    from .data import find_cfg, load_yaml
    from .errors import PartialConfigError
    from .keys import METHOD_KEYS, check_known_keys, coerce

    method = set(METHOD_KEYS) if mode in {"train", "reproduce"} else set()
    extra = {"val": {"hidden", "partial_eval"}, "reproduce": {"table", "values"}}.get(mode, set())  # checked by their own code
    known = set(DEFAULT_CFG_DICT) | method | extra
    bools = {k for k in known if isinstance(DEFAULT_CFG_DICT.get(k, METHOD_KEYS.get(k) and METHOD_KEYS[k].default), bool)}
    cli = parse_pairs(tokens, bools)
    check_known_keys(cli, known)
    args = {}
    if cli.get("cfg"):
        path = find_cfg(cli.pop("cfg"))
        args = load_yaml(path, "cfg file")
        try:
            check_known_keys(args, known - {"cfg"})
        except PartialConfigError as e:
            raise PartialConfigError(f"{path}: {e}") from None
    args.update({k: v for k, v in cli.items() if k != "cfg"})
    ultra = {k: v for k, v in args.items() if k not in method | extra}
    try:
        check_cfg(dict(ultra))
    except (TypeError, ValueError) as e:
        raise PartialConfigError(str(e).strip().splitlines()[0]) from None
    return {k: (coerce(k, v) if k in method else v) for k, v in args.items()}


def check_common(args: dict[str, Any]) -> None:
    """One-line errors for Ultralytics keys whose bad values Ultralytics reports with a traceback (imgsz, device)."""
    import torch

    from .errors import PartialConfigError

    imgsz = args.get("imgsz")
    sizes = imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]
    if imgsz is not None and not (1 <= len(sizes) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                             for v in sizes)):
        raise PartialConfigError(f"imgsz={imgsz!r} is invalid: expected a positive integer such as 640 (or [h, w])")
    device = args.get("device")
    wants_cuda = device not in (None, "") and str(device).lower() not in {"cpu", "mps"}
    if wants_cuda and not torch.cuda.is_available():
        raise PartialConfigError(f"device={device} asks for a CUDA GPU, but none is visible on this machine: expected "
                                 f"device=cpu (or no device= key)")


def run(mode: str, args: dict[str, Any]) -> None:
    """Run one mode with checked arguments."""
    from .checkpoints import load_model, resumable
    from .data import resolve_data
    from .errors import PartialConfigError
    from .keys import coerce
    from .models import resolve_model
    from .partial_val import partial_validator
    from .patches import relocate_label_cache
    from .trainer import PartialDetectionTrainer

    check_common(args)
    relocate_label_cache()  # Ultralytics' labels/*.cache never lands in the user's dataset
    if mode == "reproduce":
        from .reproduce import run_reproduce

        run_reproduce(args)
        return
    if mode == "train":
        if args.get("resume"):  # as `yolo train resume`: model=, resume=PATH, or the latest run
            resume = args.pop("resume")
            last = resumable(resume if isinstance(resume, str) else args.pop("model", None))
            args.pop("model", None)
            load_model(last).train(trainer=PartialDetectionTrainer, resume=True, **args)
            return
        if not args.get("data"):
            args.setdefault("imgsz", 160)  # the embedded dataset's native size
        # resolved here: Ultralytics' Model.train would otherwise fill in its own default, coco8.yaml
        args["data"] = resolve_data(args.get("data"))
        load_model(resolve_model(args.pop("model", None) or "yolov8n.yaml")).train(trainer=PartialDetectionTrainer, **args)
        return
    model = args.pop("model", None)
    if not model:
        raise PartialConfigError(f"{mode} needs model=PATH: expected a checkpoint such as runs/detect/train/weights/best.pt")
    if mode == "val":
        hidden = args.pop("hidden", None)
        partial_eval = coerce("partial_eval", args.pop("partial_eval", True))  # the partial-aware mAP (partial:)
        if args.get("data"):  # else the checkpoint's own dataset, as with `yolo val`
            args["data"] = resolve_data(args["data"])
        yolo = load_model(model)
        manifest = hidden_manifest(yolo, hidden, args) if hidden not in (None, False) else None  # checked first
        metrics = yolo.val(validator=partial_validator(partial_eval), **args)
        if manifest is not None:
            report_hidden(yolo, manifest, args, Path(metrics.save_dir))
    elif mode == "predict":
        if "source" not in args:
            raise PartialConfigError("predict needs source=PATH: expected an image, folder, video or glob")
        args.setdefault("save", True)
        load_model(model).predict(**args)
    else:
        load_model(model).export(**args)


def hidden_manifest(yolo, hidden: Any, args: dict[str, Any]):
    """The hidden-box manifest `val hidden=` names (a path, or True for the data YAML's `hidden:` key), checked against
    the dataset before anything runs."""
    from .data import resolve_data
    from .errors import PartialConfigError
    from .hidden import check_manifest_for, find_manifest, load_manifest

    data = args.get("data") or yolo.overrides.get("data") or yolo.ckpt.get("train_args", {}).get("data")
    data = resolve_data(data) if data else None
    if hidden is True:
        hidden = find_manifest(data) if data else None
        if hidden is None:
            raise PartialConfigError(f"hidden=True but data={data} names no manifest (no 'hidden:' key): pass hidden=PATH")
    manifest = load_manifest(hidden)
    if data and Path(data).is_file():
        check_manifest_for(manifest, data)
    return manifest


def report_hidden(yolo, manifest, args: dict[str, Any], save_dir: Path) -> None:
    """Print hidden-object recall after `val` and save it as hidden_recall.json in the val run folder."""
    import json

    from .fileio import write_text_atomic
    from .hidden import format_recall, hidden_recall

    kw = {k: args[k] for k in ("imgsz", "batch", "device", "conf") if args.get(k) is not None}
    if "imgsz" not in kw:
        kw["imgsz"] = yolo.overrides.get("imgsz") or yolo.ckpt.get("train_args", {}).get("imgsz", 640)
    result = hidden_recall(yolo, manifest, **kw)
    print(format_recall(result))
    write_text_atomic(save_dir / "hidden_recall.json", json.dumps(result, indent=1))


def run_data_tool(mode: str, tokens: list[str]) -> None:
    """Run a dataset tool; its module checks its own keys and raises one-line errors."""
    from importlib import import_module

    from .errors import PartialConfigError

    module, entry, bools = DATA_MODES[mode]
    run_tool = getattr(import_module(f".{module}", __package__), entry)
    if mode != "convert":
        run_tool(parse_pairs(tokens, bools))
        return
    kind = tokens[0] if tokens and "=" not in tokens[0] else None
    if kind is None:
        raise PartialConfigError("convert needs a dataset kind: expected 'yolo-partial convert dusia|voc|coco|lvis "
                                 "key=value ...' (see 'yolo-partial convert help')")
    run_tool(kind, parse_pairs(tokens[1:], set()))


def one_line(e: BaseException) -> str:
    """An exception's message as one clean line: its first line, without terminal colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return (text.splitlines() or [type(e).__name__])[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `yolo-partial` console script; returns the exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # e.g. `yolo-partial help | head -3`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0


def _main(argv: list[str]) -> int:
    set_offline_env()
    if not argv or argv[0] in {"help", "-h", "--help"}:
        print(usage())
        return 0
    mode = argv[0]
    from .errors import PartialError

    if mode not in (*MODES, *DATA_MODES):
        modes = "|".join((*MODES, *DATA_MODES))
        print(f"yolo-partial: error: unknown mode '{mode}': expected one of {modes} (see 'yolo-partial help')", file=sys.stderr)
        return 2
    if argv[1:] in (["help"], ["-h"], ["--help"]) and mode != "convert":  # convert prints its converters' keys itself
        print(f"Usage: {MODE_USAGE[mode]}")
        return 0
    try:
        if mode in DATA_MODES:
            run_data_tool(mode, argv[1:])
        else:
            run(mode, build_args(mode, argv[1:]))
    except PartialError as e:
        print(f"yolo-partial {mode}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a project= folder that cannot be written
        print(f"yolo-partial {mode}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
