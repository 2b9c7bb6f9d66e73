"""``agent-embeddings``: embed, validate specs, list backends, print the schema, serve, bulk.

Errors are one line on stderr and a non-zero exit status (set AGENT_EMBEDDINGS_DEBUG=1 for a
traceback). ``validate``, ``backends`` and ``schema`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .cli_common import load_manager as _manager
from .cli_common import pick_name as _pick_name
from .errors import AgentEmbeddingsError, InvalidInputError
from .version import __version__

__all__ = ["main"]

PROG = "agent-embeddings"


class _Parser(argparse.ArgumentParser):
    """No prefix matching (``--input`` must not be taken for ``--input-type``); sub-parsers, bulk's
    included, are made from the parser's own class, so they inherit this."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def split_lines(text: str) -> list[str]:
    r"""One text per line: split on ``\n`` (``\r\n`` too), never on the other characters that
    ``str.splitlines`` takes for line ends (U+2028, form feed, ``\x1c``...), which belong to a text.

    >>> split_lines("a\x0cb\r\nc\u2028d\n")
    ['a\x0cb', 'c\u2028d']
    """
    lines = text.split("\n")
    if lines[-1] == "":  # the final line end ends the last line; it does not start an empty one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read_texts(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    if args.text and args.input is not None:
        raise InvalidInputError("give TEXT arguments or --input FILE, not both")
    if args.text:
        return list(args.text)
    if args.input is None or args.input == "-":
        source, texts = "stdin", split_lines(stdin.read())
    else:
        source, texts = args.input, split_lines(_read_file(args.input))
    for number, line in enumerate(texts, 1):
        if not line:
            raise InvalidInputError(f"{source} line {number} is empty; empty texts have no meaningful embedding")
    return texts


def _read_file(path: str) -> str:
    # newline="": no translation, so a lone "\r" stays in its text as it does on stdin.
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidInputError(f"--input {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"--input {path}: is a directory, not a file of texts") from None
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"--input {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidInputError(f"--input {path}: cannot read it ({exc.strerror or exc})") from None


def cmd_embed(args: argparse.Namespace) -> int:
    manager = _manager(args.spec)
    name = _pick_name(manager, args.name)
    texts = _read_texts(args, sys.stdin)
    if not texts:
        raise InvalidInputError("no text given: pass TEXT arguments, --input FILE or lines on stdin")
    gen = manager.get(name)
    step = max(gen.batch_size, 256)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and len(texts) > step)
    from tqdm import tqdm

    progress = tqdm(
        total=len(texts), unit="text", disable=not show, file=sys.stderr, dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} texts [{elapsed}<{remaining}, {rate_fmt}]",
    )
    out = sys.stdout
    try:
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            vectors = manager.encode(name, chunk, normalize=args.normalize, input_type=args.input_type)
            for offset, (text, vec) in enumerate(zip(chunk, vectors)):
                if args.format == "summary":
                    norm = float((vec.astype("float64") ** 2).sum() ** 0.5)
                    first = ", ".join(f"{x:+.4f}" for x in vec[:5])
                    out.write(f"{name}: {text!r}\n  dims={vec.shape[0]} norm={norm:.4f} first=[{first}, ...]\n")
                else:
                    row: dict[str, Any] = {"index": start + offset, "embedding": vec.tolist()}
                    if args.include_text:
                        row["text"] = text
                    out.write(json.dumps(row) + "\n")
            progress.update(len(chunk))
    finally:
        progress.close()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .manager import EmbeddingGeneratorManager
    from .specs import skipped_items

    failed = 0
    for path in args.files:
        try:
            manager = EmbeddingGeneratorManager.from_subject_spec(path)  # refuses a spec with no generator
        except AgentEmbeddingsError as exc:
            failed += 1
            _error(str(exc))
            continue
        spec = manager.spec
        skipped = skipped_items(spec) if spec is not None else []
        print(f"{path}: ok ({len(manager)} embedding generator(s), {len(skipped)} other item(s))")
        for info in manager.list_generators():
            aliases = f" (also: {', '.join(info.aliases)})" if info.aliases else ""
            print(f"  {info.name}{aliases}: {info.provider} {info.model}")
        for why, _ in skipped:
            print(f"  skipped {why}")
    return 1 if failed else 0


