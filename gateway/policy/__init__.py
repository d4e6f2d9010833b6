"""The rules engine: pure functions over plain records (docs/rules.md)."""

from . import reasons
from .model import (
    ALL_CHANNELS,
    ALL_ORGS,
    BASES,
    CHANNELS,
    COLLECTORS,
    CONTEXTS,
    ERASED_KIND,
    NATURES,
    ORG_TYPES,
    PURPOSES,
    Decision,
    Evidence,
    MessageContext,
    OptOut,
    OrgPolicy,
)
from .rulesets import DEFAULT_RULESET, RULESETS, RuleSet, decide, get_ruleset

__all__ = [
    "ALL_CHANNELS",
    "ALL_ORGS",
    "BASES",
    "CHANNELS",
    "COLLECTORS",
    "CONTEXTS",
    "DEFAULT_RULESET",
    "ERASED_KIND",
    "NATURES",
    "ORG_TYPES",
    "PURPOSES",
    "RULESETS",
    "Decision",
    "Evidence",
    "MessageContext",
    "OptOut",
    "OrgPolicy",
    "RuleSet",
    "decide",
    "get_ruleset",
    "reasons",
]
