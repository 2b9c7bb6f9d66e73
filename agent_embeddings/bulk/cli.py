"""``agent-embeddings bulk`` and ``agent-embeddings bulk verify``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InvalidInputError

__all__ = ["add_bulk_parser"]

_SHOWN_IDS = 20


def cmd_bulk(args: argparse.Namespace) -> int:
    if getattr(args, "bulk_command", None) == "verify":
        return cmd_verify(args)
    missing = [flag for flag, value in (("--spec", args.spec), ("--input", args.input), ("--output", args.output))
               if value is None]
    if missing:
        raise InvalidInputError(f"bulk needs {', '.join(missing)} (see agent-embeddings bulk --help)")
    from ..cli_common import load_manager, pick_name
    from .run import embed_dataset

    manager = load_manager(args.spec)
    try:
        name = pick_name(manager, args.name)
        report = embed_dataset(
            manager, name, args.input, args.output, text_column=args.text_column, id_column=args.id_column,
            engine=args.engine, input_type=None if args.input_type == "none" else args.input_type,
            shard_rows=args.shard_rows, skip_invalid=args.skip_invalid, overwrite=args.overwrite,
            concurrency=args.concurrency, progress=args.progress, ray_address=args.ray_address,
            workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        )
    finally:
        manager.close()
    if args.json:
        row: dict[str, Any] = {k: getattr(report, k) for k in report.__dataclass_fields__}
        print(json.dumps({**row, "rows_per_s": report.rows_per_s}, default=str))
    else:
        print(report.summary())
        if report.skipped:
            ids = ", ".join(repr(i) for i in report.skipped_ids[:_SHOWN_IDS])
            more = ", ..." if report.skipped > _SHOWN_IDS else ""
            print(f"skipped ids: {ids}{more}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..cli_common import load_manager, pick_name

    manager = load_manager(args.spec)
    try:
        name = pick_name(manager, args.name)
        check = manager.verify_space(name, args.output)  # raises EmbeddingSpaceError, naming the differences
    finally:
        manager.close()
    print(f"{args.output}: {name!r} {check.explain()}")
    return 0


def add_bulk_parser(sub: Any) -> None:
    """Add ``bulk`` (and ``bulk verify``) to the CLI's sub-commands."""
    from .job import DEFAULT_SHARD_ROWS

    p = sub.add_parser(
        "bulk", help="embed a corpus (Parquet, JSON Lines, CSV) into Parquet shards; resumable",
        description="Embed a corpus into Parquet shards (id, embedding) plus a _embedding.json manifest. "
                    "Run again with the same arguments to resume after an interruption. "
                    "'bulk verify' checks that a generator still embeds into an output's space.",
    )
    p.add_argument("--spec", help="subject spec JSON file")
    p.add_argument("--name", help="generator name (needed when the spec has several)")
    p.add_argument("--input", help="a Parquet, JSON Lines or CSV file, or a directory of them")
    p.add_argument("--output", help="the output directory")
    p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    p.add_argument("--id-column", help="column holding row ids (default: the row number)")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--input-type", choices=["document", "query", "none"], default="document",
                   help="embed rows as documents (default), queries, or with no input type")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per output shard")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out rows with null, non-string or empty text (default: fail, naming the row)")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--concurrency", type=int, default=1,
                   help="backend calls in flight at once (remote backends: openai:, aios:)")
    p.add_argument("--ray-address", help="Ray cluster to use (e.g. auto, ray://head:10001); default: a local Ray")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per CPU of the cluster)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray actor (default: 1 for device cuda, else 0)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_bulk)
    verbs = p.add_subparsers(dest="bulk_command", metavar="verify")
    v = verbs.add_parser("verify", help="check that a generator embeds into an output's space")
    v.add_argument("--output", required=True, help="the output directory (or its _embedding.json)")
    v.add_argument("--spec", required=True, help="subject spec JSON file")
    v.add_argument("--name", help="generator name (needed when the spec has several)")
    v.set_defaults(func=cmd_bulk)
