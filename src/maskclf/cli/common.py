"""Shared CLI plumbing: config options, example epilogs, user-facing error handling."""

from __future__ import annotations

import argparse
import sys

from maskclf.config import Config, ConfigError, load_config
from maskclf.layout import DataError


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Add the --config/--set options every config-reading command takes."""
    p.add_argument("--config", "-c", action="append", default=[], metavar="YAML",
                   help="YAML file with config changes (repeatable, applied in order)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable)")


def config_from(args: argparse.Namespace, data_root=None) -> Config:
    """Defaults <- --config files <- --set overrides; DATA_DIR on the command line sets data.root.

    Every name and param is checked against its builder here, before any command reads data.
    """
    from maskclf.training.checks import check_config

    cfg = load_config(args.config, args.overrides)
    if data_root is not None:
        cfg.data.root = data_root
    check_config(cfg)
    return cfg


def subparser(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand parser whose help shows `example` as its epilog."""
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def run_command(args: argparse.Namespace) -> int:
    """Run a subcommand; user errors become one clear line on stderr and exit code 2.

    Model commands set `announce` (args -> what the command is about to do): it is printed first, because
    importing PyTorch takes 10-20 s on a cold start and a silent terminal looks hung.
    """
    if getattr(args, "announce", None):
        print(f"maskclf {args.command}: {args.announce(args)} (loading PyTorch ...)", file=sys.stderr, flush=True)
    try:
        rc = args.func(args)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
