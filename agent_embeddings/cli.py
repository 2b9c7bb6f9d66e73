"""``agent-embeddings``: embed, validate specs, list backends, print the schema, serve, bulk.

Errors are one line on stderr and a non-zero exit status (set AGENT_EMBEDDINGS_DEBUG=1 for a
traceback). ``validate``, ``backends`` and ``schema`` never import torch (``validate --check`` does only to
look for a device other than the CPU that a spec names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .cli_common import PROG, log_to_stderr, queued_log
from .cli_common import load_manager as _manager
from .cli_common import pick_name as _pick_name
from .errors import AgentEmbeddingsError, InvalidInputError
from .version import __version__

if TYPE_CHECKING:
    from .server.config import ServerConfig

__all__ = ["main"]

_SHOWN_SKIPPED = 20


class _Parser(argparse.ArgumentParser):
    """No prefix matching (``--input`` must not be taken for ``--input-type``); sub-parsers, bulk's
    included, are made from the parser's own class, so they inherit this."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


class _HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal as usual; an ``examples:`` epilog kept line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        text = " ".join(text.split())
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)  # never "--id-" / "column"


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


def _read_texts(args: argparse.Namespace, stdin: TextIO) -> tuple[list[str], list[int]]:
    """The texts to embed and the output ``index`` of each (its line's index, or its argument's).

    An empty or whitespace-only line is an error naming it, or with ``--skip-empty`` left out
    (said on stderr): such a text has no meaningful embedding, and a whitespace-only one would be
    embedded silently to the same vector as every other.
    """
    if args.text and args.input is not None:
        raise InvalidInputError("give TEXT arguments or --input FILE, not both")
    if args.text:
        texts, what = list(args.text), "argument"  # "argument 2"
    elif args.input is None or args.input == "-":
        texts, what = split_lines(stdin.read()), "stdin line"
    else:
        texts, what = split_lines(_read_file(args.input)), f"{args.input} line"
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank and not args.skip_empty:
        first = blank[0]
        kind = "empty" if not texts[first] else "whitespace only"
        more = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise InvalidInputError(
            f"{what} {first + 1} is {kind}{more}; such a text has no meaningful embedding: remove it, "
            "or pass --skip-empty to leave such lines out"
        )
    if blank:
        numbers = ", ".join(str(i + 1) for i in blank[:_SHOWN_SKIPPED])
        more = ", ..." if len(blank) > _SHOWN_SKIPPED else ""
        plural = "s" if len(blank) > 1 else ""
        print(f"{PROG}: skipped {len(blank)} empty or whitespace-only text{plural}: {what}{plural} {numbers}{more}",
              file=sys.stderr)
    kept = set(blank)
    indexes = [i for i in range(len(texts)) if i not in kept]
    return [texts[i] for i in indexes], indexes


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
    from .progress import Progress

    manager = _manager(args.spec)
    name = _pick_name(manager, args.name)
    texts, indexes = _read_texts(args, sys.stdin)
    if not texts:
        raise InvalidInputError("no text given: pass TEXT arguments, --input FILE or lines on stdin")
    gen = manager.get(name)
    step = max(gen.batch_size, 256)
    # A short input shows nothing; a long one a bar on a terminal, log lines elsewhere (--log-every).
    show = args.progress if args.progress is not None else (None if len(texts) > step else False)
    progress = Progress(len(texts), show=show, every_s=args.log_every, unit="text", label="embed")
    out = sys.stdout
    try:
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            vectors = manager.encode(name, chunk, normalize=args.normalize, input_type=args.input_type)
            for index, text, vec in zip(indexes[start : start + step], chunk, vectors):
                if args.format == "summary":
                    norm = float((vec.astype("float64") ** 2).sum() ** 0.5)
                    first = ", ".join(f"{x:+.4f}" for x in vec[:5])
                    out.write(f"{name}: {text!r}\n  dims={vec.shape[0]} norm={norm:.4f} first=[{first}, ...]\n")
                else:
                    row: dict[str, Any] = {"index": index, "embedding": vec.tolist()}
                    if args.include_text:
                        row["text"] = text
                    out.write(json.dumps(row) + "\n")
            progress.update(len(chunk))
    finally:
        progress.close()
    return 0


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
    from pydantic import SecretStr

    from .redaction import remember_secret
    from .secrets import resolve_secret_ref
    from .server.config import ServerConfig, parse_api_keys
    from .server.runner import require_server_extra

    if not args.grpc and not args.http:
        raise InvalidInputError("serve needs --grpc HOST:PORT and/or --http HOST:PORT")
    if args.metrics_port is not None and not args.grpc:
        raise InvalidInputError("--metrics-port is for the gRPC server; the HTTP server answers /metrics itself")
    if not 0 < args.switch_interval <= 1000:  # nan fails this too
        raise InvalidInputError(f"--switch-interval must be milliseconds above 0 and at most 1000, got {args.switch_interval!r}")
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
    with queued_log(args.log_level):
        return _serve(args, config)


