"""The `yolo-partial` command: Ultralytics-style `key=value` arguments, the method keys, one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .offline import set_offline_env

MODES = ("train", "val", "predict", "export", "reproduce")
DATA_MODES = ("split", "convert", "download")  # dataset tools: their own keys, checked by their modules
USAGE = """Usage: yolo-partial MODE [cfg=FILE.yaml] [key=value ...]

Modes:
  train      train a detector; data= defaults to the embedded partially labelled 'shapes' dataset
  val        validate a checkpoint:      yolo-partial val model=runs/detect/train/weights/best.pt data=... [hidden=True]
  predict    run inference:              yolo-partial predict model=best.pt source=images/
  export     export a checkpoint:        yolo-partial export model=best.pt format=onnx
  split      partially labelled copy:    yolo-partial split data=X.yaml mode=easy|hard|extreme|miss50|keep [ratio=r] seed=0 [out=DIR]
  convert    convert to YOLO format:     yolo-partial convert dusia|voc|coco key=value ...  (see 'yolo-partial convert help')
  download   fetch a shipped dataset:    yolo-partial download data=data/voc-hard.yaml  (the only command using the network)
  reproduce  sweep one knob, tabulate:   yolo-partial reproduce table=dusia-box|dusia-obj|brl-t|brl-weight|comining [data=...] [values=0,0.25]
  help       print this message

Every Ultralytics key is accepted (https://docs.ultralytics.com/usage/cfg/). cfg= names a YAML file holding any
mix of Ultralytics keys and the keys below; keys on the command line win. Training keys of yolo-partial:
{keys}

Examples:
  yolo-partial train cfg=cfg/bpr_obj.yaml epochs=10
  yolo-partial train cfg=cfg/bpr_both.yaml data=data/dusia.yaml model=yolov8n.yaml imgsz=640
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
    extra = {"val": {"hidden"}, "reproduce": {"table", "values"}}.get(mode, set())  # checked by their own code
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


def run(mode: str, args: dict[str, Any]) -> None:
    """Run one mode with checked arguments."""
    from ultralytics import YOLO

    from .data import resolve_data
    from .errors import PartialConfigError
    from .models import resolve_model
    from .trainer import PartialDetectionTrainer

    if mode == "reproduce":
        from .reproduce import run_reproduce

        run_reproduce(args)
        return
    if mode == "train":
        if not args.get("resume"):
            if not args.get("data"):
                args.setdefault("imgsz", 160)  # the embedded dataset's native size
            # resolved here: Ultralytics' Model.train would otherwise fill in its own default, coco8.yaml
            args["data"] = resolve_data(args.get("data"))
        model = resolve_model(args.pop("model", None) or "yolov8n.yaml")
        YOLO(model).train(trainer=PartialDetectionTrainer, **args)
        return
    model = args.pop("model", None)
    if not model:
        raise PartialConfigError(f"{mode} needs model=PATH: expected a checkpoint such as runs/detect/train/weights/best.pt")
    if mode == "val":
        hidden = args.pop("hidden", None)
        if args.get("data"):  # else the checkpoint's own dataset, as with `yolo val`
            args["data"] = resolve_data(args["data"])
        yolo = YOLO(model)
        metrics = yolo.val(**args)
        if hidden not in (None, False):
            report_hidden(yolo, hidden, args, Path(metrics.save_dir))
    elif mode == "predict":
        if "source" not in args:
            raise PartialConfigError("predict needs source=PATH: expected an image, folder, video or glob")
        args.setdefault("save", True)
        YOLO(model).predict(**args)
    else:
        YOLO(model).export(**args)


def report_hidden(yolo, hidden: Any, args: dict[str, Any], save_dir: Path) -> None:
    """Print hidden-object recall after `val` and save it as hidden_recall.json in the val run folder.

    `hidden` is a manifest path, or True for the manifest named by the data YAML's `hidden:` key.
    """
    import json

    from .data import resolve_data
    from .fileio import write_text_atomic
    from .hidden import find_manifest, format_recall, hidden_recall, load_manifest
    from .errors import PartialConfigError

    if hidden is True:
        data = args.get("data") or yolo.overrides.get("data") or yolo.ckpt.get("train_args", {}).get("data")
        hidden = find_manifest(resolve_data(data)) if data else None
        if hidden is None:
            raise PartialConfigError(f"hidden=True but data={data} names no manifest (no 'hidden:' key): pass hidden=PATH")
    kw = {k: args[k] for k in ("imgsz", "batch", "device", "conf") if args.get(k) is not None}
    if "imgsz" not in kw:
        kw["imgsz"] = yolo.overrides.get("imgsz") or yolo.ckpt.get("train_args", {}).get("imgsz", 640)
    result = hidden_recall(yolo, load_manifest(hidden), **kw)
    print(format_recall(result))
    write_text_atomic(save_dir / "hidden_recall.json", json.dumps(result, indent=1))


def run_data_tool(mode: str, tokens: list[str]) -> None:
    """Run `split` or `convert`; their modules check their own keys and raise one-line errors."""
    if mode == "split":
        from .split import run_split

        run_split(parse_pairs(tokens, set()))
        return
    if mode == "download":
        from .download import run_download

        run_download(parse_pairs(tokens, set()))
        return
    from .convert import run_convert

    kind = tokens[0] if tokens and "=" not in tokens[0] else None
    run_convert(kind, parse_pairs(tokens[1:] if kind else tokens, set()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `yolo-partial` console script; returns the exit status."""
    set_offline_env()
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"help", "-h", "--help"}:
        print(usage())
        return 0
    mode = argv[0]
    from .errors import PartialError

    if mode not in MODES + DATA_MODES:
        modes = "|".join(MODES + DATA_MODES)
        print(f"yolo-partial: error: unknown mode '{mode}': expected one of {modes} (see 'yolo-partial help')", file=sys.stderr)
        return 2
    try:
        if mode in DATA_MODES:
            run_data_tool(mode, argv[1:])
        else:
            run(mode, build_args(mode, argv[1:]))
    except PartialError as e:
        print(f"yolo-partial {mode}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. model=missing.pt, or a project= folder that cannot be written
        print(f"yolo-partial {mode}: error: {(str(e).strip().splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
