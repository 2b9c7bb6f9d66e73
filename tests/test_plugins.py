"""Plugins: the hooks, duplicate prefixes, misspelt hooks, and a real entry-point package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pydantic import model_validator

from agent_embeddings import (
    AbstractEmbeddingGenerator,
    GeneratorParams,
    PluginError,
    build_embeddings_from_model_item,
    hookimpl,
    hookspecs,
)
from agent_embeddings.plugins import get_backends, pm, register_plugin, unregister_plugin

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


class Ones(AbstractEmbeddingGenerator):
    provider = "ones"

    def _embed_batch(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


class OnesPlugin:
    @hookimpl
    def register_embedding_backends(self, register):
        register("ones", Ones.from_model_item)


def test_hook_register_embedding_backends():
    plugin = OnesPlugin()
    register_plugin(plugin, name="ones-plugin")
    try:
        info = get_backends()["ones"]
        assert (info.plugin, info.factory_name) == ("ones-plugin", "tests.test_plugins.Ones.from_model_item")
        gen = build_embeddings_from_model_item({"llm_type": "embeddings", "llm_block_id": "ones:x"})
        assert isinstance(gen, Ones) and gen.model == "x"
        assert gen.generate("hello") == pytest.approx([3**-0.5] * 3)  # GeneratorParams: normalize=True
    finally:
        unregister_plugin(plugin)
    assert "ones" not in get_backends()


def test_two_plugins_claiming_one_prefix_name_both():
    class ClaimsHF:
        @hookimpl
        def register_embedding_backends(self, register):
            register("hf", Ones.from_model_item)

    plugin = ClaimsHF()
    register_plugin(plugin, name="impostor")
    try:
        with pytest.raises(PluginError) as info:
            get_backends()
        assert "'hf' is registered by two plugins: 'agent_embeddings.backends.huggingface' and 'impostor'" in str(
            info.value
        )
    finally:
        unregister_plugin(plugin)
    assert get_backends()["hf"].plugin == "agent_embeddings.backends.huggingface"


def test_misspelt_hook_is_caught():
    class Misspelt:
        @hookimpl
        def register_embeding_backends(self, register):  # one "d" short
            register("x", Ones.from_model_item)

    with pytest.raises(PluginError, match=r"register_embeding_backends"):
        register_plugin(Misspelt(), name="misspelt")
    assert pm.get_plugin("misspelt") is None


def test_hook_resolve_model_item(hf_manager):
    """A resolver picks a concrete deployment from llm_selection_query."""

    class RegionRouter:
        @hookimpl
        def resolve_model_item(self, item):
            if item.llm_block_id != "hf:regional-default":
                return None
            region = item.llm_selection_query.get("region")
            model = {"eu": MINILM}.get(region)
            if model is None:
                return None
            return item.model_copy(update={"llm_block_id": f"hf:{model}"})

    router = RegionRouter()
    register_plugin(router, name="region-router")
    try:
        gen = build_embeddings_from_model_item(
            {"llm_type": "embeddings", "llm_block_id": "hf:regional-default", "llm_selection_query": {"region": "eu"}}
        )
        assert gen.model == MINILM
        np.testing.assert_allclose(gen.generate("hello"), hf_manager.generate("hf", "hello"), atol=1e-5)
        untouched = build_embeddings_from_model_item(
            {"llm_type": "embeddings", "llm_block_id": "hf:regional-default", "llm_selection_query": {"region": "us"}}
        )
        assert untouched.model == "regional-default"
    finally:
        unregister_plugin(router)


def test_every_hook_has_a_test_and_a_docstring(root: Path):
    """Like datasette's meta-test: a hook without a test_hook_<name> or a docstring fails."""
    hook_names = [n for n in dir(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec()]
    assert set(hook_names) >= {"register_embedding_backends", "resolve_model_item", "resolve_local_model"}
    test_names = set()
    for path in (root / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                test_names.add(node.name)
    for name in hook_names:
        assert f"test_hook_{name}" in test_names, f"hook {name} has no test_hook_{name}"
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"


# -- a real third-party package with a real entry point ------------------------------------
@pytest.fixture(scope="module")
def acme_site(root: Path, tmp_path_factory) -> Path:
    """examples/acme-embeddings installed (with its entry point) into a private folder."""
    target = tmp_path_factory.mktemp("acme-site")
    build = tmp_path_factory.mktemp("acme-build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(root / "examples" / "acme-embeddings")],
        check=True,
        cwd=build,
        capture_output=True,
    )
    assert list(target.glob("acme_embeddings-1.0.0.dist-info/entry_points.txt"))
    return target


def run_with(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "AGENT_EMBEDDINGS_LOAD_PLUGINS"}
    environ.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)


def test_installed_plugin_package_works_through_its_entry_point(acme_site: Path, tmp_path: Path):
    spec = tmp_path / "acme.json"
    spec.write_text(json.dumps({
        "subject_id": "acme-agent",
        "models": [{"llm_type": "embeddings", "llm_block_id": "acme:hash-128", "llm_parameters": {"seed": 7}}],
    }))
    code = f"""
import json, sys
from agent_embeddings import EmbeddingGeneratorManager
m = EmbeddingGeneratorManager.from_subject_spec({str(spec)!r})
v = m.encode("acme", ["the cat sat", "the cat sat", "a dog ran"])
print(json.dumps({{"names": m.names(), "type": type(m.get("acme")).__module__, "dims": v.shape[1],
                  "same": bool((v[0] == v[1]).all()), "differs": bool((v[0] != v[2]).any()),
                  "torch": "torch" in sys.modules}}))
"""
    result = run_with(acme_site, code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {"names": ["acme:hash-128"], "type": "acme_embeddings", "dims": 128, "same": True,
                   "differs": True, "torch": False}


def test_backends_command_names_the_providing_distribution(acme_site: Path):
    code = "from agent_embeddings.cli import main; raise SystemExit(main(['backends', '--json']))"
    rows = {r["prefix"]: r for r in json.loads(run_with(acme_site, code).stdout)}
    assert rows["acme"] == {"prefix": "acme", "factory": "acme_embeddings.AcmeEmbeddings.from_model_item",
                            "distribution": "acme-embeddings", "version": "1.0.0"}
    assert rows["hf"]["distribution"] == "agent-embeddings"


def test_plugin_allow_list_can_exclude_entry_points(acme_site: Path):
    code = "from agent_embeddings.plugins import get_backends; print(sorted(get_backends()))"
    assert "acme" not in run_with(acme_site, code, AGENT_EMBEDDINGS_LOAD_PLUGINS="").stdout
    assert "acme" in run_with(acme_site, code, AGENT_EMBEDDINGS_LOAD_PLUGINS="acme").stdout


class _CountedParams(GeneratorParams):
    """A backend's own parameter, and a count of how often the parameters were validated."""

    seed: int = 0
    validations: ClassVar[int] = 0

    @model_validator(mode="after")
    def _count(self) -> _CountedParams:
        type(self).validations += 1
        return self


class Seeded(AbstractEmbeddingGenerator):
    """A whole backend: its Params and one method (the base builds it from a spec item)."""

    provider = "seeded"
    Params = _CountedParams
    params: _CountedParams

    def _embed_batch(self, texts):
        return np.full((len(texts), 2), float(self.params.seed), dtype=np.float32)


class SeededPlugin:
    @hookimpl
    def register_embedding_backends(self, register):
        register("seeded", Seeded.from_model_item)


def test_a_backend_is_params_and_one_method_and_params_are_validated_once():
    plugin = SeededPlugin()
    register_plugin(plugin, name="seeded-plugin")
    try:
        _CountedParams.validations = 0
        gen = build_embeddings_from_model_item({
            "llm_type": "embeddings", "llm_block_id": "seeded:x",
            "llm_parameters": {"seed": 3, "normalize": False, "retry": {"attempts": 2}, "cache": {"kind": "memory"}},
        })
        assert _CountedParams.validations == 1  # passed whole to the generator, never re-validated
        assert gen.params.seed == 3 and gen.retry.attempts == 2 and gen.cache is not None
        assert gen.generate("hello") == [3.0, 3.0]
        direct = Seeded(params=_CountedParams(seed=5), model="x")  # the same from code
        assert direct.generate("hi") == pytest.approx([2**-0.5] * 2)  # GeneratorParams: normalize=True
    finally:
        unregister_plugin(plugin)
