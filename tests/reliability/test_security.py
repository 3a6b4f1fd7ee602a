"""Nothing in the library can execute code from a data or model file: no pickle, no unchecked torch.load, no eval.

Every ``geodiff/**/*.py`` is parsed with :mod:`ast` (comments and strings cannot fool it, aliases are followed)
and every finding is reported as ``file:line``. The scanner is tested on small bad snippets first, so that a
pass means "nothing found", not "nothing looked for".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "geodiff"

#: modules whose loaders run code stored in the data
UNSAFE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"})
#: callables that read pickles unless told otherwise: name -> (keyword, the value that makes them safe)
GUARDED_CALLS = {"torch.load": ("weights_only", True), "numpy.load": ("allow_pickle", False)}
#: callables that always execute or unpickle
FORBIDDEN_CALLS = frozenset({"eval", "exec", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                             "torch.jit.load", "torch.package.PackageImporter", "numpy.lib.format.read_array"})
_CANONICAL = {"np": "numpy", "pd": "pandas"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = aliases.get(node.id, node.id)
    return ".".join([head, *reversed(parts)])


def scan(source: str, filename: str = "<snippet>") -> list[str]:
    """Findings ``file:line: what`` in one Python source."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = dict(_CANONICAL)
    findings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    findings.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if root in UNSAFE_MODULES:
                findings.append(f"{filename}:{node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = _dotted(node, aliases)
            if name and name.split(".")[0] in UNSAFE_MODULES:
                findings.append(f"{filename}:{node.lineno}: uses {name}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        name = ".".join(_CANONICAL.get(p, p) if i == 0 else p for i, p in enumerate(name.split(".")))
        if name in FORBIDDEN_CALLS or (name in ("builtins.eval", "builtins.exec")):
            findings.append(f"{filename}:{node.lineno}: calls {name}")
        if name in GUARDED_CALLS:
            keyword, safe = GUARDED_CALLS[name]
            given = {k.arg: k.value for k in node.keywords}
            value = given.get(keyword)
            default_safe = name == "numpy.load"  # numpy refuses pickles unless allow_pickle=True
            if value is None and not default_safe:
                findings.append(f"{filename}:{node.lineno}: calls {name} without {keyword}={safe}")
            elif value is not None and not (isinstance(value, ast.Constant) and value.value is safe):
                findings.append(f"{filename}:{node.lineno}: calls {name} with {keyword}={ast.unparse(value)}")
    return findings


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import pickle as p\np.loads(b'')",
        "from pickle import loads",
        "import _pickle",
        "import joblib",
        "import dill as d",
        "import torch\ntorch.load('x.pt')",
        "import torch as T\nT.load('x.pt', weights_only=False)",
        "from torch import load\nload('x.pt')",
        "import torch\nflag = True\ntorch.load('x.pt', weights_only=flag)",
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
        "import pandas as pd\npd.read_pickle('x')",
        "import yaml\nyaml.load(open('x'))",
        "eval('1 + 1')",
        "exec('x = 1')",
        "import builtins\nbuiltins.eval('1')",
    ],
)
def test_the_scanner_finds_each_unsafe_pattern(snippet: str) -> None:
    assert scan(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('x.pt', weights_only=True)",
        "model.eval()",
        "import numpy as np\nnp.load('x.npy')",
        "import yaml\nyaml.safe_load('a: 1')",
        "x = 'import pickle; torch.load(f)'  # a string and a comment: import pickle",
        "from safetensors.torch import load_file\nload_file('x')",
    ],
)
def test_the_scanner_accepts_safe_code(snippet: str) -> None:
    assert scan(snippet) == []


def test_the_library_loads_nothing_that_can_execute_code() -> None:
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 40  # the whole library, not an empty folder
    findings = [finding for path in files
                for finding in scan(path.read_text(encoding="utf-8"), str(path.relative_to(LIBRARY.parent)))]
    assert findings == [], "\n".join(findings)


def test_the_readme_states_the_security_policy() -> None:
    readme = (LIBRARY.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for phrase in ("never calls", "torch.load", "pickle", "Report"):
        assert phrase in section, phrase