def _serve(args: argparse.Namespace, config: ServerConfig) -> int:
    import gc
    import logging

    # A record per request (the access log): none looks for its caller's frame, thread or process,
    # which this format does not show (the logging HOWTO's "Optimization"): ~8 us less per line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    from .server.runner import loop_factory, make_servers, run, run_servers

    loop_factory(args.loop)  # a loop that is not installed fails before the models load
    sys.setswitchinterval(args.switch_interval / 1000)  # this process serves: its threads are ours to pace
    manager = _manager(args.spec)
    servers = make_servers(manager, grpc=args.grpc, http=args.http, config=config)

    def ready(started: Sequence[Any]) -> None:
        # The models are loaded: what the process holds now lives as long as it does. Frozen, the cyclic
        # collector no longer walks it: a full collection took ~73 ms with the default spec on ONNX
        # Runtime (far more with torch), a stall of every thread in the middle of serving; with it
        # frozen, under 1 ms. (This process is ours: an application embedding the servers keeps its own.)
        gc.freeze()
        for s in started:
            metrics = getattr(s, "metrics_address", None)
            _say(f"{PROG}: serving {s.kind} on {s.address}")
            if metrics:
                _say(f"{PROG}: serving metrics on http://{metrics}/metrics")
            if args.json:  # for scripts that start a server on port 0 and need the one it bound
                row = {"event": "serving", "kind": s.kind, "address": s.address, "models": manager.names()}
                if metrics:
                    row["metrics"] = f"http://{metrics}/metrics"
                print(json.dumps(row), flush=True)

    try:
        run(run_servers(manager, servers, config=config, on_ready=ready), args.loop)
    finally:
        # Join the micro-batch workers: a daemon thread still in torch when the interpreter goes
        # aborts it. Their calls were cancelled at the end of the grace period: a forward pass at most.
        manager.close()
    # The process ends now. Left to the garbage collector, finalizing what torch and transformers
    # built takes seconds (2.5-4.5 s on a busy 2-core box); frozen, it needs no collection.
    gc.freeze()
    return 0


