"""Docs that cannot drift: the ``llm_parameters`` keys of docs/spec.md are the Params models', and
the README's layout names every module of the package and nothing else."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agent_embeddings"


def _script():
    spec = importlib.util.spec_from_file_location("generate_spec_keys", ROOT / "scripts" / "generate_spec_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_llm_parameters_keys_in_docs_spec_md_are_the_params_models():
    script = _script()
    text = script.SPEC_MD.read_text()
    assert text == script.updated(text), "docs/spec.md is out of date: run scripts/generate_spec_keys.py"
    from agent_embeddings.backends.huggingface import HuggingFaceParams

    section = text.split(script.BEGIN, 1)[1].split(script.END, 1)[0]
    for key in HuggingFaceParams.model_fields:  # every key of a built-in, common ones included
        assert f"| `{key}` |" in section, key
    assert "accepted keys for 'hf:': " + ", ".join(sorted(HuggingFaceParams.model_fields)) in text


def readme_layout() -> set[str]:
    """The modules (paths under agent_embeddings/) and subpackages (``dir/``) the README's layout names."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```text\nagent_embeddings/\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    folder = ""
    for line in block.splitlines():
        if not line.startswith(" "):  # another top-level folder (benchmarks/): the package's part ended
            break
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if indent == 2:
            folder = words[0] if words[0].endswith("/") else ""
            if folder:
                named.add(folder)
        named.update(folder + w for w in words if re.fullmatch(r"[\w]+\.py", w))
    return named


def test_the_readme_layout_names_every_module_of_the_package():
    modules = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "gen" not in p.relative_to(PACKAGE).parts
    }
    folders = {f"{p.relative_to(PACKAGE)}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    named = readme_layout()
    assert sorted((modules | folders) - named) == [], "modules missing from the README's layout (## Development)"
    assert sorted(named - modules - folders) == [], "the README's layout names modules that do not exist"
