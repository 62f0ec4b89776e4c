"""docs/hooks.md is generated from core/hookspecs.py: it is up to date, names every hook with its
exact signature, and every Python block in it runs."""

import inspect
from pathlib import Path

from mamba4net.core import hookspecs
from mamba4net.registry import hookdoc

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_hooks_doc_is_up_to_date():
    assert DOC.read_text() == hookdoc.render(), (
        "docs/hooks.md is out of date: python -m mamba4net.registry.hookdoc > docs/hooks.md")


def test_every_hook_is_documented_with_its_signature():
    text = DOC.read_text()
    names = [n for n, _ in hookdoc.hooks()]
    assert len(names) == len([n for n in dir(hookspecs) if n.startswith("mamba4net_register_")]) >= 11
    for name, spec in hookdoc.hooks():
        assert f"### {name}\n" in text and f"def {name}(register: Register) -> None" in text
        assert inspect.getdoc(spec).splitlines()[0].replace("``", "`") in text


def test_the_doc_examples_run():
    blocks = hookdoc.python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/hooks.md block {i + 1}", "exec"), namespace)
