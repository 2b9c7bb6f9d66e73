"""The README's Python examples run, as one script, against the real local model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def python_blocks(readme: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_readme_python_examples_run(root: Path, tmp_path: Path):
    blocks = python_blocks((root / "README.md").read_text())
    assert len(blocks) >= 4
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(blocks))
    env = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=root, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
