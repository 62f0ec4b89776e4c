"""``docs/hooks.md``, generated from :mod:`mamba4net.core.hookspecs` (every hook, its exact
signature, what its factory receives and returns) plus runnable examples.

Regenerate with ``python -m mamba4net.registry.hookdoc > docs/hooks.md``; a test fails when the file
is out of date, and another executes every Python block in it.
"""

from __future__ import annotations

import inspect
import re
import textwrap

from mamba4net.core import hookspecs
from mamba4net.registry.components import KINDS

HEADER = """\
# Hook reference

_Generated from `core/hookspecs.py` by `python -m mamba4net.registry.hookdoc > docs/hooks.md`;
do not edit by hand (a test compares the two)._

Plugin API version: **{api}**. A plugin module declares the version it was written for as
`MAMBA4NET_API = {api}`; a plugin that declares another is refused by name while the others keep
working. Import what a plugin needs from `mamba4net.api` (and `mamba4net.testing` in tests) only.

{intro}

## Summary

| hook | the factory is called as | and returns |
|---|---|---|
{summary}
"""

EXAMPLES = '''
## Examples

Every block below runs as it is (a test executes them in order, in one namespace).

A plugin is a module or an object whose methods carry `hookimpl`. Tests and notebooks add one by
hand; an installed package declares it as an entry point in the group `mamba4net`.

```python
from pydantic import BaseModel, ConfigDict

from mamba4net.api import ConfigError, hookimpl
from mamba4net.registry.manager import Registry


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown YAML keys are errors
    factor: float = 0.5


def build_scale_init(params: ScaleParams):
    def initialize(teacher, student):  # writes the student in place, never the teacher
        for p in student.parameters():
            p.data.mul_(params.factor)
        return {"scaled_by": params.factor}  # a JSON-ready report

    return initialize


class MyPlugin:
    @hookimpl
    def mamba4net_register_initializers(self, register):
        register("scale_init", build_scale_init, params=ScaleParams)


registry = Registry(load_entry_points=False)
registry.add_plugin(MyPlugin(), name="my_plugin")
init = registry.build("initializers", {"name": "scale_init", "factor": 0.25})
```

The component runs like any other: here on two tiny modules.

```python
import torch

teacher, student = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
before = student.weight.detach().clone()
report = init(teacher, student)
assert report == {"scaled_by": 0.25}
assert torch.allclose(student.weight, before * 0.25)
```

A parameter the component does not declare is an error that names it, before any work:

```python
try:
    registry.build("initializers", {"name": "scale_init", "factr": 2})
except Exception as err:
    assert "factr" in str(err)
else:
    raise AssertionError("the typo was accepted")
```

A loss term reads the two sides' outputs; optional attributes say what it needs:

```python
def build_l1_to_teacher(params, *, task, d_student, d_teacher):
    def term(student_out, teacher_out, batch):
        return (student_out.pred - teacher_out.pred).abs().mean()

    term.needs_teacher = True  # run (or read the cached outputs of) the teacher
    return term


class LossPlugin:
    @hookimpl
    def mamba4net_register_losses(self, register):
        register("l1_to_teacher", build_l1_to_teacher)


registry.add_plugin(LossPlugin(), name="loss_plugin")
term = registry.get("losses", "l1_to_teacher").build(None, task=None, d_student=16, d_teacher=32)

from mamba4net.api import ModelOutput

value = term(ModelOutput(pred=torch.ones(2, 3)), ModelOutput(pred=torch.zeros(2, 3)), {})
assert float(value) == 1.0
```

A method declares its roles and stages; core runs, checkpoints and resumes them:

```python
from mamba4net.api import Method, Role, Stage


def fit_student(ctx):
    student = ctx.model("student")  # weights of the latest finished stage that wrote it
    return {"params": sum(p.numel() for p in student.parameters())}


def build_plain(params):
    return Method(
        name="plain",
        roles=[Role("student", "student")],
        stages=[Stage("fit_student", fit_student, writes=("student",))],
    )


class MethodPlugin:
    @hookimpl
    def mamba4net_register_methods(self, register):
        register("plain", build_plain)


registry.add_plugin(MethodPlugin(), name="method_plugin")
method = registry.get("methods", "plain").build({})
assert method.stage_names == ["fit_student"]
```
'''


def hooks() -> list[tuple[str, object]]:
    """(name, spec function) of every hook, in the order of the module."""
    found = [(n, f) for n, f in vars(hookspecs).items() if n.startswith("mamba4net_register_") and callable(f)]
    return sorted(found, key=lambda item: inspect.getsourcelines(item[1])[1])


def _factory_contract(doc: str) -> tuple[str, str]:
    """(how the factory is called, what it returns) from the spec's first ``factory(...) -> X``."""
    m = re.search(r"``(factory\([^`]*?\))\s*->\s*([^`]+)``", doc)
    if m is None:
        return "", ""
    return m.group(1), m.group(2).strip()


def _rst_to_md(text: str) -> str:
    text = re.sub(r":(?:class|func|mod|data):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def render() -> str:
    module_doc = inspect.getdoc(hookspecs) or ""
    intro = _rst_to_md(module_doc.split("\n\n", 1)[1] if "\n\n" in module_doc else module_doc)
    intro = re.sub(r"::\n\n((?:    .*\n?|\n)+)",
                   lambda m: ":\n\n```\n" + textwrap.dedent(m.group(1)).strip() + "\n```\n\n", intro + "\n")
    rows, sections = [], []
    for name, spec in hooks():
        doc = inspect.getdoc(spec) or ""
        call, returns = _factory_contract(doc)
        kind = name.removeprefix("mamba4net_register_")
        deprecated = doc.startswith("Deprecated")
        rows.append(f"| [`{name}`](#{name}) | `{call}` | {_rst_to_md(returns) if returns else ''} |"
                    if not deprecated else f"| [`{name}`](#{name}) | deprecated | |")
        signature = f"def {name}{inspect.signature(spec)}".replace("'", "")
        noun = KINDS.get(kind)
        sections.append(f"### {name}\n\n```\n@hookimpl\n{signature}\n```\n\n"
                        + (f"Registers {noun}s (config nodes under the kind `{kind}`).\n\n" if noun else "")
                        + _rst_to_md(doc) + "\n")
    register_sig = f"register{inspect.signature(hookspecs.Register.__call__)}".replace("(self, ", "(").replace("'", "")
    body = HEADER.format(api=hookspecs.PLUGIN_API, intro=intro.strip(), summary="\n".join(rows))
    return (body + f"\nEvery hook receives `{register_sig}`.\n\n## Hooks\n\n" + "\n".join(sections)
            + EXAMPLES).rstrip() + "\n"


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


if __name__ == "__main__":
    print(render(), end="")
