"""The ```bash / ```console blocks of README.md and docs/*.md run their ``agent-embeddings``
lines through the real CLI, unless an HTML comment ``<!-- not run: reason -->`` stands right
before the block: skipping one is a visible decision, and any other command in an unmarked block
fails the test. (A module of its own: ``make test`` runs it beside tests/test_readme.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._docs_support import CHEAP_COMMANDS, ENV, PAGES, ROOT, blocks, page_id


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash", "console")], ids=page_id)
def test_shell_blocks_run_or_say_why_not(page: Path):
    for body, reason in blocks(page, "bash", "console"):
        if reason:
            continue
        for line in body.splitlines():
            command = line.removeprefix("$ ").split("  #")[0].strip()
            if not command or line.startswith("#"):
                continue
            assert command.startswith(CHEAP_COMMANDS), (
                f"{page_id(page)}: {command!r} does not run here; mark its block <!-- not run: reason -->"
            )
            result = subprocess.run(
                ["bash", "-c", command.replace("agent-embeddings", f"{sys.executable} -m agent_embeddings", 1)],
                cwd=ROOT, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300,
            )
            assert result.returncode == 0, f"{page_id(page)}: {command}\n{result.stderr[-2000:]}"
