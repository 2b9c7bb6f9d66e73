"""The scenarios. Each returns Rows comparing a candidate with a baseline measured in the same run."""

from __future__ import annotations

import subprocess
import sys

from collections.abc import Callable, Iterator
from pathlib import Path

from .data import short_sentences
from .harness import Row, compare

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = ROOT / "specs" / "default.json"


def _manager():
    from agent_embeddings import EmbeddingGeneratorManager

    manager = EmbeddingGeneratorManager.from_subject_spec(DEFAULT_SPEC)
    manager.warm_up()
    return manager


def core(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Manager + hf generator vs sentence-transformers' own encode, same model and batch size."""
    manager = _manager()
    gen = manager.get("hf")
    gen.batch_size = batch
    st = gen._model().model
    texts = short_sentences(n)
    st.encode(texts[:batch], batch_size=batch)  # warm both paths
    manager.encode("hf", texts[:batch])

    def baseline() -> object:
        return st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)

    for variant, fn in (
        ("manager.generate_batch (lists)", lambda: manager.generate_batch("hf", texts)),
        ("manager.encode (numpy)", lambda: manager.encode("hf", texts)),
    ):
        cand_s, base_s = compare(fn, baseline, repeat)
        yield Row("1 core", variant, "texts/s", n / cand_s, "st.encode", n / base_s, target=0.97)


def startup(n: int, batch: int, repeat: int) -> Iterator[Row]:
    """Wall time of `import agent_embeddings` and `agent-embeddings validate`, vs a bare interpreter."""

    def run(args: list[str]) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True)

    bare = run(["-c", "pass"])
    for variant, fn in (
        ("import agent_embeddings", run(["-c", "import agent_embeddings"])),
        ("validate specs/default.json", run(["-m", "agent_embeddings", "validate", str(DEFAULT_SPEC)])),
    ):
        cand_s, base_s = compare(fn, bare, max(repeat, 5))
        yield Row("7 startup", variant, "s", cand_s, "python -c pass", base_s, higher_is_better=False,
                  note=f"{variant}: {cand_s * 1000:.0f} ms wall (bare interpreter {base_s * 1000:.0f} ms)")


ALL: dict[str, Callable[..., Iterator[Row]]] = {
    "core": core,
    "startup": startup,
}

