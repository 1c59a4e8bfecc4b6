"""The ``knd`` command: ``knd <command> key=value ...``; each command calls ``<stage>.run(cfg)``
(the stages and their schemas: :data:`knd.config.commands.COMMANDS`)."""

from __future__ import annotations

import importlib
import os
import sys
import time

from knd.config.commands import COMMANDS
from knd.config.keys import describe
from knd.config.loading import config_dir, load_config
from knd.config.schema import ConfigError
from knd.runtime import console


def usage() -> str:
    lines = ["usage: knd <command> [key=value ...]   (knd <command> --help lists the keys)", ""]
    lines += [f"  {name:<10} {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def command_help(command: str) -> str:
    return (
        f"usage: knd {command} [key=value ...] [config=FILE.yaml]\n\n"
        f"{COMMANDS[command].help}\n"
        f"defaults from {config_dir() / (command + '.yaml')}; "
        "nested keys with dots, lists as [a,b]\n\n"
        f"{describe(command)}"
    )


SIGPIPE_STATUS = 141
"""What a shell reports for a process its reader went away from (128 + SIGPIPE)."""


def main(argv: list[str] | None = None) -> int:
    """Parse ``knd <command> key=value ...`` and run the command's stage.

    Output piped into a reader that stops early (``knd train --help | head``) ends the command
    quietly, as it ends ``cat`` or ``ls``: no traceback, status 141.
    """
    try:
        status = _dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a closed pipe shows here, not in Python's own flush at exit
        return status
    except BrokenPipeError:
        # Python flushes stdout once more at exit; pointed at /dev/null, that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return SIGPIPE_STATUS


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"knd: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in args):
        print(command_help(command))
        return 0
    return run_command(command, args)


def run_command(command: str, args: list[str]) -> int:
    """Load ``command``'s config from ``key=value`` args and call its stage's ``run(cfg)``.

    Shared by ``knd <command>`` and the ``jobs/*.py`` entry points of ``ray job submit``, so a
    bad argument fails the same way in both: one line on stderr and a non-zero exit status.

    Returns:
        The process exit status: 2 for a bad argument, 1 for bad input, else the stage's own.
    """
    try:
        cfg = load_config(command, args)
    except ConfigError as e:
        print(f"knd {command}: {e}", file=sys.stderr)
        return 2
    # Ray's logs and knd's INFO lines go to the console only when asked for (knd.runtime.console).
    console.configure_logging(console.is_verbose(getattr(cfg, "ray", None) and cfg.ray.verbose))
    for line in console.header(command, COMMANDS[command].help, cfg):
        console.out(line)
    stage = importlib.import_module(COMMANDS[command].stage)
    started = time.perf_counter()
    try:
        result = stage.run(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"knd {command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # the reader of our output went away: main() ends quietly
    except OSError as e:  # disk full, permissions, a file where a folder should be...
        where = f"{e.filename}: " if e.filename else ""
        print(f"knd {command}: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"knd {command}: interrupted", file=sys.stderr)
        return 130
    for line in console.summary(command, result, time.perf_counter() - started):
        console.out(line)
    return int(getattr(result, "exit_code", 0) or 0)


if __name__ == "__main__":
    sys.exit(main())
