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
    from parallel_batch.local.config import database_url

    print(database_url())
    return 0


def _db_stop(args: argparse.Namespace) -> int:
    from parallel_batch.local import embedded

    if embedded.stop():
        print(f"Stopped the embedded PostgreSQL ({embedded.pgdata_dir()})")
    else:
        print("The embedded PostgreSQL is not running")
    return 0


def _env(args: argparse.Namespace) -> int:
    from parallel_batch.local import env as localenv

    env = localenv.airflow_environment()
    if not args.no_prepare:
        localenv.prepare_airflow(env)
    print("\n".join(localenv.export_lines(env)))
    return 0


def _airflow(args: argparse.Namespace) -> int:
    from parallel_batch.local import env as localenv
    from parallel_batch.local.conninfo import conninfo_from_connection
    from parallel_batch.local.demo_data import seed_missing_demo_data
    from parallel_batch.local.serve import serve

    env = localenv.airflow_environment(api_port=args.port)
    localenv.prepare_airflow(env)
    demo_data = []
    if not args.no_demo_data:
        demo_data = seed_missing_demo_data(conninfo_from_connection(env[localenv.CONN_ENV]))
    return serve(env, demo_data=demo_data)


def _cluster(args: argparse.Namespace) -> int:
    from parallel_batch.local.cluster import run_cluster

    return run_cluster(port=args.port, workers=args.workers, demo_data=not args.no_demo_data)


def _register_cluster(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="run a local Airflow with the CeleryExecutor and named workers until Ctrl-C "
        "(needs Redis: PARALLEL_BATCH_BROKER_URL, default redis://127.0.0.1:6379/0)",
    )
    cluster.add_argument("--port", type=int, default=8080, help="the UI and API port")
    cluster.add_argument("--workers", type=_count(1), default=2, help="Celery workers to run")
    cluster.add_argument(
        "--no-demo-data", action="store_true", help="do not create the demo table where missing"
    )
    cluster.set_defaults(handler=_cluster)


def seed_commands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Return the ``seed`` group's subcommands, creating the group on first use (shared)."""
    seed = commands.choices.get("seed")
    if seed is None:
        seed = commands.add_parser("seed", help="create demo data")
        seed.add_subparsers(dest="seed_command", required=True, metavar="DATA")
    return next(a for a in seed._actions if isinstance(a, argparse._SubParsersAction))


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


def _seed_events(args: argparse.Namespace) -> int:
    import psycopg

    from parallel_batch.demo.events import seed_events
    from parallel_batch.demo.tables import ENRICHED_TABLE, EVENTS_TABLE, create_events_enriched
    from parallel_batch.local.config import database_url

    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = seed_events(
            conn, args.rows, poison_every=args.poison_every, crash_every=args.crash_every
        )
        create_events_enriched(conn)
    print(f"Seeded {rows:,} rows into {EVENTS_TABLE}; {ENRICHED_TABLE} is ready")
    return 0


def _register_seed_events(commands: argparse._SubParsersAction) -> None:
    events = seed_commands(commands).add_parser(
        "events", help="(re)create demo.events with N rows (earlier rows are replaced)"
    )
    events.add_argument("--rows", type=_count(0), required=True, help="rows to create")
    events.add_argument(
        "--poison-every", type=_count(1), metavar="K", help="every K-th payload starts 'poison:'"
    )
    events.add_argument(
        "--crash-every", type=_count(1), metavar="K", help="every K-th payload starts 'crash:'"
    )
    events.set_defaults(handler=_seed_events)


def _seed_csv(args: argparse.Namespace) -> int:
    from parallel_batch.demo.csv_file import write_customers_csv

    stats = write_customers_csv(args.out, args.rows, bad_every=args.bad_every, seed=args.seed)
    print(
        f"Wrote {stats.rows:,} customer records ({len(stats.bad_ids):,} malformed, "
        f"{stats.lines:,} lines, {stats.size / 1e6:,.1f} MB) to {stats.path}"
    )
    return 0


def _register_seed_csv(commands: argparse._SubParsersAction) -> None:
    customers = seed_commands(commands).add_parser(
        "csv", help="write the demo customers CSV (RFC 4180, UTF-8, awkward on purpose)"
    )
    customers.add_argument("--rows", type=_count(0), required=True, help="records to write")
    customers.add_argument("--out", required=True, metavar="PATH", help="the file to (over)write")
    customers.add_argument(
        "--bad-every", type=_count(1), metavar="K", help="make every K-th record malformed"
    )
    customers.add_argument("--seed", type=int, default=0, help="seed of the random content")
    customers.set_defaults(handler=_seed_csv)


def _status(args: argparse.Namespace) -> int:
    from parallel_batch.local.config import database_url
    from parallel_batch.progress import terminal as status

    return status.show(args.url or database_url(), args.job_key, limit=args.limit)


def _demo(args: argparse.Namespace) -> int:
    from parallel_batch.demo.run import run_demo

    run_demo(events=args.events, csv_records=args.csv_records)
    return 0


def _register_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="seed demo data, run both demo DAGs through Airflow, print a summary"
    )
    demo.add_argument("--events", type=_count(1), default=1_000_000, help="rows of demo.events")
    demo.add_argument(
        "--csv-records", type=_count(1), default=200_000, help="records of the demo CSV"
    )
    demo.set_defaults(handler=_demo)


def _register_status(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="jobs and their chunks: state, rows done/total, rate, ETA, dead letters"
    )
    status.add_argument("job_key", nargs="?", metavar="JOB_KEY", help="show this job's chunks")
    status.add_argument("--limit", type=_count(1), default=20, help="jobs to list (newest first)")
    status.add_argument(
        "--url", help="the database (default: PARALLEL_BATCH_DATABASE_URL or the embedded one)"
    )
    status.set_defaults(handler=_status)


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
    env = commands.add_parser(
        "env", help='print the Airflow environment as exports: eval "$(parallel-batch env)"'
    )
    env.add_argument(
        "--no-prepare", action="store_true", help="skip creating and migrating the metadata DB"
    )
    env.set_defaults(handler=_env)
    local = commands.add_parser(
        "airflow", help="run a local Airflow (UI on :8080) until Ctrl-C, with small demo data"
    )
    local.add_argument("--port", type=int, default=8080, help="the UI and API port")
    local.add_argument(
        "--no-demo-data",
        action="store_true",
        help="do not create the demo table and CSV where they are missing",
    )
    local.set_defaults(handler=_airflow)
    _register_seed_events(commands)
    _register_seed_csv(commands)
    _register_status(commands)
    _register_demo(commands)
    _register_cluster(commands)

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
