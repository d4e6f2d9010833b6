"""The preference centre behind every unsubscribe link (`/u/TOKEN`): besides the whole
channel and everything, one choice per category group of the org (its `similar` groups,
and each stream category in none), named by `[[org]] category_names` (keyed by any
category of the group) or else by the group's categories joined. Leaving a group records
an opt-out scoped to all of its categories (gateway/optouts.py); rules.md step 2 then
blocks marketing in those categories only (`rules.opted_out_of_category`)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .consent import Classification, ConsentService
from .ledger import TokenRecord
from .policy import reasons

METHOD = "preference"  # the opt-out's method: the preference centre


@dataclass(frozen=True)
class CategoryGroup:
    """One choice on the page: `key` (its first category) is what the form posts."""

    key: str
    name: str
    categories: tuple[str, ...]


def category_groups(settings: Settings, org_id: str) -> list[CategoryGroup]:
    """The org's choices, in config order: its `similar` groups, then each category of
    its streams that is in no group."""
    org = settings.orgs.get(org_id)
    if org is None:
        return []
    groups = [tuple(dict.fromkeys(g)) for g in org.similar if g]
    grouped = {c for g in groups for c in g}
    for stream in settings.streams:
        if stream.org == org_id and stream.category and stream.category not in grouped:
            groups.append((stream.category,))
            grouped.add(stream.category)
    names = org.category_names
    return [CategoryGroup(g[0], next((names[c] for c in g if c in names), ", ".join(g)), g)
            for g in groups]


def group_named(settings: Settings, org_id: str, value: str) -> CategoryGroup | None:
    """The group a posted `category:KEY` choice names (any category of it), or None."""
    return next((g for g in category_groups(settings, org_id) if value in g.categories), None)


def has_left(consent: ConsentService, record: TokenRecord, group: CategoryGroup) -> bool:
    """Whether marketing in this group to the token's person is now blocked by an opt-out
    (as the decision itself says)."""
    c = Classification(org=record.org, stream=record.stream, purpose="marketing",
                       nature="commercial", category=group.key)
    return consent.evaluate(c, record.channel, record.address).reason == reasons.OPTED_OUT


def choices(settings: Settings, consent: ConsentService, record: TokenRecord) -> list[dict]:
    """What the page lists: each group with whether the person has left it."""
    return [{"key": g.key, "name": g.name, "left": has_left(consent, record, g)}
            for g in category_groups(settings, record.org)]
