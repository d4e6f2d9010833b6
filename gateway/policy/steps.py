"""The engine of the rule sets written as an ordered list of steps (docs/rulesets.md).

Step 1 (service message) and step 2 (the shared suppression rows) run before any of these,
in `rulesets.decide`. A step looks at the person's records in force and either ends the
decision (returns it: an allow, or a block or deferral that nothing later can lift) or
notes a block and lets the next step look (returns None). When no step ends it, the last
(most specific) block noted is the answer, else `no_consent`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import rules
from .model import Decision, Evidence, MessageContext


@dataclass
class Person:
    """One decision's working view of a person: records in force (newest first), the
    relationship / soft opt-in records still in the running, the blocks noted so far."""

    history: tuple[Evidence, ...]
    survivors: list[Evidence]
    blocks: list[Decision] = field(default_factory=list)


Step = Callable[[MessageContext, Person], Decision | None]
HistoryRow = Callable[[MessageContext, tuple[Evidence, ...]], Decision | None]
RecordRow = Callable[[MessageContext, Evidence], bool]


def run_steps(ctx: MessageContext, history: tuple[Evidence, ...],
              steps: tuple[Step, ...]) -> Decision:
    """Run `steps` in order over the records in force."""
    person = Person(history, [e for e in history if e.basis == "soft_opt_in"])
    for step in steps:
        if decision := step(ctx, person):
            return decision
    return person.blocks[-1] if person.blocks else rules.no_consent(ctx)


def ends(row: HistoryRow) -> Step:
    """A row whose answer, if any, is the decision (an allow, or a final block)."""
    def step(ctx: MessageContext, person: Person) -> Decision | None:
        return row(ctx, person.history)
    step.__name__ = row.__name__
    return step


def notes(row: HistoryRow) -> Step:
    """A row that can only block: its block is noted and the next steps still look."""
    def step(ctx: MessageContext, person: Person) -> Decision | None:
        if decision := row(ctx, person.history):
            person.blocks.append(decision)
        return None
    step.__name__ = row.__name__
    return step


def drops(reason: str, row: RecordRow, explain: Callable[[MessageContext, Evidence], str]
          ) -> Step:
    """A row on single relationship / soft opt-in records: those it blocks leave the
    running, and the block is noted (with the newest such record)."""
    def step(ctx: MessageContext, person: Person) -> Decision | None:
        failing = [e for e in person.survivors if row(ctx, e)]
        if failing:
            person.blocks.append(rules.block(reason, explain(ctx, failing[0]), failing[0]))
            person.survivors = [e for e in person.survivors if e not in failing]
        return None
    step.__name__ = reason
    return step


def soft(reason: str, row: RecordRow) -> Step:
    """`drops` for a soft opt-in row of rules.md, explained as the UK tables explain it."""
    return drops(reason, row, lambda ctx, e: rules.explain_soft(reason, ctx, e))


def allow_survivor(reason: str, explain: Callable[[MessageContext, Evidence], str]) -> Step:
    """The record still in the running allows (the newest one is relied on)."""
    def step(ctx: MessageContext, person: Person) -> Decision | None:
        if person.survivors:
            record = person.survivors[0]
            return rules.allow(reason, explain(ctx, record), record)
        return None
    step.__name__ = reason
    return step
