"""Quick start: load a subject spec and embed with the local default model.

    python examples/quickstart.py
"""

from pathlib import Path

import numpy as np

from agent_embeddings import EmbeddingGeneratorManager

spec = Path(__file__).resolve().parent.parent / "specs" / "default.json"
manager = EmbeddingGeneratorManager.from_subject_spec(spec)

vec = manager.generate("hf", "What is AI?")  # list[float], unit length
vecs = manager.encode("hf-minilm", ["A man is eating food.", "A man is eating a piece of bread."])  # numpy
print(f"dims={len(vec)}  cosine(food, bread)={float(np.dot(vecs[0], vecs[1])):.3f}")
for info in manager.list_generators():
    print(f"{info.name}: {info.provider} {info.model} dims={info.dims} aliases={list(info.aliases)}")
