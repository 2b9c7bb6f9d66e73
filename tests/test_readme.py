"""Every code block of README.md and docs/*.md runs, and every relative link resolves.

- ```python blocks of a page run as one script (in order) against real `agent-embeddings
  serve` processes: the fixed ports the pages show (8080 HTTP, 9000 gRPC) are replaced by the
  real ephemeral ones, and an OpenAI-compatible server stands in for OpenAI.
- ```json blocks parse; a spec (``models``) goes through ``load_spec``, a model item is built
  (a SpecError fails the test; a ConfigurationError such as a missing key does not); a fragment
  of ``llm_parameters`` must parse once wrapped in braces. ```toml blocks parse.
- ```bash / ```console blocks run through the real CLI: tests/test_readme_shell.py.
- The documentation's own examples in examples/ run unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_embeddings import ConfigurationError, build_embeddings_from_model_item, load_spec
from agent_embeddings.server.process import ServeProcess

from ._docs_support import ENV, PAGES, ROOT, blocks, page_id


def test_readme_is_a_short_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make demo" in readme and "make test" in readme
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    assert linked == {page_id(p) for p in PAGES if p.parent.name == "docs" and p.name != "README.md"}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page: Path):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page_id(page)} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_json_and_toml_blocks_are_valid(page: Path):
    for body, _ in blocks(page, "json"):
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            data = json.loads("{" + body.strip().rstrip(",").replace("\n", ",\n") + "}")  # a fragment
        if isinstance(data, dict) and "models" in data:
            load_spec(data)
        elif isinstance(data, dict) and "llm_block_id" in data:
            try:
                build_embeddings_from_model_item(data)
            except ConfigurationError:
                pass  # valid, but needs what this machine lacks (a key, a server): not a doc error
    for body, _ in blocks(page, "toml"):
        tomllib.loads(body)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """The default spec over HTTP and gRPC, and a server answering as 'text-embedding-3-small'."""
    default = ServeProcess(ROOT / "specs" / "default.json", http="127.0.0.1:0", grpc="127.0.0.1:0", env=ENV)
    openai_like = ServeProcess(ROOT / "examples" / "openai-compatible.json", http="127.0.0.1:0", env=ENV)
    with default, openai_like:
        yield {
            "http": default.addresses["http"],
            "grpc": default.addresses["grpc"],
            "openai_base_url": f"http://{openai_like.addresses['http']}/v1",
        }


def run_python(args: list[str], servers: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    env.update(ENV, OPENAI_BASE_URL=servers["openai_base_url"], OPENAI_API_KEY="local-test-key", **extra)
    # a hang guard under the slow mark's 900 s: docs/bulk.md's blocks (a Ray job among them) took
    # 283 s under make test's workers on a box with 19-29% of its CPU stolen, and once hit 300 s
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_the_pages_have_python_examples():
    counts = {page_id(p): len(blocks(p, "python")) for p in PAGES}
    assert sum(counts.values()) >= 12 and counts["README.md"] >= 1 and counts["docs/frameworks.md"] >= 3
    servers_page = "\n".join(body for body, _ in blocks(ROOT / "docs" / "servers.md", "python"))
    assert "127.0.0.1:8080" in servers_page and "127.0.0.1:9000" in servers_page  # substituted below


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=page_id)
def test_python_blocks_run(page: Path, servers: dict[str, str], tmp_path: Path):
    script = "\n\n".join(body for body, _ in blocks(page, "python"))
    script = script.replace("127.0.0.1:8080", servers["http"]).replace("127.0.0.1:9000", servers["grpc"])
    path = tmp_path / f"{page.stem}_examples.py"
    path.write_text(script)
    result = run_python([str(path)], servers)
    assert result.returncode == 0, f"{page_id(page)}:\n{result.stderr[-3000:]}"


def test_benchmark_tables_are_rendered_from_the_results():
    result = subprocess.run([sys.executable, "-m", "benchmarks.render", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_example_doc_manager_runs_unchanged(servers: dict[str, str]):
    """The documentation's manager example: OpenAI via OPENAI_BASE_URL, its 'cuda' mapped to cpu."""
    result = run_python([str(ROOT / "examples" / "doc_manager.py")], servers, AGENT_EMBEDDINGS_DEVICE="cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "openai: 384 dims; hf-minilm: 2 x 384"


@pytest.mark.slow
def test_example_doc_factory_runs_unchanged(servers: dict[str, str]):
    result = run_python([str(ROOT / "examples" / "doc_factory.py")], servers)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("hf-minilm: 2 vectors of 384 dims; aios: AIOSEmbeddingGenerator(")
