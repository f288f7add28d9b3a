"""The rules of the house (DESIGN.md, The layers), read from the imports of every module.

Every `import` and `from ... import` of every module under src/careledger is parsed (with
`ast`, so imports inside functions count too) and checked against what its layer may import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

# layer -> the layers it may import (itself always). A top-level module (cli.py, demo.py)
# composes everything and may import anything.
ALLOWED: dict[str, frozenset[str]] = {
    "crypto": frozenset(),
    "chain": frozenset({"crypto"}),
    "protocol": frozenset({"crypto", "chain"}),
    "storage": frozenset({"crypto"}),
    "consensus": frozenset({"crypto", "chain"}),
    "node": frozenset({"crypto", "chain", "protocol", "storage", "consensus"}),
    "wallet": frozenset({"crypto", "chain", "protocol"}),
    "gateway": frozenset({"crypto", "chain", "protocol", "wallet"}),
    "web": frozenset({"crypto", "chain", "protocol", "wallet"}),
    "localnet": frozenset({"crypto", "chain", "protocol", "storage", "consensus", "node"}),
    # One organisation's node (design change 33): runs node, gateway and portal together.
    "consortium": frozenset(
        {"crypto", "chain", "protocol", "storage", "consensus", "node", "wallet", "web"}
    ),
}
# Chain modules whose state gateway and web must never touch, even though `chain` is allowed.
STATE_ACCESS = (
    "careledger.chain.store",
    "careledger.chain.state",
    "careledger.chain.app",
    "careledger.chain.rules",
    "careledger.chain.decoded",
    "careledger.chain.queries",
    "careledger.chain.answers",
)
CHAIN_MODULES = "careledger.chain.modules"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every project module `path` imports, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import name` imports the module pkg.name if there is one, else pkg.
            targets = [_submodule_or_package(root, base, alias.name) for alias in node.names]
        else:
            continue
        found += [Import(name, t, node.lineno) for t in targets if t.startswith("careledger.")]
    return found


def _submodule_or_package(root: Path, package: str, name: str) -> str:
    path = root.joinpath(*package.split("."), name)
    is_module = path.with_suffix(".py").exists() or path.is_dir()
    return f"{package}.{name}" if is_module or package == "careledger" else package


def all_imports(root: Path) -> list[Import]:
    return [i for path in sorted(root.rglob("*.py")) for i in imports_of(path, root)]


def layer_of(module: str) -> str | None:
    """`careledger.<layer>...`; None for a top-level module (cli, demo) or the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def violations(imports: list[Import]) -> list[str]:
    found = []
    for imp in imports:
        rule = _broken_rule(imp)
        if rule:
            found.append(f"{imp.importer} (line {imp.line}) imports {imp.imported}: {rule}")
    return sorted(set(found))


def _broken_rule(imp: Import) -> str:
    mine, theirs = layer_of(imp.importer), layer_of(imp.imported)
    if mine is None or theirs is None or mine == theirs:
        return _module_rule(imp)
    if mine not in ALLOWED:
        return f"{mine} is not a layer of DESIGN.md"
    if theirs not in ALLOWED[mine]:
        return f"{mine} may import only {sorted(ALLOWED[mine]) or 'nothing of the project'}"
    if mine in ("gateway", "web") and imp.imported.startswith(STATE_ACCESS):
        return f"{mine} goes through the node API, never the state store or state machine"
    return ""


def _module_rule(imp: Import) -> str:
    """A chain module reaches another only through what its package exports (its keeper,
    its events), never its internals (handler, raw keys)."""
    prefix = CHAIN_MODULES + "."
    if not (imp.importer.startswith(prefix) and imp.imported.startswith(prefix)):
        return ""
    mine = imp.importer.removeprefix(prefix).split(".")[0]
    theirs = imp.imported.removeprefix(prefix).split(".")
    if theirs[0] == mine or theirs[0] == "base" or len(theirs) == 1:
        return ""
    return f"chain module {mine} reaches into {theirs[0]}: use careledger.chain.modules.{theirs[0]}"


def test_every_module_keeps_to_its_layer() -> None:
    imports = all_imports(SOURCE)
    importers = {i.importer for i in imports}
    assert len(importers) > 50  # the walk found the package, not an empty directory
    assert {"crypto", "chain", "consensus", "node", "wallet", "protocol", "localnet"} <= {
        layer_of(m) for m in importers
    }
    assert violations(imports) == []


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("careledger/crypto/x.py", "from careledger.chain import tx", "crypto may import only"),
        ("careledger/chain/x.py", "import careledger.storage.blobstore", "chain may import only"),
        ("careledger/consensus/x.py", "from careledger.node.api import x", "consensus may"),
        ("careledger/consensus/x.py", "from careledger import storage", "consensus may"),
        ("careledger/protocol/x.py", "from careledger.storage import blobstore", "protocol may"),
        ("careledger/wallet/x.py", "from careledger.node import blobs", "wallet may"),
        ("careledger/node/x.py", "from careledger.wallet.records import x", "node may"),
        ("careledger/node/x.py", "from careledger.localnet import network", "node may"),
        ("careledger/gateway/x.py", "from careledger.chain.store import S", "node API"),
        ("careledger/consensus/a/x.py", "from ...node import api", "consensus may"),
        ("careledger/consensus/x.py", "def f():\n    from careledger.node import api", "may"),
        (
            "careledger/chain/modules/records/x.py",
            "from careledger.chain.modules.identity.keeper import K",
            "reaches into identity",
        ),
    ],
)
def test_the_checker_catches_a_crossing(tmp_path: Path, path: str, source: str, rule: str) -> None:
    """The rules can fail: each crossing, planted in a module of its own, is reported."""
    module = tmp_path / path
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(source + "\n")
    found = violations(all_imports(tmp_path))
    assert len(found) == 1 and rule in found[0], found


def test_allowed_imports_pass_the_checker(tmp_path: Path) -> None:
    allowed = {
        "careledger/node/x.py": "from careledger.consensus.driver import D\nfrom . import api",
        "careledger/chain/modules/records/x.py": "from careledger.chain.modules.identity import K",
        "careledger/cli.py": "from careledger.localnet.cli import net_app",
        "careledger/wallet/x.py": "from careledger.protocol.frames import pack_frames",
    }
    for path, source in allowed.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source + "\n")
    assert violations(all_imports(tmp_path)) == []
