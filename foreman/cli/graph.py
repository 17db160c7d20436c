"""A plan's graph drawn on the terminal, as a tree a person reads top to bottom.

A step sits under the dependency it waits for last (in the order steps can run); a step that
waits for more than one says so ("after a, b"), so a diamond is drawn once, not twice.
Conditions and approval points are written on the step. `--mermaid` prints the Mermaid
source instead (`engine.explain.mermaid`), for the places that draw it.
"""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from foreman.engine.executor import run_order
from foreman.engine.plan import Plan, SubTask


def _label(sub: SubTask) -> Text:
    who = f"script {sub.script.path}" if sub.script else (sub.agent or f"any {sub.capability}")
    label = Text.assemble((sub.id, "bold"), f": {sub.title} ", (f"[{who}]", "cyan"))
    if sub.tools:
        label.append(f" tools: {', '.join(sub.tools)}", style="dim")
    if len(sub.depends_on) > 1:
        label.append(f"  after {', '.join(sub.depends_on)}", style="magenta")
    if sub.condition:
        label.append(f"  if {sub.condition}", style="yellow")
    if sub.approval:
        label.append("  (a person approves first)", style="red")
    return label


def plan_tree(plan: Plan, title: str | None = None) -> Tree:
    """The plan as a Rich tree (plain ASCII where the terminal has no line drawing)."""
    order = run_order(plan)
    position = {step_id: i for i, step_id in enumerate(order)}
    root = Tree(Text(title or f"plan: {plan.objective or '(no objective)'}", style="bold"))
    nodes: dict[str, Tree] = {}
    for step_id in order:
        sub = plan.task(step_id)
        deps = [d for d in sub.depends_on if d in nodes]
        parent = nodes[max(deps, key=position.__getitem__)] if deps else root
        nodes[step_id] = parent.add(_label(sub))
    return root
