"""The client documentation's "Building a Generator from a ModelItem", with only the import
line changed. ``build_embeddings_from_model_item`` is also provided by the package (through
plugins, without this if-chain); this script shows the documented code runs as written.

    python examples/doc_factory.py
"""

from agent_embeddings.generator import (
    AbstractEmbeddingGenerator,
    AIOSEmbeddings,
    EmbeddingGeneratorManager,
    HuggingFaceEmbeddingGenerator,
    OpenAIEmbeddingGenerator,
)


def build_embeddings_from_model_item(item: dict) -> AbstractEmbeddingGenerator:
    block_id = item["llm_block_id"]
    params = item.get("llm_parameters", {})
    if block_id.startswith("openai:"):
        return OpenAIEmbeddingGenerator(
            api_key=params.get("api_key") or params.get("api_key_ref"),
            model=params.get("model", "text-embedding-3-small"),
            normalize=params.get("normalize", True),
        )
    if block_id.startswith("hf:"):
        return HuggingFaceEmbeddingGenerator(
            model_name=block_id.split("hf:", 1)[1],
            device=params.get("device", "cpu"),
            batch_size=params.get("batch_size", 32),
            normalize=params.get("normalize", True),
        )
    if block_id.startswith("aios:"):
        return AIOSEmbeddings(
            grpc_url=params["grpc_url"],
            dims=params.get("dims", 768),
            timeout_s=params.get("timeout_s", 15),
            normalize=params.get("normalize", True),
        )
    raise NotImplementedError(f"Unknown embeddings backend for {block_id}")


hf_gen = build_embeddings_from_model_item(
    {
        "llm_type": "embeddings",
        "llm_block_id": "hf:sentence-transformers/all-MiniLM-L6-v2",
        "llm_parameters": {"device": "cpu", "batch_size": 64, "normalize": True},
    }
)
aios_gen = build_embeddings_from_model_item(
    {
        "llm_type": "embeddings",
        "llm_block_id": "aios:embeddings-prod",
        "llm_parameters": {"grpc_url": "dns:///embeddings.aio.svc.cluster.local:9000", "timeout_s": 20, "dims": 768},
    }
)
manager = EmbeddingGeneratorManager()
manager.register_generator("hf-minilm", hf_gen)
manager.register_generator("aios", aios_gen)  # built without connecting: channels open on first use
vecs = manager.generate_batch("hf-minilm", ["Hello", "World"])
print(f"hf-minilm: {len(vecs)} vectors of {len(vecs[0])} dims; aios: {aios_gen!r}")
