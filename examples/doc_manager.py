"""The client documentation's EmbeddingGeneratorManager example, with only the import line
changed.

It talks to OpenAI and asks for a CUDA device, as the documentation does. To run it without
either, point the official client at any OpenAI-compatible server and map the device:

    agent-embeddings serve --spec examples/openai-compatible.json --http 127.0.0.1:8000 &
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=local AGENT_EMBEDDINGS_DEVICE=cpu \
        python examples/doc_manager.py
"""

from agent_embeddings.generator import EmbeddingGeneratorManager, build_embeddings_from_model_item

manager = EmbeddingGeneratorManager()

openai_item = {
    "llm_type": "embeddings",
    "llm_block_id": "openai:text-embedding-3-small",
    "llm_parameters": {"model": "text-embedding-3-small", "normalize": True}
}
hf_item = {
    "llm_type": "embeddings",
    "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2",
    "llm_parameters": {"device": "cuda", "batch_size": 64, "normalize": True}
}

openai_gen = build_embeddings_from_model_item(openai_item)
hf_gen = build_embeddings_from_model_item(hf_item)

manager.register_generator("openai", openai_gen)
manager.register_generator("hf-minilm", hf_gen)

# Single
vec = manager.generate("openai", "What is AI?")
# Batch
vecs = manager.generate_batch("hf-minilm", ["Hello", "World"])

print(f"openai: {len(vec)} dims; hf-minilm: {len(vecs)} x {len(vecs[0])}")
