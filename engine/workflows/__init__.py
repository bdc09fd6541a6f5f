"""Durable workflows on inmem: steps recorded once, resumed after a crash, forked from any step (SPEC.md §14).

This package owns ``db.workflows`` (:class:`~inmem.workflows.engine.Workflows`), the ``@db.workflow``
and ``@db.step`` decorators (and their process-wide forms :func:`workflow` and :func:`step`, declared
before a database is open so ``Database.open(..., recover_workflows=True)`` resumes them), and :func:`context` (the running workflow's shared JSON document,
durable sleep, signals, recorded ``now``/``random``/``uuid``). A workflow is an inmem run tagged
``workflow``; each step's record commits in the same transaction as the inmem writes it made, so
inmem effects happen exactly once and external effects at least once, with ``(workflow_id,
step_seq)`` as their idempotency key. Invariant: everything durable is an ordinary run, KV value or
document, so replay, fork, diff, history, the change feed and ``inmem verify`` cover workflows.

Modules: :mod:`~inmem.workflows.records` (layout), :mod:`~inmem.workflows.runtime` (the per-thread
frame and the context), :mod:`~inmem.workflows.declare` (decorators, registry),
:mod:`~inmem.workflows.manage` (reads, cancel/resume/recover/fork), :mod:`~inmem.workflows.engine`
(start, executor, steps, time and signals). Importing this
package attaches ``workflows``, ``workflow`` and ``step`` to every ``Database`` handle.

>>> import tempfile, inmem
>>> with inmem.Database.open(tempfile.mkdtemp()) as db:
...     @db.workflow()
...     def greet(name):
...         ctx = inmem.workflows.context()
...         ctx.merge({"greeted": name})
...         return ctx.get()
...     greet("ada")
{'greeted': 'ada'}
"""

from __future__ import annotations

from ..database import EXTENSIONS
from .declare import step, workflow
from .engine import Workflows
from .manage import WorkflowHandle
from .records import StepInfo, WorkflowInfo
from .runtime import WorkflowContext, context

__all__ = ["StepInfo", "WorkflowContext", "WorkflowHandle", "WorkflowInfo", "Workflows", "context", "step", "workflow"]

EXTENSIONS["workflows"] = Workflows
EXTENSIONS["workflow"] = lambda db: db.workflows.workflow
EXTENSIONS["step"] = lambda db: db.workflows.step
