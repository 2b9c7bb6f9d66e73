"""The public surface: documented import paths, light imports, runnable examples."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent_embeddings
from agent_embeddings.backends import PUBLIC_CLASSES

# The backends' classes come from the one registry (old names such as AIOSEmbeddings included).
DOCUMENTED = ["AbstractEmbeddingGenerator", *PUBLIC_CLASSES, "EmbeddingGeneratorManager", "build_embeddings_from_model_item"]
HEAVY = ["torch", "sentence_transformers", "grpc", "openai", "fastapi", "uvicorn", "tiktoken", "transformers"]


def test_import_is_light():
    code = f"import sys, agent_embeddings; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_names_import_from_both_paths(name: str):
    from agent_embeddings import generator

    assert getattr(agent_embeddings, name) is getattr(generator, name)
    assert name in agent_embeddings.__all__ and name in generator.__all__


def test_all_names_exist():
    for name in agent_embeddings.__all__:
        assert getattr(agent_embeddings, name) is not None
    with pytest.raises(AttributeError):
        agent_embeddings.NoSuchThing  # noqa: B018


def test_py_typed_is_shipped(root: Path):
    assert (root / "agent_embeddings" / "py.typed").exists()


def _imported_test_modules(source: str, test_modules: set[str]) -> set[str]:
    """The ``tests/test_*`` modules that ``source`` (a module in tests/) imports, in any import form."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("tests." + (node.module or "")).rstrip(".") if node.level else (node.module or "")
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "tests":
            parts = parts[1:]
        if parts and parts[0] in test_modules:
            found.add(parts[0])
    return found


def test_no_test_module_imports_another(root: Path):
    """Shared fakes and helpers live in conftest.py, fakes.py and the tests/_*.py modules, never in a test module."""
    tests = root / "tests"
    test_modules = {path.stem for path in tests.glob("test_*.py")}
    assert len(test_modules) > 10 and "test_generator" in test_modules
    for form in ("from tests.test_generator import CharStats", "from .test_generator import CharStats",
                 "from . import test_generator", "import tests.test_generator", "from tests import test_generator"):
        assert _imported_test_modules(form, test_modules) == {"test_generator"}, form  # the check can fail
    assert not _imported_test_modules("from .fakes import CharStats\nfrom tests import conftest", test_modules)
    offenders = {
        f"{path.name} imports {', '.join(sorted(found))}"
        for path in sorted(tests.glob("test_*.py"))
        if (found := _imported_test_modules(path.read_text(encoding="utf-8"), test_modules) - {path.stem})
    }
    assert not offenders, sorted(offenders)


def run_example(root: Path, name: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, str(root / "examples" / name)], capture_output=True, text=True, env=environ, timeout=180
    )


@pytest.mark.slow
def test_example_quickstart(root: Path):
    result = run_example(root, "quickstart.py")
    assert result.returncode == 0, result.stderr
    assert "dims=384  cosine(food, bread)=0.755" in result.stdout


def test_example_doc_custom_generator(root: Path):
    result = run_example(root, "doc_custom_generator.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "custom: dims=256 norm=1.0000 batch=3x256"


@pytest.mark.slow
def test_the_wheel_and_sdist_carry_one_version_the_package_and_its_command(root: Path, tmp_path: Path):
    """What `make dist-check` installs in a fresh venv (there with pip and the index, minutes; here
    offline, seconds): the metadata's version is pyproject's, the command is declared, twine accepts
    both files. The version is read from the installed metadata (agent_embeddings/version.py)."""
    import tomllib
    import zipfile

    build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(root)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    wheel = tmp_path / f"agent_embeddings-{version}-py3-none-any.whl"
    sdist = tmp_path / f"agent_embeddings-{version}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in tmp_path.iterdir())
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"agent_embeddings-{version}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {version}\n" in metadata and "\nName: agent-embeddings\n" in metadata
    assert "Provides-Extra: hf" in metadata and "Provides-Extra: minilm" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "agent-embeddings = agent_embeddings.cli:main" in entry_points
    assert {"agent_embeddings/py.typed", "agent_embeddings/cli_validate.py", "agent_embeddings/progress.py",
            "agent_embeddings/protocol/gen/aios/embeddings/v1/embeddings_pb2.py"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                           capture_output=True, text=True, timeout=120)
    assert twine.returncode == 0 and twine.stdout.count("PASSED") == 2, twine.stdout + twine.stderr
