"""`parallel-batch`: the command line.

Subcommands live in small functions registered on one argparse parser; heavy imports happen
inside the handlers so that ``parallel-batch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from parallel_batch.exceptions import ParallelBatchError

Handler = Callable[[argparse.Namespace], int]


def _db_url(args: argparse.Namespace) -> int:
    from parallel_batch.config import database_url

    print(database_url())
    return 0


def _db_stop(args: argparse.Namespace) -> int:
    from parallel_batch import embedded

    if embedded.stop():
        print(f"Stopped the embedded PostgreSQL ({embedded.pgdata_dir()})")
    else:
        print("The embedded PostgreSQL is not running")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parallel-batch",
        description="Restartable, exactly-once parallel batch processing for Airflow and Postgres.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser(
        "db", help="the database: embedded server or PARALLEL_BATCH_DATABASE_URL"
    )
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "url", help="start the embedded server if no database is configured; print the URL"
    ).set_defaults(handler=_db_url)
    db_commands.add_parser("stop", help="stop the embedded server").set_defaults(handler=_db_stop)

    for register in _EXTENSIONS:
        register(commands)
    return parser


# Other modules add their subcommands here (seed, status, env, ...): each is a function that
# takes the subparsers action and registers one command with ``set_defaults(handler=...)``.
_EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except ParallelBatchError as exc:
        print(f"parallel-batch: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
