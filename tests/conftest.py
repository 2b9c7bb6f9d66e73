"""Shared fixtures: the real local model (loaded once per session), paths, sentences, and the
thread that hosts the in-process gRPC servers. Shared fakes live in ``tests/fakes.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Never wait on the Hugging Face Hub; load no entry-point plugins unless a test asks for one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["AGENT_EMBEDDINGS_LOAD_PLUGINS"] = ""

from agent_embeddings import EmbeddingGeneratorManager

# The properties are about values, not speed: on a loaded 2-core CI box Hypothesis' default
# 200 ms per-example deadline would fail (or call "flaky") a correct example that ran slowly.
settings.register_profile("agent_embeddings", deadline=None)
settings.load_profile("agent_embeddings")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "A cheetah is running behind its prey.",
    "The cat sits outside.",
    "Agents need embeddings from many backends.",
    "Vectors stay numpy arrays inside the pipeline.",
    "gRPC carries packed float32 bytes.",
]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def default_spec() -> Path:
    return SPECS / "default.json"


@pytest.fixture(scope="session")
def hf_manager(default_spec: Path) -> Iterator[EmbeddingGeneratorManager]:
    """The default spec's manager with all-MiniLM-L6-v2 loaded (names: hf-minilm, hf)."""
    manager = EmbeddingGeneratorManager.from_subject_spec(default_spec)
    manager.warm_up()
    yield manager
    manager.close()


@pytest.fixture(scope="session")
def st_model():
    """all-MiniLM-L6-v2 in plain sentence-transformers (torch), the reference our vectors must equal
    (the default spec's ``backend: auto`` serves them through ONNX Runtime on a CPU)."""
    from sentence_transformers import SentenceTransformer

    from agent_embeddings.backends.local_models import resolve_model_path

    return SentenceTransformer(resolve_model_path(MINILM), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture
def usage_without_a_second_pass(monkeypatch: pytest.MonkeyPatch):
    """``check(gen, texts)``: an hf generator's usage counts, plain and with its query prompt, equal
    what its tokenizer counts (``count_tokens``), read from encode's own tokenization: the second
    tokenizer pass is made to fail."""
    def check(gen, texts: list[str]) -> None:
        expected = {kind: gen.count_tokens(texts, input_type=kind) for kind in (None, "query")}
        assert expected["query"] > expected[None] > len(texts) * gen._model().model.max_seq_length // 100

        def second_pass(*args, **kwargs):
            raise AssertionError("usage was counted with a second tokenizer pass")

        from agent_embeddings.backends.hf_model import LoadedModel

        monkeypatch.setattr(LoadedModel, "token_counts", second_pass)
        for kind in (None, "query"):
            assert gen.embed(texts, input_type=kind).prompt_tokens == expected[kind]

    return check


@pytest.fixture(scope="module")
def runner():
    """An event loop in a thread hosting real gRPC servers (``runner.grpc_server(manager)``)."""
    from ._grpc_support import ServerThread

    thread = ServerThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test session, shut down at its end."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def light_spec(tmp_path: Path):
    """``light_spec(base_url)``: a spec file whose one generator, ``remote`` (``openai:hf-minilm`` at
    ``base_url``, 384 dims), loads no model: ``serve`` is up in seconds, for CLI tests."""
    import json

    def make(base_url: str = "http://127.0.0.1:9/v1") -> Path:
        path = tmp_path / "light-spec.json"
        item = {"llm_type": "embeddings", "name": "remote", "llm_block_id": "openai:hf-minilm",
                "llm_parameters": {"base_url": base_url, "dims": 384}}
        path.write_text(json.dumps({"subject_id": "light", "models": [item]}))
        return path

    return make


#: The modules that take longest (``make test`` prints the 15 slowest tests), longest first, handed out first and
#: one to a worker: a worker takes a second module while its first has at most two tests to go, so
#: two of these must not be the first two modules of one worker. Only an order: a stale list slows
#: ``make test`` down, nothing more.
LONGEST = ["tests/test_readme.py", "tests/test_readme_shell.py", "tests/test_bulk_cluster.py", "tests/test_benchmarks.py",
           "tests/test_load.py", "tests/test_bulk_ray.py"]
#: The hang guard of a ``slow`` test: it shares the cores with the other workers' tests (the rest: 300 s)
SLOW_TIMEOUT_S = 900


def pytest_configure(config: pytest.Config) -> None:
    """Before the workers start (on the controller, or in a run without workers): the default
    spec's ONNX export, made once here (~10 s on a fresh machine, under a second when cached)
    rather than by the first of many test processes while the others wait on its lock."""
    if hasattr(config, "workerinput"):
        return
    from agent_embeddings import HuggingFaceEmbeddingGenerator
    from agent_embeddings._deps import ONNX_MODULES, installed
    from agent_embeddings.errors import ConfigurationError

    if installed(*ONNX_MODULES):
        gen = HuggingFaceEmbeddingGenerator(model_name=MINILM, backend="onnx")
        try:
            gen.warm_up()
        except (ConfigurationError, OSError):
            pass  # no packaged model, no writable cache: the tests that need them say so themselves
        finally:
            gen.close()


def pytest_itemcollected(item: pytest.Item) -> None:
    """A ``slow`` test's hang guard is ``SLOW_TIMEOUT_S`` unless it sets its own."""
    if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
        item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs ``pytest -n N --dist loadfile``: a module's tests run on one worker, so its
    module-scoped servers and clusters start once. On a worker, whose order is the order the
    modules are handed out (with ``--no-loadscope-reorder``): ``LONGEST`` first, then the modules
    holding a ``slow`` test, so none of them starts last. A run without workers keeps its order."""
    renamed = [name for name in LONGEST if not (ROOT / name).is_file()]
    if renamed:  # a renamed file would silently lose its head start
        raise pytest.UsageError(f"tests/conftest.py LONGEST names files that do not exist: {renamed}")
    if hasattr(config, "workerinput"):
        slow = {module(item) for item in items if item.get_closest_marker("slow") is not None}

        def rank(item: pytest.Item) -> tuple[int, int]:
            name = module(item)
            return (LONGEST.index(name) if name in LONGEST else len(LONGEST), name not in slow)

        items.sort(key=rank)  # stable: collection order otherwise


def module(item: pytest.Item) -> str:
    """What ``--dist loadfile`` hands out whole: the test's file."""
    return item.nodeid.split("::")[0]
