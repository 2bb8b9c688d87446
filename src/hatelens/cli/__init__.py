"""The `hatelens` command: parse arguments, set up logging, call library functions, map errors to
exit codes. One module per command group registers its sub-commands; nothing heavy is imported
until a command runs, so `hatelens --help` is instant.
"""

import argparse
import logging
import sys
from importlib import import_module

from hatelens import __version__
from hatelens.errors import HatelensError

# Each module has `register(subparsers)`; its handlers take the parsed args and return an exit code.
COMMAND_MODULES = (
    "hatelens.cli.data_commands",
    "hatelens.cli.evaluate_commands",
    "hatelens.cli.doctor_commands",
    "hatelens.cli.serve_commands",
    "hatelens.cli.compare_commands",
    "hatelens.cli.train_commands",
    "hatelens.cli.run_commands",
    "hatelens.cli.sweep_commands",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatelens",
        description="Is our LLM hate-speech classifier good and fair, and did fine-tuning make it better?",
    )
    parser.add_argument("--version", action="version", version=f"hatelens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        import_module(module).register(subparsers)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.handler(args) or 0
    except HatelensError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
