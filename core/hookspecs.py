"""Every hook a mamba4net plugin can implement (pluggy project name ``mamba4net``).

A plugin is a module (or object) whose functions carry the ``hookimpl`` marker and the name of one
of the specs below. Built-in plugins are declared in ``[project.entry-points.mamba4net]`` of
pyproject.toml, exactly as a third-party package declares its own::

    [project.entry-points.mamba4net]
    my_task = "my_package.plugin"

Component hooks follow the "register" pattern: each receives a ``register`` callable and calls it
once per component::

    from mamba4net.api import hookimpl

    @hookimpl
    def mamba4net_register_tasks(register):
        register("my_task", build_my_task, params=MyTaskParams)

``register(name, factory, params=None, **meta)``:

* ``name``: lowercase, unique within its kind (``[a-z][a-z0-9_]*``). A second plugin registering the
  same name is an error naming both owners.
* ``factory``: called when a config asks for the component, never at registration. Keep heavy
  imports (torch, transformers) inside it so that loading plugins stays fast.
* ``params``: a pydantic model (``extra="forbid"``, enforced) for the component's YAML parameters;
  the config node ``{name: my_task, ...}`` is validated against it before any work starts. ``None``
  means the component takes no parameters; its factory then receives ``params=None``.
* ``meta``: extra facts some kinds need (kernels: ``op``, ``priority``, ``available``; baselines:
  ``task``). Documented per hook below.

Methods (``mamba4net_register_methods``) declare roles and stages; a stage's ``run(ctx)`` works
through the public :class:`mamba4net.core.context.StageContext` and nothing else.

What each kind's factory is called with and must return is written in each spec. The protocols the
returned objects satisfy are in :mod:`mamba4net.core.protocols`.

Contract: hook arguments are only ever added, never removed or renamed.

A plugin module declares the plugin API it was written for with ``MAMBA4NET_API = 1`` (the value of
:data:`PLUGIN_API` it was built against). The API number changes only when a hook or a contract
changes incompatibly; a plugin that declares another number is refused, by name, and the others
keep working. A plugin that declares nothing is loaded as written for the current API.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import pluggy

PROJECT = "mamba4net"
PLUGIN_API = 1  # the plugin API this core provides (see the module docstring)
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callable every ``mamba4net_register_*`` hook receives."""

    def __call__(
        self, name: str, factory: Callable[..., Any], params: type | None = None, **meta: Any
    ) -> None: ...


@hookspec
def mamba4net_register_tasks(register: Register) -> None:
    """Register networking tasks.

    ``factory(params) -> Task``. A task owns its data (data set or simulator), its loss, its metric,
    its evaluation and the names of its default encoder, head and baselines
    (see :class:`mamba4net.core.protocols.Task`).
    """


@hookspec
def mamba4net_register_encoders(register: Register) -> None:
    """Register encoders: modules that turn one modality of a task batch into token embeddings.

    ``factory(params, *, task, d_model) -> nn.Module`` whose ``forward(batch) -> (B, L, d_model)``.
    The last layer should be a linear projection to ``d_model`` (paper eq. 2), so that one encoder
    design serves backbones of any width.
    """


@hookspec
def mamba4net_register_heads(register: Register) -> None:
    """Register networking heads: modules that turn backbone hidden states into the task's answer.

    ``factory(params, *, task, d_model) -> nn.Module`` whose ``forward(hidden, batch) -> prediction``
    with ``hidden`` of shape ``(B, L, d_model)``. Heads never use the language-model head: the
    answer is always well-formed for the task (a regression vector, logits over actions, ...).
    """


@hookspec
def mamba4net_register_teachers(register: Register) -> None:
    """Register teacher backbones (large Transformer LLMs).

    ``factory(params) -> nn.Module`` satisfying :class:`mamba4net.core.protocols.Backbone`:
    ``forward(inputs_embeds) -> hidden`` with shapes ``(B, L, d_model) -> (B, L, d_model)``, and an
    integer attribute ``d_model``. Parameter-efficient adaptation (LoRA) is the factory's business:
    the trainer optimizes whatever has ``requires_grad=True``.
    """


@hookspec
def mamba4net_register_students(register: Register) -> None:
    """Register student backbones.

    ``factory(params) -> nn.Module`` satisfying :class:`mamba4net.core.protocols.StreamingBackbone`:
    the :class:`Backbone` protocol plus ``init_state(batch_size)`` and
    ``step(x, state) -> (y, state)`` for constant-memory streaming decisions.
    """


@hookspec
def mamba4net_register_initializers(register: Register) -> None:
    """Register student initializers (e.g. CWR weight reuse, random).

    ``factory(params) -> callable(teacher, student) -> dict`` where ``teacher`` and ``student`` are
    backbones. The callable writes the student's weights in place, must not modify the teacher,
    and returns a JSON-serializable report (what was mapped where).
    """


