"""What the documentation tests share: the pages, their code blocks, the environment."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
BLOCK = re.compile(r"^(?:(<!-- not run: (?P<reason>.+?) -->)\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.S | re.M)
CHEAP_COMMANDS = ("agent-embeddings embed", "agent-embeddings validate", "agent-embeddings backends",
                  "agent-embeddings schema", "agent-embeddings bulk")


def blocks(page: Path, *langs: str) -> list[tuple[str, str | None]]:
    """``(body, not-run reason)`` of the page's blocks in the given languages."""
    return [(m["body"], m["reason"]) for m in BLOCK.finditer(page.read_text()) if m["lang"] in langs]


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))
