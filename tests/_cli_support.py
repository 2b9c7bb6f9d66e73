"""What the CLI tests share: every parser of ``agent-embeddings``, by its command path."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


def parsers(parser: argparse.ArgumentParser, path: str = "agent-embeddings") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("agent-embeddings bulk verify", its parser)`` for the parser and each sub-command, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")
