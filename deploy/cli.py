"""The ``ausm-stream`` command line.

Subcommands are added as the pipeline grows; each lives in its own module and registers
itself here. ``ausm-stream info`` describes a model: its config, size and per-stream state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ausm_stream import AUSMStreamError, __version__
from ausm_stream.deploy.analytics import add_parser as add_analytics_parser
from ausm_stream.deploy.client import add_parser as add_client_parser
from ausm_stream.errors import ConfigError
from ausm_stream.pipeline.ids import stream_id_argument


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
    if args.time_limit is not None:
        cfg = dataclasses.replace(cfg, time_limit_minutes=args.time_limit)
    weights = train(cfg, resume=args.resume, device=args.device)
    print(f"weights: {weights}")
    return 0


def runtime_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings -> runtime config fields (thresholds etc.), typed like their
    defaults. Architecture fields are fixed by the weights and cannot be set."""
    from ausm_stream.model.config import RUNTIME_FIELDS, AUSMConfig

    defaults = AUSMConfig()
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in RUNTIME_FIELDS:
            raise ConfigError(
                f"--set {pair!r}: expected KEY=VALUE with KEY one of {sorted(RUNTIME_FIELDS)}"
            )
        kind = type(getattr(defaults, key))
        try:
            out[key] = value if kind is type(None) else _parse(kind, value)
        except ValueError:
            raise ConfigError(f"--set {pair!r}: {key} must be of type {kind.__name__}") from None
    return out


def _parse(kind: type, value: str) -> object:
    if kind is bool:  # bool("false") is True
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return value.lower() in ("true", "1", "yes")
    return kind(value)


def _eval(args: argparse.Namespace) -> int:
    from ausm_stream.model import AUSM
    from ausm_stream.model.data.sources import videos_from_spec
    from ausm_stream.model.evaluation.runner import evaluate

    model = AUSM.from_weights(args.weights, **runtime_overrides(args.set))
    videos = videos_from_spec(args.data, model.cfg.image_size)
    if args.videos is not None:
        if args.videos < 1:
            raise ConfigError(f"--videos {args.videos}: give a count of at least 1")
        videos = videos[: args.videos]
    report = evaluate(model, videos)
    print(report.table())
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ausm_stream.model import AUSM

    runtime = runtime_overrides(args.set)
    if args.image_size:
        runtime["image_size"] = args.image_size
    if not runtime:
        raise ConfigError("calibrate: give at least one --set KEY=VALUE or --image-size")
    cfg = AUSM.calibrate(args.weights, args.out or args.weights, **runtime)
    settings = ", ".join(f"{k}={getattr(cfg, k)}" for k in sorted(runtime))
    print(f"{args.out or args.weights}: defaults now {settings}")
    return 0