def _say(line: str) -> None:
    """A line on stderr in one write: ``serve``'s log thread cannot cut into it (``print`` writes twice)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    from pathlib import Path

    from .bulk.cli import add_bulk_parser, add_search_parser
    from .cli_common import add_log_flags, examples
    from .cli_validate import add_validate_parser
    from .server.config import (
        DEFAULT_GRACE_PERIOD_S,
        DEFAULT_MAX_CONCURRENCY,
        DEFAULT_MAX_HEADER_BYTES,
        DEFAULT_MAX_INPUTS,
        DEFAULT_MAX_REQUEST_BYTES,
        DEFAULT_READ_TIMEOUT_S,
        DEFAULT_SWITCH_INTERVAL_MS,
    )

    parser = _Parser(
        prog=PROG, description="Embeddings for AI agents from any backend, declared in a subject spec.",
        epilog=examples(
            'agent-embeddings embed --spec specs/default.json "What is AI?"  # one JSON line per text',
            "agent-embeddings validate --check specs/default.json  # does every item resolve here?",
            "agent-embeddings bulk --spec specs/default.json --input corpus.jsonl --output vectors/",
            "agent-embeddings serve --spec specs/default.json --http 127.0.0.1:8000",
        ) + f"\n\nEach command has its own options and examples: {PROG} COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "embed", help="embed TEXT arguments, a file's lines or stdin lines; JSON Lines on stdout",
        description="Embed texts with a spec's generator: TEXT arguments, the lines of --input FILE, or the lines "
                    "of stdin. One JSON line per text on stdout: its index (the line's, counting from 0) and "
                    "its embedding.",
        epilog=examples(
            'agent-embeddings embed --spec specs/default.json "What is AI?" "Hello"',
            'agent-embeddings embed --spec specs/default.json --format summary "Hello"  # dims, norm, first values',
            'agent-embeddings embed --spec specs/default.json --input-type query "how do agents embed?"',
            "agent-embeddings embed --spec specs/default.json --input texts.txt --include-text > vectors.jsonl",
            "agent-embeddings embed --spec specs/default.json --skip-empty --input texts.txt  # leave blank lines out",
        ),
    )
    p.add_argument("--spec", required=True, help="subject spec JSON file")
    p.add_argument("--name", help="generator name (needed when the spec has several)")
    p.add_argument("--format", choices=["jsonl", "summary"], default="jsonl",
                   help="jsonl (default): one JSON object per text; summary: dims, norm and first values, to read")
    p.add_argument("--include-text", action="store_true", help="add the text to each JSON line")
    p.add_argument("--input-type", choices=["query", "document"],
                   help="embed the texts as search queries or as documents (the spec's prompts for each)")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None,
                      help="unit-length vectors, whatever the spec says")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false",
                      help="raw vectors, whatever the spec says (default: the spec's normalize)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar even when stderr is not a terminal")
    prog.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bar and no progress lines")
    p.add_argument("--skip-empty", action="store_true",
                   help="leave out empty and whitespace-only lines, naming them on stderr (default: such a line is "
                        "an error naming it); the output index stays the line's")
    p.add_argument("--input", metavar="FILE", help="embed this UTF-8 file, one text per line ('-': stdin)")
    add_log_flags(p, "texts")
    p.add_argument("text", nargs="*", help="texts to embed (default: one per stdin line)")
    p.set_defaults(func=cmd_embed, long_job=True)

    add_validate_parser(sub)

    p = sub.add_parser(
        "backends", help="list installed backends and the plugins providing them",
        epilog=examples("agent-embeddings backends", "agent-embeddings backends --json"),
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("schema", help="print the subject spec JSON Schema",
                       epilog=examples("agent-embeddings schema > subject-spec.schema.json"))
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "serve", help="serve a spec's generators over gRPC (AIOS) and/or OpenAI-compatible HTTP",
        description="Serve a spec's generators: the OpenAI-compatible HTTP API (/v1/embeddings, /v1/models) and/or "
                    "the AIOS gRPC protocol. Flags are checked before any model loads; SIGTERM drains in-flight "
                    "requests for --grace-period seconds.",
        epilog=examples(
            "agent-embeddings serve --spec specs/default.json --http 127.0.0.1:8000",
            "agent-embeddings serve --spec specs/default.json --http 0.0.0.0:8000 --grpc 0.0.0.0:9000 "
            "--api-key-ref env:EMBEDDINGS_KEY",
            "agent-embeddings serve --spec specs/default.json --http 127.0.0.1:0 --json  # the bound port, as JSON",
        ),
    )
    p.add_argument("--spec", required=True, help="subject spec JSON file")
    p.add_argument("--grpc", metavar="HOST:PORT", help="serve the AIOS gRPC protocol here (port 0: any free port)")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the OpenAI-compatible HTTP API here (port 0: any free port)")
    p.add_argument("--api-key", action="append", help="accept this bearer key (repeatable; prefer --api-key-ref)")
    p.add_argument("--api-key-ref", action="append", help="accept the key in env:NAME or file:PATH (repeatable)")
    p.add_argument("--max-inputs", type=int, default=DEFAULT_MAX_INPUTS, metavar="N",
                   help=f"texts per request (default: {DEFAULT_MAX_INPUTS})")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                   help=f"the largest request body (HTTP 413) or message (gRPC) (default: {DEFAULT_MAX_REQUEST_BYTES})")
    p.add_argument("--max-input-chars", type=int, metavar="N",
                   help="refuse texts longer than N characters (HTTP 413, gRPC INVALID_ARGUMENT; default: no limit)")
    p.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, metavar="N",
                   help=f"requests at once; more are answered 429 / RESOURCE_EXHAUSTED (default: {DEFAULT_MAX_CONCURRENCY})")
    p.add_argument("--grace-period", type=float, default=DEFAULT_GRACE_PERIOD_S, metavar="SECONDS",
                   help=f"on SIGTERM, how long in-flight requests may finish (default: {DEFAULT_GRACE_PERIOD_S:g})")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="require client certificates signed by this CA")
    p.add_argument("--cors-origin", action="append", help="allow this origin (HTTP; CORS is off by default)")
    p.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES, metavar="N",
                   help="HTTP: the largest request head; beyond it 431")
    p.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT_S, metavar="SECONDS",
                   help="HTTP: close a connection whose request head, or next body chunk, takes longer")
    p.add_argument("--switch-interval", type=float, default=DEFAULT_SWITCH_INTERVAL_MS, metavar="MS",
                   help=f"the interpreter's thread switch interval while serving (default: {DEFAULT_SWITCH_INTERVAL_MS:g} ms; "
                        "Python's own is 5): how long a model thread back from a forward pass may wait for the GIL")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve the gRPC server's Prometheus metrics on this port (0: any free port); "
                        "the HTTP server answers /metrics itself")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="log level on stderr (default info: one access-log line per request)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="the event loop of both servers (default auto: uvloop when installed, else asyncio's)")
    p.add_argument("--json", action="store_true",
                   help="when serving, print one JSON line per server on stdout: kind, bound address, models")
    p.set_defaults(func=cmd_serve)

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
        if getattr(args, "long_job", False):
            with log_to_stderr(args.log_level):  # progress lines where there is no terminal (nohup, cron, CI)
                return int(args.func(args))
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
