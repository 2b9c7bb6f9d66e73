"""``agent-embeddings bulk`` (the embedding job), ``bulk verify|info|compare`` (on an output) and ``search``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InvalidInputError

__all__ = ["add_bulk_parser", "add_search_parser"]

_SHOWN_IDS = 20


def cmd_bulk(args: argparse.Namespace) -> int:
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
            keep_columns=_columns(args.keep_columns), append=args.append, engine=args.engine, input_type=None if args.input_type == "none" else args.input_type,
            shard_rows=args.shard_rows, skip_invalid=args.skip_invalid, overwrite=args.overwrite,
            concurrency=args.concurrency, progress=args.progress, log_every_s=args.log_every,
            ray_address=args.ray_address,
            workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        )
    finally:
        manager.close()
    if args.json:  # every field of the report, the timings' split included
        row: dict[str, Any] = {k: getattr(report, k) for k in report.__dataclass_fields__}
        print(json.dumps({**row, "rows_per_s": report.rows_per_s}, default=str))
    else:
        print(report.summary())
        if report.skipped:
            ids = ", ".join(repr(i) for i in report.skipped_ids[:_SHOWN_IDS])
            more = ", ..." if report.skipped > _SHOWN_IDS else ""
            print(f"skipped ids: {ids}{more}", file=sys.stderr)
    return 0


def _columns(value: str | None) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()] if value else []


def cmd_verify(args: argparse.Namespace) -> int:
    from ..cli_common import load_manager, pick_name
    from ..errors import EmbeddingSpaceError

    manager = load_manager(args.spec)
    try:
        name = pick_name(manager, args.name)
        try:
            check = manager.verify_space(name, args.output)  # raises EmbeddingSpaceError, naming the differences
        except EmbeddingSpaceError as exc:
            if not args.json:
                raise
            print(json.dumps({"output": args.output, "generator": name, "ok": False, "error": str(exc)}))
            return 1
    finally:
        manager.close()
    if args.json:
        print(json.dumps({"output": args.output, "generator": name, "ok": True, "min_cosine": check.min_cosine,
                          "cosines": dict(check.cosines), "explain": check.explain()}))
    else:
        print(f"{args.output}: {name!r} {check.explain()}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .manifest import describe_output

    info = describe_output(args.output)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    print(f"{info['output']}: space {info['space_id']} ({info['identity']['model']}, {info['dims']} dims, "
          f"normalize={info['identity']['normalize']}), generator {info['generator']!r}, input_type "
          f"{info['input_type']}")
    print(f"  {info['rows']} rows in {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB, snapshot "
          f"{info['snapshot']}, updated {info['updated']}")
    for record in info["inputs"]:
        print(f"  input {record['source']}: {record['rows']} rows, id column {record['id_column']}, fingerprint "
              f"{record['fingerprint']}")
    for sync in info["syncs"][-5:]:
        print(f"  {sync['at']} {sync['kind']}: +{sync['added']} ~{sync['changed']} ={sync['unchanged']} "
              f"-{sync['removed']}, {sync['embedded']} embedded in {sync['seconds']:.1f}s")
    return 0


def read_queries(path: str) -> list[str]:
    """Queries, one per line; or JSON Lines with a "query" (or "text") field."""
    from pathlib import Path

    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read the queries: {exc}") from None
    if path.endswith((".jsonl", ".ndjson")):
        queries = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                queries.append(str(row.get("query", row.get("text"))))
            except (ValueError, AttributeError):
                raise InvalidInputError(f"{path}, line {number}: not a JSON object with a 'query' field") from None
        return queries
    return [line.strip() for line in lines]


def cmd_compare(args: argparse.Namespace) -> int:
    from ..cli_common import load_manager
    from .search import compare_outputs

    manager = load_manager(args.spec)
    try:
        result = compare_outputs(manager, args.old, args.new, read_queries(args.queries), k=args.k, show=args.show)
    finally:
        manager.close()
    print(json.dumps(result.to_json(), default=str) if args.json else result.summary())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """``agent-embeddings search``: exact top-k over a bulk output, the query embedded as a query."""
    from ..cli_common import load_manager, pick_name

    manager = load_manager(args.spec)
    try:
        name = pick_name(manager, args.name)
        hits = manager.search(name, args.output, args.query, k=args.k)
    finally:
        manager.close()
    if args.json:
        for hit in hits:
            print(json.dumps({"id": hit.id, "score": hit.score, **hit.columns}, default=str))
        return 0
    for rank, hit in enumerate(hits, 1):
        shown = "  ".join(f"{k}={str(v)[:80]!r}" for k, v in hit.columns.items())
        print(f"{rank:>3}  {hit.score:.4f}  {hit.id!r}  {shown}".rstrip())
    return 0


def add_search_parser(sub: Any) -> None:
    """Add ``search`` to the CLI's sub-commands."""
    from ..cli_common import examples

    p = sub.add_parser(
        "search", help="exact top-k over a bulk output for a query (streamed, bounded memory)",
        description="Embed the query as a query, check the output's space, and print the k nearest rows by cosine "
                    "(rank, score, id, kept columns), reading one shard at a time.",
        epilog=examples(
            'agent-embeddings search --spec specs/default.json --output vectors/ "How do I reset my password?"',
            'agent-embeddings search --spec specs/default.json --output vectors/ --k 3 --json "password reset"',
        ),
    )
    p.add_argument("--spec", required=True, help="subject spec JSON file")
    p.add_argument("--name", help="generator name (needed when the spec has several)")
    p.add_argument("--output", required=True, help="the bulk output directory")
    p.add_argument("--k", type=int, default=10, help="results to show (default: 10)")
    p.add_argument("--json", action="store_true", help="one JSON line per result")
    p.add_argument("query", help="the query text")
    p.set_defaults(func=cmd_search)