def cmd_backends(args: argparse.Namespace) -> int:
    from .plugins import get_backends

    rows = [
        {"prefix": b.prefix, "factory": b.factory_name, "distribution": b.distribution, "version": b.version}
        for b in sorted(get_backends().values(), key=lambda b: b.prefix)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["prefix", "factory", "distribution", "version"]
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    for line in [dict(zip(headers, headers)), *rows]:
        print("  ".join(line[h].ljust(w) for h, w in zip(headers, widths)).rstrip())
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .specs import subject_spec_schema

    print(json.dumps(subject_spec_schema(), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from pydantic import SecretStr

    from .redaction import remember_secret
    from .secrets import resolve_secret_ref
    from .server.config import ServerConfig, parse_api_keys
    from .server.runner import require_server_extra

    if not args.grpc and not args.http:
        raise InvalidInputError("serve needs --grpc HOST:PORT and/or --http HOST:PORT")
    if args.metrics_port is not None and not args.grpc:
        raise InvalidInputError("--metrics-port is for the gRPC server; the HTTP server answers /metrics itself")
    # Settings and the extra are checked before the spec's models load: a bad flag fails at once.
    keys = [SecretStr(k) for k in args.api_key or []]
    keys += [resolve_secret_ref(ref, who="--api-key-ref") for ref in args.api_key_ref or []]
    keys += parse_api_keys(os.environ.get("AGENT_EMBEDDINGS_API_KEYS", ""))
    for key in keys:  # the server's own keys: masked in its log like any other secret
        remember_secret(key.get_secret_value())
    config = ServerConfig(
        api_keys=tuple(keys),
        max_inputs=args.max_inputs,
        max_request_bytes=args.max_request_bytes,
        max_input_chars=args.max_input_chars,
        max_concurrency=args.max_concurrency,
        grace_period_s=args.grace_period,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        cors_origins=tuple(args.cors_origin or ()),
        metrics_port=args.metrics_port,
        max_header_bytes=args.max_header_bytes,
        read_timeout_s=args.read_timeout,
    )
    require_server_extra(grpc=bool(args.grpc), http=bool(args.http))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server.runner import make_servers, run_servers

    manager = _manager(args.spec)
    servers = make_servers(manager, grpc=args.grpc, http=args.http, config=config)

    def ready(started: Sequence[Any]) -> None:
        for s in started:
            print(f"{PROG}: serving {s.kind} on {s.address}", file=sys.stderr, flush=True)
            if getattr(s, "metrics_address", None):
                print(f"{PROG}: serving metrics on http://{s.metrics_address}/metrics", file=sys.stderr, flush=True)

    try:
        asyncio.run(run_servers(manager, servers, config=config, on_ready=ready))
    finally:
        # Join the micro-batch workers: a daemon thread still in torch when the interpreter goes
        # aborts it. Their calls were cancelled at the end of the grace period: a forward pass at most.
        manager.close()
    # The process ends now. Left to the garbage collector, finalizing what torch and transformers
    # built takes seconds (2.5-4.5 s on a busy 2-core box); frozen, it needs no collection.
    import gc

    gc.freeze()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pathlib import Path

    from .server.config import (
        DEFAULT_GRACE_PERIOD_S,
        DEFAULT_MAX_CONCURRENCY,
        DEFAULT_MAX_HEADER_BYTES,
        DEFAULT_MAX_INPUTS,
        DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_READ_TIMEOUT_S,
    )

    parser = _Parser(prog=PROG, description="Embeddings for AI agents from any backend.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("embed", help="embed TEXT arguments, a file's lines or stdin lines; JSON Lines on stdout")
    p.add_argument("--spec", required=True, help="subject spec JSON file")
    p.add_argument("--name", help="generator name (needed when the spec has several)")
    p.add_argument("--format", choices=["jsonl", "summary"], default="jsonl")
    p.add_argument("--include-text", action="store_true", help="add the text to each JSON line")
    p.add_argument("--input-type", choices=["query", "document"],
                   help="embed the texts as search queries or as documents (the spec's prompts for each)")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None)
    norm.add_argument("--no-normalize", dest="normalize", action="store_false")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--input", metavar="FILE", help="embed this UTF-8 file, one text per line ('-': stdin)")
    p.add_argument("text", nargs="*", help="texts to embed (default: one per stdin line)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("validate", help="check subject spec files (no model is loaded)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("backends", help="list installed backends and the plugins providing them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("schema", help="print the subject spec JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("serve", help="serve a spec's generators over gRPC (AIOS) and/or OpenAI-compatible HTTP")
    p.add_argument("--spec", required=True, help="subject spec JSON file")
    p.add_argument("--grpc", metavar="HOST:PORT", help="serve the AIOS gRPC protocol here")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the OpenAI-compatible HTTP API here")
    p.add_argument("--api-key", action="append", help="accept this bearer key (repeatable; prefer --api-key-ref)")
    p.add_argument("--api-key-ref", action="append", help="accept the key in env:NAME or file:PATH (repeatable)")
    p.add_argument("--max-inputs", type=int, default=DEFAULT_MAX_INPUTS, help="texts per request")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    p.add_argument("--max-input-chars", type=int, metavar="N",
                   help="refuse texts longer than N characters (HTTP 413, gRPC INVALID_ARGUMENT; default: no limit)")
    p.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="requests at once")
    p.add_argument("--grace-period", type=float, default=DEFAULT_GRACE_PERIOD_S, help="seconds, on SIGTERM")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    p.add_argument("--cors-origin", action="append", help="allow this origin (HTTP; CORS is off by default)")
    p.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES, metavar="N",
                   help="HTTP: the largest request head; beyond it 431")
    p.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S, metavar="SECONDS",
                   help="HTTP: close a connection whose request head, or next body chunk, takes longer")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve the gRPC server's Prometheus metrics on this port (0: any free port); "
                        "the HTTP server answers /metrics itself")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="log level on stderr (default info: one access-log line per request)")
    p.set_defaults(func=cmd_serve)

    from .bulk.cli import add_bulk_parser, add_search_parser

    add_bulk_parser(sub)
    add_search_parser(sub)
    return parser




def _error(text: str) -> None:
    """One line on stderr, redacted: whatever an error quotes (a library's text), no secret leaves."""
    from .redaction import redact

    print(f"{PROG}: error: {redact(text)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    # Loading a model prints a weights progress bar; the CLI's output stays ours alone.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("AGENT_EMBEDDINGS_DEBUG") == "1"
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for users; AGENT_EMBEDDINGS_DEBUG=1 shows it, redacted
        if debug:
            import traceback

            from .redaction import redact

            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        if isinstance(exc, AgentEmbeddingsError):
            _error(str(exc))
        else:
            _error(f"unexpected {type(exc).__name__}: {exc}")
        return 1