def _image_size(text: str) -> tuple[int, int]:
    h, sep, w = text.partition("x")
    if not (sep and h.isdigit() and w.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: give HxW, e.g. 224x384")
    return int(h), int(w)


def _demo(args: argparse.Namespace) -> int:
    from ausm_stream.deploy.demo import run_demo

    run_demo(
        Path(args.out),
        streams=args.streams,
        frames=args.frames,
        weights=args.weights,
        port=args.port,
        linger_s=args.linger,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ausm_stream.deploy.serve import serve_forever
    from ausm_stream.pipeline.config import PipelineConfig

    serve_forever(PipelineConfig.load(args.config))
    return 0


def _run(args: argparse.Namespace) -> int:
    from ausm_stream.deploy.run import parse_sources, run_pipeline
    from ausm_stream.pipeline.config import PipelineConfig

    cfg = PipelineConfig.load(args.config)
    run_pipeline(cfg, parse_sources(args.source), args.idle_timeout)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """One or many cameras from one process (a camera-side box): each source's ingest in a
    thread of its own, as an ingest process of the pipeline runs them."""
    from concurrent.futures import ThreadPoolExecutor

    from ausm_stream.deploy.run import parse_sources
    from ausm_stream.deploy.runtime import interrupt_on_sigterm
    from ausm_stream.errors import ConfigError
    from ausm_stream.pipeline.config import PipelineConfig
    from ausm_stream.pipeline.ingest import IngestJob

    if args.stream_id is not None:
        if len(args.source) != 1:
            raise ConfigError(
                "--stream-id names one stream: give it one --source URL, or drop --stream-id "
                "and give --source ID=URL for each stream"
            )
        sources = {args.stream_id: args.source[0]}
    else:
        sources = parse_sources(args.source)
    cfg = PipelineConfig.load(args.config)
    if cfg.kafka.bootstrap == "embedded":
        raise ConfigError("ingest needs kafka.bootstrap of a running broker, not 'embedded'")
    h, _, w = args.size.partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise ConfigError(f"--size {args.size!r}: use HxW, e.g. 128x128")
    jobs = [
        IngestJob(sid, url, (int(h), int(w)), cfg.kafka, cfg.kafka.bootstrap, cfg.ingest)
        for sid, url in sources.items()
    ]
    interrupt_on_sigterm()
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="ingest") as pool:
        runs = [pool.submit(job.run, args.max_frames) for job in jobs]
        try:
            reports = [run.result() for run in runs]
        except KeyboardInterrupt:
            for job in jobs:
                job.stop()
            reports = [run.result() for run in runs]
    for report in reports:
        print(
            f"{report.stream_id}: {report.frames} frames in {report.chunks} chunks, "
            f"{report.reconnects} reconnects"
        )
    return 0


def _add_set_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}, e.g. --set fg_threshold=0.6 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ausm-stream", description="AUSM video segmentation over many live streams."
    )
    parser.add_argument("--version", action="version", version=f"ausm-stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="describe a model: config, parameters, state size")
    info.add_argument("--preset", default="tiny", choices=["tiny", "real", "paper"])
    info.add_argument("--weights", help="a .safetensors file written by AUSM.save_weights")
    info.add_argument("--json", action="store_true", help="also print the full config")
    info.set_defaults(func=_info)
    tr = sub.add_parser("train", help="train a model (teacher-forced, parallel over frames)")
    tr.add_argument("--config", required=True, help="training YAML (see model/training/loop.py)")
    tr.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoint")
    tr.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda", "auto"],
        help="where to train (cuda: an error when torch sees no GPU; default: %(default)s)",
    )
    tr.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop cleanly (checkpoint + weights) after this long",
    )
    tr.set_defaults(func=_train)
    ev = sub.add_parser(
        "eval",
        help="score a model: prompted J&F beside a copy-first-mask baseline, unprompted AP, "
        "object recall, ID switches, frames per second",
        description="Run the model on annotated videos, prompted (each object's first visible "
        "mask) and unprompted, and score both at the annotations' own resolution: the model "
        "sees frames resized to its input size and its masks are upsampled back (nearest), as "
        "DAVIS scores. Prompted: J, F, J&F (DAVIS 2017) and, beside them, the J&F of copying "
        "each object's first mask to every later frame. Unprompted: YouTube-VIS AP (tracks on "
        "unannotated objects count as false positives), object recall (visible annotated "
        "object-frames some track covers at IoU >= 0.5) and tracks per covered object, which "
        "ignore unannotated objects, and ID switches. Also the model's frames per second.",
    )
    ev.add_argument("--weights", required=True, help="a .safetensors file from training")
    ev.add_argument(
        "--data",
        default="synthetic:test:50:24",
        help="synthetic[:split[:count[:frames]]], davis:ROOT[:split[:resolution]] (split: a "
        "file of ImageSets/2017 or ImageSets/2016, or 2016/NAME; resolution: a folder of "
        "JPEGImages, found on disk by default, 480p among several) or "
        "ytvis:ANNOTATIONS.json:IMAGE_ROOT (default: %(default)s)",
    )
    ev.add_argument(
        "--videos",
        type=int,
        default=None,
        metavar="N",
        help="score only the first N videos of --data (they are all read first)",
    )
    _add_set_option(ev, "override a runtime setting of the model for this run")
    ev.set_defaults(func=_eval)
    cal = sub.add_parser(
        "calibrate", help="store tuned runtime settings (thresholds) in a weights file"
    )
    cal.add_argument("--weights", required=True, help="the weights file to read")
    cal.add_argument("--out", help="where to write (default: overwrite --weights)")
    _add_set_option(cal, "a runtime setting to store as the file's default")
    cal.add_argument(
        "--image-size",
        type=_image_size,
        metavar="HxW",
        help="the input size to run these weights at (no weight depends on it: a recipe may "
        "train on smaller frames than it serves); sets the state's size",
    )
    cal.set_defaults(func=_calibrate)
    demo = sub.add_parser("demo", help="the whole pipeline on this machine, no configuration")
    demo.add_argument("--out", default="ausm-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--streams", type=int, default=4)
    demo.add_argument("--frames", type=int, default=64, help="frames per stream")
    demo.add_argument("--weights", default="default", help="model weights (.safetensors)")
    demo.add_argument(
        "--port", type=int, default=8000, help="the API's port (a free one if taken; 0: any)"
    )
    demo.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the API and its live page up this long after the summary",
    )
    demo.set_defaults(func=_demo)
    srv = sub.add_parser("serve", help="run the pipeline with its REST API (control plane)")
    srv.add_argument("--config", help="pipeline YAML (environment AUSM_SECTION__KEY overrides)")
    srv.set_defaults(func=_serve)
    add_client_parser(sub)
    add_analytics_parser(sub)
    run = sub.add_parser("run", help="run the pipeline against the configured services")
    run.add_argument("--config", help="pipeline YAML (environment AUSM_SECTION__KEY overrides)")
    run.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="ID=URL",
        help="also ingest this stream (repeatable)",
    )
    run.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="stop after this many seconds without input",
    )
    run.set_defaults(func=_run)
    ing = sub.add_parser(
        "ingest", help="ingest cameras or files into the frames topic, one process for all"
    )
    ing.add_argument("--config", help="pipeline YAML (kafka and ingest sections)")
    ing.add_argument(
        "--stream-id", type=stream_id_argument, help="the stream of a single --source URL"
    )
    ing.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="[ID=]URL",
        help="file path or rtsp:// / http:// URL: one with --stream-id, or ID=URL each "
        "(repeatable: one thread per stream)",
    )
    ing.add_argument("--size", default="128x128", help="the model's input HxW")
    ing.add_argument("--max-frames", type=int, default=None)
    ing.set_defaults(func=_ingest)
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