@hookspec
def mamba4net_register_losses(register: Register) -> None:
    """Register loss terms that a config composes into a weighted sum.

    ``factory(params, *, task, d_student, d_teacher) -> callable(student_out, teacher_out, batch)``
    returning a scalar tensor. ``d_student``/``d_teacher`` are the backbones' widths (``d_teacher``
    is None in stages without a teacher); the outputs are
    :class:`mamba4net.core.protocols.ModelOutput`. "Student" and "teacher" are the two sides of
    the term, whichever roles a stage puts there (in progressive distillation the previous
    student is the next one's teacher).

    Optional attributes on the callable tell the engine what it needs:

    * ``needs_teacher = True``: the term reads ``teacher_out`` (otherwise it may be None and the
      teacher is not run at all); using it in a stage without a teacher is a config error;
    * ``needs_teacher_hidden = True``: it reads ``teacher_out.hidden`` (kept in the teacher-output
      cache only when some term asks for it);
    * ``needs_taps = {"student": [...], "teacher": [...]}``: named intermediate tensors it reads
      from ``student_out.taps`` / ``teacher_out.taps`` (patterns; ``*`` matches one name part):
      ``block_in.<i>`` / ``block_out.<i>`` (the input and output of backbone block ``i``),
      ``attn_probs.<i>`` (a teacher's per-head attention probabilities ``(B, H, L, L)``, computed
      with eager attention only while asked), and what a backbone offers of its own (the hybrid
      Mamba student: ``mixer.<i>.{x,B,C,dt,A,D,matrix}``). A model's ``tap_points()`` lists them.
      Nothing is collected unless some term asks.

    If the callable is an ``nn.Module`` with parameters (a projector for hidden-state alignment,
    say), the trainer optimizes them along with the model and checkpoints them.
    """


@hookspec
def mamba4net_register_kernels(register: Register) -> None:
    """Register implementations of compute kernels.

    ``factory() -> callable`` implementing the op. Required meta:

    * ``op`` (str): the operation implemented, e.g. ``"ssd_scan"`` or ``"ssd_step"``;
      every implementation of one op has the same call signature (the built-in ops and their
      signatures are listed in :mod:`mamba4net.core.kernels`);
    * ``priority`` (int): higher wins when several are available;
    * ``available`` (callable ``(device: str) -> bool``, optional): whether this implementation can
      run on the device type (``"cpu"``, ``"cuda"``); must not raise, may import lazily.

    Users override the choice from YAML with ``runtime.kernels: {op: name}``.
    """


@hookspec
def mamba4net_register_strategies(register: Register) -> None:
    """Deprecated (kept so that older plugins still load; what they register is ignored with a
    warning): register a method with :func:`mamba4net_register_methods` instead. A config's
    ``strategy: {name, benchmark}`` still reads as ``method: {name}`` plus ``benchmark.enabled``."""


@hookspec
def mamba4net_register_methods(register: Register) -> None:
    """Register distillation methods (Mamba4Net, MOHAWK, progressive distillation, your own).

    ``factory(params) -> mamba4net.core.method.Method``: the method's roles and ordered stages.
    The factory runs at config validation (``mamba4net validate``), so it must be import-light:
    keep torch imports inside the stage functions.

    * ``Role(name, kind, node=None, overrides={}, deployed=True)``: ``kind`` is ``"teacher"`` or
      ``"student"``; the model is built from the top-level config node ``node`` (default: the
      kind, i.e. ``teacher:`` or ``student:``) with ``overrides`` merged over its params, so that
      several students can share one node at different sizes. Deployed roles are evaluated
      beside the baselines, benchmarked against the teacher and (students) exported.
    * ``Stage(name, run, reads=(), writes=(), trains=False, params=None, losses=({"name": "task"},),
      taps={})``: ``name`` is the checkpoint folder and the ``train.<name>`` section (validated
      with ``params``, a :class:`~mamba4net.core.schema.TrainParams` subclass, when the stage
      trains; ``losses`` are its default loss terms). ``run(ctx)`` gets a
      :class:`~mamba4net.core.context.StageContext` and may return a JSON-ready dict kept in
      ``done.json``. When it returns, core saves the weights of every role in ``writes``.
    * ``Method(name, roles, stages, predictors=None)``: ``predictors(ctx) -> {name: predictor}``
      adds predictors (an ensemble, a cascade) evaluated beside the roles.

    A finished stage is never run again (``--resume`` skips it); an unfinished training stage
    resumes from its latest checkpoint and replays exactly. ``ctx.model(role)`` always has the
    weights of the latest finished stage that wrote the role. ``mamba4net.testing.check_method``
    checks all of this for a new method.
    """


@hookspec
def mamba4net_register_baselines(register: Register) -> None:
    """Register classic (non-LLM) baselines that are evaluated beside teacher and student.

    ``factory(params, *, task) -> Baseline`` (:class:`mamba4net.core.protocols.Baseline`):
    ``fit(task)`` trains it if it learns anything; how it answers is the task's business (the task's
    ``evaluate`` drives it; for supervised tasks ``predict(batch)`` answering like the task's head).
    A learned baseline may expose ``state_dict()``/``load_state_dict()``: the engine then keeps its
    fitted weights with the run, so ``mamba4net evaluate`` reuses them instead of refitting.
    Required meta: ``task`` (str), the registered task name the baseline belongs to.
    """


@hookspec
def mamba4net_register_datasets(register: Register) -> None:
    """Register the data a task reads, for ``mamba4net data list | verify | fetch``.

    ``factory(params) -> mamba4net.core.datasets.Manifest`` (``params`` is None): the files of the
    folder ``<data>/<folder>/`` with their sizes, sha256 and pinned upstream sources; usually
    ``read_manifest(path)`` of a JSON file shipped in the plugin package (written by a script such
    as ``scripts/make_data_manifests.py``). Keep the factory cheap: ``data list`` calls it.
    """
