"""The `maskclf` command line: parses arguments and calls library functions, nothing else."""

from __future__ import annotations

import argparse
import os
import sys

from maskclf import __version__
from maskclf.cli import data_cmds, inference_cmds, report_cmds, toolkit_cmds, train_cmds, tune_cmds

COMMAND_MODULES = [data_cmds, train_cmds, inference_cmds, toolkit_cmds, report_cmds, tune_cmds]


def build_parser() -> argparse.ArgumentParser:
    """The `maskclf` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="maskclf",
        description="Mask status x gender x age-group face classification, from dataset folder to scored submission.",
        epilog="Run `maskclf demo` for an end-to-end run on a built-in synthetic dataset.",
    )
    parser.add_argument("--version", action="version", version=f"maskclf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `maskclf` with `argv` (default: the command line); returns the exit code."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from maskclf.cli.common import run_command

    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
