"""Train a segmentation network on a dataset folder (made by ``hemolab synth`` or the data scripts).

CNN-DS follows Arab 2020, Methods, "Training": Adam, batch 1, soft Dice loss, learning rate halved after
10 epochs without improvement of the validation loss, early stop after 50 (scaled down in the tiny and
small profiles). The best weights go to RUN_DIR/best.pt, the state after every epoch to RUN_DIR/last.pt
(``--resume`` continues an interrupted run) and the per-epoch history to RUN_DIR/history.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hemolab.errors import HemolabError, HemolabFileError

HELP = "train CNN-DS (or the Patel 3D CNN) on a dataset folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="dataset folder with dataset.json (from `hemolab synth` or the data scripts)",
    )
    parser.add_argument(
        "--arch",
        choices=("cnnds", "patel"),
        default="cnnds",
        help="network: cnnds (Arab 2020, default) or patel (Patel 2019)",
    )
    parser.add_argument(
        "--profile",
        choices=("tiny", "small", "full"),
        default=None,
        help="training settings: tiny (seconds), small (minutes on a CPU), full (the paper's, GPU); "
        "default: auto (full on a GPU, small otherwise)",
    )
    parser.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="folder for best.pt, last.pt and history.csv"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epoch limit (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR where it stopped")
    parser.add_argument(
        "--overwrite", action="store_true", help="start again, replacing RUN_DIR's checkpoints"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / "dataset.json").is_file():
        raise HemolabFileError(
            f"{data} is not a hemolab dataset folder (no dataset.json): make one with `hemolab synth`"
        )
    if args.epochs is not None and args.epochs < 1:
        raise HemolabError(f"--epochs must be at least 1, got {args.epochs}")
    out = Path(args.out)
    from hemolab.datasets import validate_dataset

    # every training and validation case read and checked before the first epoch; one error names them all
    validate_dataset(data, ("train", "validation"), progress=not args.quiet)
    if args.arch == "patel":
        try:
            from hemolab.patches import train_patel
        except ImportError as exc:
            raise HemolabError(
                "--arch patel needs hemolab.patches.train_patel, which is not available here"
            ) from exc
        result = train_patel(
            data,
            args.profile,
            out,
            epochs=args.epochs,
            seed=args.seed,
            resume=args.resume,
            overwrite=args.overwrite,
            device=args.device,
            progress=not args.quiet,
        )
        print(getattr(result, "summary", lambda: str(result))())
        print(f"best checkpoint: {out / 'best.pt'}")
        return 0

    from hemolab.config import resolve_profile
    from hemolab.training import train_cnnds

    profile = resolve_profile(args.profile)
    history = train_cnnds(
        data,
        profile,
        out,
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
        max_epochs=args.epochs,
    )
    print(f"CNN-DS ({profile} profile): {history.summary()}")
    print(f"best checkpoint: {out / 'best.pt'}   history: {out / 'history.csv'}")
    return 0
