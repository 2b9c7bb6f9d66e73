"""The README's Python examples and the documentation examples in examples/ run for real.

The README's server examples use fixed ports (8080 HTTP, 9000 gRPC); here they run against
real `agent-embeddings serve` processes on ephemeral ports, substituted into the code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_embeddings.server.process import ServeProcess

pytestmark = pytest.mark.slow
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def python_blocks(readme: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)


@pytest.fixture(scope="module")
def servers(root: Path) -> Iterator[dict[str, str]]:
    """The default spec over HTTP and gRPC, and a server answering as 'text-embedding-3-small'."""
    default = ServeProcess(root / "specs" / "default.json", http="127.0.0.1:0", grpc="127.0.0.1:0", env=ENV)
    openai_like = ServeProcess(root / "examples" / "openai-compatible.json", http="127.0.0.1:0", env=ENV)
    with default, openai_like:
        yield {
            "http": default.addresses["http"],
            "grpc": default.addresses["grpc"],
            "openai_base_url": f"http://{openai_like.addresses['http']}/v1",
        }


def run_python(args: list[str], root: Path, servers: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    env.update(ENV, OPENAI_BASE_URL=servers["openai_base_url"], OPENAI_API_KEY="local-test-key", **extra)
    return subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, env=env, timeout=300)


def test_readme_python_examples_run(root: Path, servers: dict[str, str], tmp_path: Path):
    blocks = python_blocks((root / "README.md").read_text())
    assert len(blocks) >= 7
    script = "\n\n".join(blocks)
    assert "127.0.0.1:8080" in script and "127.0.0.1:9000" in script
    script = script.replace("127.0.0.1:8080", servers["http"]).replace("127.0.0.1:9000", servers["grpc"])
    path = tmp_path / "readme_examples.py"
    path.write_text(script)
    result = run_python([str(path)], root, servers)
    assert result.returncode == 0, result.stderr[-3000:]


def test_example_doc_manager_runs_unchanged(root: Path, servers: dict[str, str]):
    """The documentation's manager example: OpenAI via OPENAI_BASE_URL, its 'cuda' mapped to cpu."""
    result = run_python([str(root / "examples" / "doc_manager.py")], root, servers, AGENT_EMBEDDINGS_DEVICE="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "openai: 384 dims; hf-minilm: 2 x 384"


def test_example_doc_factory_runs_unchanged(root: Path, servers: dict[str, str]):
    result = run_python([str(root / "examples" / "doc_factory.py")], root, servers)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("hf-minilm: 2 vectors of 384 dims; aios: AIOSEmbeddings(")