_USAGE = """%(prog)s --spec FILE --input PATH --output DIR [options]
       %(prog)s {verify,info,compare} ...   (see: %(prog)s verify --help)"""


def add_bulk_parser(sub: Any) -> None:
    """Add ``bulk`` (the embedding job) and its commands on an output, ``bulk verify|info|compare``."""
    from ..cli_common import PROG, add_log_flags, examples
    from .job import DEFAULT_SHARD_ROWS

    p = sub.add_parser(
        "bulk", help="embed a corpus (Parquet, JSON Lines, CSV) into Parquet shards; resumable", usage=_USAGE,
        description="Embed a corpus into Parquet shards (id, embedding, content_hash) plus a _embedding.json "
                    "manifest. Run the same command again to resume after an interruption, or to sync the output "
                    "after the input changed (with --id-column). Without a terminal (nohup, cron, CI) a log line "
                    "every --log-every seconds says the rows done, the rate and the time left. The commands "
                    "below work on an output.",
        epilog=examples(
            "agent-embeddings bulk --spec specs/default.json --input corpus.jsonl --id-column id --output vectors/",
            "agent-embeddings bulk --spec specs/default.json --input corpus/ --text-column body --keep-columns "
            "title,body --output vectors/",
            "nohup agent-embeddings bulk --spec specs/default.json --input corpus.parquet --output vectors/ &",
            "agent-embeddings bulk --engine ray --ray-address auto --spec specs/default.json --input /shared/corpus/ "
            "--output /shared/vectors/",
            "agent-embeddings bulk verify --spec specs/default.json --output vectors/  # same space as the index?",
            "agent-embeddings bulk info vectors/",
            "agent-embeddings bulk compare old/ new/ --spec specs/next.json --queries queries.txt",
        ),
    )
    p.add_argument("--spec", help="subject spec JSON file")
    p.add_argument("--name", help="generator name (needed when the spec has several)")
    p.add_argument("--input", help="a Parquet, JSON Lines or CSV file, or a directory of them")
    p.add_argument("--output", help="the output directory")
    p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    p.add_argument("--id-column", help="column holding row ids (default: the row number); needed to sync a "
                   "changed input")
    p.add_argument("--keep-columns", metavar="COL,COL",
                   help="input columns to copy into the output beside id and embedding (e.g. text,title)")
    p.add_argument("--append", action="store_true",
                   help="add this input to an output that holds another input's vectors (same space; ids unique)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): this process; ray: actors of a Ray cluster (pip install "
                        "'agent-embeddings[ray]')")
    p.add_argument("--input-type", choices=["document", "query", "none"], default="document",
                   help="embed rows as documents (default), queries, or with no input type")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS,
                   help=f"rows per output shard, the unit of resuming (default: {DEFAULT_SHARD_ROWS})")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out rows with null, non-string or empty text (default: fail, naming the row)")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--concurrency", type=int, default=1,
                   help="backend calls in flight at once (remote backends: openai:, aios:)")
    p.add_argument("--ray-address", help="Ray cluster to use (e.g. auto, ray://head:10001); default: a local Ray")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per CPU of the cluster)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per Ray actor (default: 1 for device cuda, else 0)")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON line (rows, embedded, seconds, load_seconds, embed_seconds, ...)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar even when stderr is not a terminal")
    prog.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar and no progress lines")
    add_log_flags(p, "rows")
    p.set_defaults(func=cmd_bulk, long_job=True)

    verbs = p.add_subparsers(title="commands on an output", metavar="{verify,info,compare}", prog=f"{PROG} bulk")
    v = verbs.add_parser(
        "verify", help="check that a generator embeds into an output's space (exit status 1 if not)",
        description="Check that a spec's generator embeds into the space of a bulk output: equal identity, and the "
                    "stored probe sentences embed to the stored vectors. Exit status 1, naming the differences, "
                    "if not. What an agent runs at start-up against the index it will query.",
        epilog=examples(
            "agent-embeddings bulk verify --spec specs/default.json --output vectors/",
            "agent-embeddings bulk verify --spec specs/default.json --name hf-minilm --output vectors/ --json",
        ),
    )
    v.add_argument("--output", required=True, help="the output directory (or its _embedding.json)")
    v.add_argument("--spec", required=True, help="subject spec JSON file")
    v.add_argument("--name", help="generator name (needed when the spec has several)")
    v.add_argument("--json", action="store_true", help="print the outcome as one JSON object (ok, cosines, error)")
    v.set_defaults(func=cmd_verify, long_job=False)
    i = verbs.add_parser(
        "info", help="an output's space, rows, inputs, syncs and size",
        epilog=examples("agent-embeddings bulk info vectors/", "agent-embeddings bulk info vectors/ --json"),
    )
    i.add_argument("output", help="the output directory")
    i.add_argument("--json", action="store_true", help="print it as one JSON object")
    i.set_defaults(func=cmd_info, long_job=False)
    c = verbs.add_parser(
        "compare", help="how retrieval changes between two outputs of one corpus (two spaces)",
        description="Embed each query in each output's space and compare the top-k neighbours: mean overlap, "
                    "the share of queries whose best hit stays, and the queries that change most.",
        epilog=examples(
            "agent-embeddings bulk compare old/ new/ --spec specs/both.json --queries queries.txt --k 5",
            "agent-embeddings bulk compare old/ new/ --spec specs/both.json --queries queries.jsonl --json",
        ),
    )
    c.add_argument("old", help="the output agents use now")
    c.add_argument("new", help="the output in the space to move to")
    c.add_argument("--spec", required=True, help="a spec with a generator for each output's space")
    c.add_argument("--queries", required=True, help="queries: a text file, one per line, or JSON Lines")
    c.add_argument("--k", type=int, default=10, help="neighbours compared per query (default: 10)")
    c.add_argument("--show", type=int, default=5, help="queries that change most, shown (default: 5)")
    c.add_argument("--json", action="store_true", help="print the comparison as one JSON object")
    c.set_defaults(func=cmd_compare, long_job=False)
