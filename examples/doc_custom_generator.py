"""The client documentation's "Writing a Custom Embeddings Generator", with only the import
line changed (and ``_infer`` filled in, where the documentation says "your logic").

    python examples/doc_custom_generator.py
"""

import hashlib

from agent_embeddings.generator import AbstractEmbeddingGenerator, EmbeddingGeneratorManager

manager = EmbeddingGeneratorManager()


class MyCustomEmbeddings(AbstractEmbeddingGenerator):
    def __init__(self, dims=384, normalize=False):
        super().__init__()
        self.dims = dims
        self.normalize = normalize

    def generate(self, text: str):
        vec = self._infer(text)  # your logic
        return self._post(vec)

    def generate_batch(self, texts: list):
        return [self._post(self._infer(t)) for t in texts]

    def _infer(self, text):
        # return list[float] of length self.dims
        digest = hashlib.shake_256(text.encode()).digest(self.dims)
        return [b / 255.0 - 0.5 for b in digest]

    def _post(self, vec):
        if self.normalize:
            import math

            norm = math.sqrt(sum(x * x for x in vec)) or 1.0
            vec = [x / norm for x in vec]
        return vec


manager.register_generator("custom", MyCustomEmbeddings(dims=256, normalize=True))

v = manager.generate("custom", "What is AI?")
V = manager.generate_batch("custom", ["one", "two", "three"])
print(f"custom: dims={len(v)} norm={sum(x * x for x in v) ** 0.5:.4f} batch={len(V)}x{len(V[0])}")
