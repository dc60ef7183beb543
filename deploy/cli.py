"""The ``ausm-stream`` command line.

Subcommands are added as the pipeline grows; each lives in its own module and registers
itself here. ``ausm-stream info`` describes a model: its config, size and per-stream state.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ausm_stream import AUSMStreamError, __version__


def _info(args: argparse.Namespace) -> int:
    import torch

    from ausm_stream.model import AUSM, AUSMConfig

    if args.weights:
        model = AUSM.from_weights(args.weights)
    else:
        torch.manual_seed(0)
        model = AUSM(AUSMConfig.preset(args.preset)).eval()
    cfg = model.cfg
    params = sum(p.numel() for p in model.parameters())
    state_bytes = len(model.init_state().to_bytes())
    print(f"ausm-stream {__version__}")
    print(f"model: {args.weights or 'preset ' + args.preset + ' (untrained weights)'}")
    print(f"parameters: {params / 1e6:.2f} M")
    print(f"input: {cfg.image_size[0]}x{cfg.image_size[1]}, classes: {', '.join(cfg.class_names)}")
    print(f"state per stream: {state_bytes / 1e6:.2f} MB (constant)")
    print(f"architecture fingerprint: {cfg.arch_fingerprint()}")
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from ausm_stream.model.training.loop import TrainConfig, train

    cfg = TrainConfig.from_yaml(args.config)
    weights = train(cfg, resume=args.resume)
    print(f"weights: {weights}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ausm_stream.model import AUSM
    from ausm_stream.model.data.sources import videos_from_spec
    from ausm_stream.model.evaluation.runner import evaluate

    model = AUSM.from_weights(args.weights)
    videos = videos_from_spec(args.data, model.cfg.image_size)
    report = evaluate(model, videos)
    print(report.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ausm-stream", description="AUSM video segmentation over many live streams."
    )
    parser.add_argument("--version", action="version", version=f"ausm-stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a model: config, parameters, state size")
    info.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    info.add_argument("--weights", help="a .safetensors file written by AUSM.save_weights")
    info.add_argument("--json", action="store_true", help="also print the full config")
    info.set_defaults(func=_info)
    tr = sub.add_parser("train", help="train a model (teacher-forced, parallel over frames)")
    tr.add_argument("--config", required=True, help="training YAML (see model/training/loop.py)")
    tr.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoint")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="score a model: prompted J&F, unprompted AP, ID switches")
    ev.add_argument("--weights", required=True, help="a .safetensors file from training")
    ev.add_argument(
        "--data",
        default="synthetic:test:50:24",
        help="synthetic[:split[:count[:frames]]], davis:ROOT[:split] or "
        "ytvis:ANNOTATIONS.json:IMAGE_ROOT (default: %(default)s)",
    )
    ev.set_defaults(func=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AUSMStreamError as exc:
        print(f"ausm-stream: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
