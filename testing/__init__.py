"""What a plugin author needs to test a mamba4net plugin.

* :mod:`mamba4net.testing.pytest_plugin` (loaded automatically by pytest once mamba4net is
  installed): fixtures ``m4n_registry``, ``toy_task``, ``tiny_teacher``, ``tiny_student`` and
  ``tiny_config``.
* :mod:`mamba4net.testing.toy`: a tiny synthetic task plugin for engine tests.
* :mod:`mamba4net.testing.initializers`: Hypothesis strategies for teacher/student geometries and
  a reusable property suite for initializers (``check_initializer``, plus CWR's own properties).
* :mod:`mamba4net.testing.methods`: ``check_method``, the contract checks for a distillation
  method (stages run, an interrupted run resumes exactly, roles and taps exist).
"""

from mamba4net.testing.toy import ToyPlugin, ToyTask, tiny_pipeline_config

__all__ = ["ToyPlugin", "ToyTask", "tiny_pipeline_config"]
