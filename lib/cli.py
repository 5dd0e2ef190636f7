"""What the three programs share on the command line: common flags, logging, error reporting."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import NoReturn

from lib import __version__
from lib.config import DEFAULT_ENV_FILE, Env
from lib.errors import EXIT_UNEXPECTED, AgentError, exit_code_for, exit_codes_help
from lib.logs import redact, setup_logging

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def base_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=(epilog + "\n\n" if epilog else "") + exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = parser.add_argument_group("common options")
    common.add_argument(
        "--env-file",
        metavar="PATH",
        help=f"read settings from this file (default: {DEFAULT_ENV_FILE}); it never overrides "
        "variables already set in the environment",
    )
    common.add_argument("--log-format", choices=("text", "json"), help="log format on stderr (LOG_FORMAT)")
    common.add_argument("--log-level", choices=LOG_LEVELS, help="(LOG_LEVEL)")
    common.add_argument("--debug", action="store_true", help="debug logs, and a traceback on errors")
    common.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def make_env(args: argparse.Namespace, flag_map: Mapping[str, str] | None = None) -> Env:
    """An Env whose overrides are the flags the operator gave (flag dest -> variable name)."""
    overrides = {var: getattr(args, dest, None) for dest, var in (flag_map or {}).items()}
    return Env(overrides, env_file=getattr(args, "env_file", None))


def _setup_logging_from(args: argparse.Namespace) -> None:
    env = Env(env_file=getattr(args, "env_file", None))
    level = "DEBUG" if args.debug else (args.log_level or (env.str("LOG_LEVEL") or "INFO").upper())
    fmt = args.log_format or (env.str("LOG_FORMAT") or "text").lower()
    # Set up a working logger before reporting a bad value, so the report itself can be logged.
    setup_logging(
        level=level if level in LOG_LEVELS else "INFO", fmt=fmt if fmt in ("text", "json") else "text"
    )
    if level not in LOG_LEVELS:
        env.problems.append(f"LOG_LEVEL: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    if fmt not in ("text", "json"):
        env.problems.append(f"LOG_FORMAT: {fmt!r} is not text or json")
    env.check()


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def report_error(exc: BaseException, *, debug: bool) -> int:
    """Print the error and its hint as one or two lines on stderr; returns the exit code."""
    code = exit_code_for(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, AgentError):
        print(f"error: {redact(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {redact(exc.hint)}", file=sys.stderr)
    elif isinstance(exc, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
    elif code == EXIT_UNEXPECTED:
        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        print("hint: this is a bug; run again with --debug and report the traceback", file=sys.stderr)
    return code


def run(
    parser: argparse.ArgumentParser,
    main: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
    *,
    sigterm_interrupts: bool = True,
) -> NoReturn:
    """Parse flags, set up logging, run `main`, and exit with the code of the one table."""
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if sigterm_interrupts:
        # systemd stops a sync with SIGTERM: unwind like Ctrl-C so sessions get logged out.
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        _setup_logging_from(args)
        code = main(args)
    except (Exception, KeyboardInterrupt) as exc:  # the one boundary where every error ends
        code = report_error(exc, debug=debug)
    sys.stdout.flush()
    sys.exit(code)
