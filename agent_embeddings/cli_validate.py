"""``agent-embeddings validate``: a spec's shape, and with ``--check`` whether each item resolves here.

Without ``--check`` nothing is reached and no model is loaded: the spec must be valid (a
:class:`SpecError` fails it), and what this machine lacks to use it (a key that is not set, a
:class:`ConfigurationError`) is a warning, so a spec that names ``OPENAI_API_KEY`` validates
anywhere; a secret that is there but wrong (:class:`UnusableSecretError`) fails it. ``--check`` is the strict one: every item must resolve now (local weights found, the
endpoint answering with the model, the key accepted), one line per item, exit status 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_common import PROG, examples
from .errors import AgentEmbeddingsError, ConfigurationError, UnusableSecretError

__all__ = ["add_validate_parser", "cmd_validate"]


def _validate_file(path: str, *, check: bool, timeout_s: float) -> dict[str, Any]:
    """One spec file's report: ``ok``, ``error``, ``generators`` (each with a ``status``), ``skipped``."""
    from .manager import EmbeddingGeneratorManager
    from .specs import skipped_items

    unbuilt: dict[str, ConfigurationError] = {}
    report: dict[str, Any] = {"file": path, "ok": False, "error": None, "generators": [], "skipped": []}
    try:
        manager = EmbeddingGeneratorManager.from_subject_spec(path, on_config_error=unbuilt.__setitem__)
    except AgentEmbeddingsError as exc:  # the spec itself is wrong: nothing else to say about it
        report["error"] = str(exc)
        return report
    spec = manager.spec
    assert spec is not None
    report["skipped"] = [why for why, _ in skipped_items(spec)]
    built = {info.name: info for info in manager.list_generators()}
    failed = 0
    for index, item in spec.embedding_items:
        canonical = item.name or item.llm_block_id  # as the manager names it (a shared block id needs a name)
        info = built.get(canonical)
        row: dict[str, Any] = {
            "name": canonical, "aliases": list(info.aliases) if info else [], "item": f"models[{index}]",
            "provider": info.provider if info else item.prefix, "model": info.model if info else item.model,
        }
        where = f"{path}: models[{index}] ({item.llm_block_id!r}): "  # how build errors name the item
        if canonical in unbuilt:
            # Cannot be built here (a key not set...): a warning, unless every item must resolve now.
            # A secret that is there but wrong (a two-line key file) is wrong anywhere: it fails.
            error = unbuilt[canonical]
            row.update(status="failed" if check or isinstance(error, UnusableSecretError) else "unresolved",
                       detail=str(error).removeprefix(where))
        elif check:
            try:
                row.update(status="ok", detail=manager.get(canonical).check(timeout_s))
            except AgentEmbeddingsError as exc:
                row.update(status="failed", detail=str(exc))
        else:
            row["status"] = "valid"
        failed += row["status"] == "failed"
        report["generators"].append(row)
    manager.close()
    report["ok"] = failed == 0
    return report


def _print_report(report: dict[str, Any], check: bool) -> None:
    """The report for a person: the file's verdict and one line per generator on stdout, warnings
    and a spec error on stderr, each redacted (an item's line may quote an endpoint or a library)."""
    from .redaction import redact

    def say(text: str, stream: Any = None) -> None:
        print(redact(text), file=stream or sys.stdout)

    path = report["file"]
    if report["error"] is not None:
        say(f"{PROG}: error: {report['error']}", sys.stderr)
        return
    rows = report["generators"]
    counts = f"{len(rows)} embedding generator(s), {len(report['skipped'])} other item(s)"
    failed = sum(r["status"] == "failed" for r in rows)
    say(f"{path}: {f'{failed} of {len(rows)} failed' if failed else 'ok'} ({counts})")
    for r in rows:
        aliases = f" (also: {', '.join(r['aliases'])})" if r["aliases"] else ""
        what = f"{r['name']}{aliases}: {r['provider']} {r['model']}"
        if check:
            say(f"  {'ok' if r['status'] == 'ok' else 'FAIL':<4}  {what}: {r['detail']}")
            continue
        say(f"  {what}")
        if r["status"] == "failed":
            say(f"{PROG}: error: {path}: {r['item']} ({r['name']}): {r['detail']}", sys.stderr)
        elif r["status"] == "unresolved":
            say(f"{PROG}: warning: {path}: {r['item']} ({r['name']}): not resolved here: {r['detail']} "
                "(validate --check fails on it)", sys.stderr)
    for why in report["skipped"]:
        say(f"  skipped {why}")


def cmd_validate(args: argparse.Namespace) -> int:
    from .redaction import redact

    failed = 0
    for path in args.files:
        report = _validate_file(path, check=args.check, timeout_s=args.timeout)
        failed += not report["ok"]
        if args.json:
            print(redact(json.dumps(report)))
        else:
            _print_report(report, args.check)
    return 1 if failed else 0


def add_validate_parser(sub: Any) -> None:
    """Add ``validate`` to the CLI's sub-commands."""
    p = sub.add_parser(
        "validate", help="check subject spec files; --check: that every item resolves here",
        description="Check subject spec files. Without --check: the spec's shape, every generator built, no "
                    "model loaded, nothing reached; what this machine lacks (a key that is not set) is a warning. "
                    "With --check: every item must resolve here (local model files found, the endpoint answering "
                    "with the model, the key accepted), one line per item; exit status 1 if any fails.",
        epilog=examples(
            "agent-embeddings validate specs/default.json specs/agent-rag.json  # shape only; loads no model",
            "agent-embeddings validate --check specs/default.json  # every item resolves here (no embedding)",
            "agent-embeddings validate --json specs/default.json  # one JSON object per file, for scripts",
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="subject spec JSON files")
    p.add_argument("--check", action="store_true",
                   help="resolve every item without embedding: hf: model files found and device present; openai: "
                        "GET /models answers with the model and accepts the key; aios: Info serves the model")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --check: how long an endpoint may take to answer (default: 10)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per file: ok, error, generators (name, item, status, detail), skipped")
    p.set_defaults(func=cmd_validate)
