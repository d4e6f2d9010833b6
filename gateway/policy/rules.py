"""One small function per row of the decision table in docs/rules.md, named after its
reason code. Rows 1–4b look at the whole history; rows 5–10 are predicates on a single
soft opt-in record ("does this row block this record?")."""

from __future__ import annotations

from datetime import datetime, timedelta

from . import reasons as R
from .model import ALL_CHANNELS, ALL_ORGS, ERASED_KIND, Decision, Evidence, MessageContext, OptOut

CHARITY_SOFT_OPT_IN_FROM = datetime.fromisoformat("2026-02-05T00:00:00+00:00")


def allow(reason: str, why: str, record: Evidence | None = None) -> Decision:
    return Decision(True, reason, why, record.id if record else None)


def block(reason: str, why: str, record: Evidence | None = None) -> Decision:
    return Decision(False, reason, why, record.id if record else None)


def _older_than(ctx: MessageContext, when: datetime, days: int) -> bool:
    """True when `when` is more than `days` days before the message (0 = no limit)."""
    return days > 0 and ctx.now - when > timedelta(days=days)


def covers(ctx: MessageContext, org: str, channel: str) -> bool:
    """Does an opt-out/opt-in scoped to (org, channel) apply to this message?"""
    return org in (ctx.org.id, ALL_ORGS) and channel in (ctx.channel, ALL_CHANNELS)


def is_active_opt_in(ctx: MessageContext, record: Evidence) -> bool:
    """Specific consent given directly to this org: the person actively opting in."""
    return (
        record.basis == "consent"
        and record.collected_by == "self"
        and record.org == ctx.org.id
        and record.channel == ctx.channel
    )


def latest_opt_out(ctx: MessageContext, optouts: tuple[OptOut, ...]) -> OptOut | None:
    """The latest opt-out of the whole channel (a category-scoped one is not: see
    `opted_out_of_category`)."""
    outs = [o for o in optouts
            if o.kind == "optout" and not o.categories and covers(ctx, o.org, o.channel)]
    return max(outs, key=lambda o: (o.at, o.id), default=None)


# --- rows ------------------------------------------------------------------------------


def service_message(ctx: MessageContext) -> Decision | None:
    """Row 1: service and transactional messages are outside the marketing rules."""
    if ctx.purpose == "service":
        return allow(R.SERVICE_MESSAGE, "service message: outside the marketing rules")
    return None


def opted_out(
    ctx: MessageContext, optouts: tuple[OptOut, ...], evidence: tuple[Evidence, ...]
) -> Decision | None:
    """Row 2: an opt-out wins until the person actively opts in again, later."""
    last_out = latest_opt_out(ctx, optouts)
    if last_out is None:
        return None
    opt_ins = [o.at for o in optouts if o.kind == "optin" and covers(ctx, o.org, o.channel)]
    # A consent scoped to other categories does not lift an opt-out for this message.
    opt_ins += [e.obtained_at for e in evidence
                if is_active_opt_in(ctx, e) and (not e.categories or ctx.category in e.categories)]
    if any(at > last_out.at for at in opt_ins):
        return None
    scope = "all channels" if last_out.channel == ALL_CHANNELS else last_out.channel
    return block(
        R.OPTED_OUT,
        f"opted out of {scope} on {last_out.at.date().isoformat()}"
        + (f" via {last_out.method}" if last_out.method else ""),
    )


def latest_erasure(ctx: MessageContext, optouts: tuple[OptOut, ...]) -> OptOut | None:
    """The latest erasure (suppression entry) covering this org and channel."""
    erasures = [o for o in optouts if o.kind == ERASED_KIND and covers(ctx, o.org, o.channel)]
    return max(erasures, key=lambda o: (o.at, o.id), default=None)


def erased(
    ctx: MessageContext, optouts: tuple[OptOut, ...], evidence: tuple[Evidence, ...]
) -> Decision | None:
    """Row 2 (beside opted_out): the person was erased; only a specific consent given to
    this org after the erasure (they signed up again) lifts it. A soft opt-in, indirect
    consent or START recorded since does not."""
    last = latest_erasure(ctx, optouts)
    if last is None:
        return None
    if any(is_active_opt_in(ctx, e) and e.obtained_at > last.at
           and (not e.categories or ctx.category in e.categories) for e in evidence):
        return None
    scope = "every org" if last.org == ALL_ORGS else "this org"
    return block(R.ERASED, f"erased on request for {scope} on {last.at.date().isoformat()}")


def opted_out_of_category(
    ctx: MessageContext, optouts: tuple[OptOut, ...], evidence: tuple[Evidence, ...]
) -> Decision | None:
    """Row 2, scoped (reason `opted_out`): the person left this message's category in the
    preference centre. Other categories still go; a later opt-in or consent covering the
    category lifts it. A message without a category is not in any left category."""
    if ctx.category is None:
        return None
    # Case and spacing never let a message out of a category the person left (a header
    # saying "Decking" is the same topic as "decking"); the lifting below stays exact.
    category = ctx.category.strip().casefold()
    outs = [o for o in optouts if o.kind == "optout" and covers(ctx, o.org, o.channel)
            and category in (c.strip().casefold() for c in o.categories)]
    last_out = max(outs, key=lambda o: (o.at, o.id), default=None)
    if last_out is None:
        return None
    opt_ins = [o.at for o in optouts if o.kind == "optin" and covers(ctx, o.org, o.channel)
               and (not o.categories or ctx.category in o.categories)]
    opt_ins += [e.obtained_at for e in evidence
                if is_active_opt_in(ctx, e) and (not e.categories or ctx.category in e.categories)]
    if any(at > last_out.at for at in opt_ins):
        return None
    return block(
        R.OPTED_OUT,
        f"opted out of category {ctx.category} ({last_out.channel}) on "
        f"{last_out.at.date().isoformat()}" + (f" via {last_out.method}" if last_out.method else ""),
    )


#: Step 2 of every rule set, in order: rows (ctx, optouts, history) -> Decision | None that
#: suppress marketing whatever else is recorded. Every rule set runs this one list, so a
#: row added here (an erasure, say) reaches them all.
SUPPRESSION_ROWS: list = [opted_out, opted_out_of_category, erased]


def consent_covers(ctx: MessageContext, record: Evidence) -> bool:
    """Specific consent for this org and channel; a scoped consent must name the category."""
    if record.basis != "consent":
        return False
    if record.categories and ctx.category not in record.categories:
        return False
    if record.collected_by == "self":
        return True
    return ctx.org.is_named(record.named_orgs) and not _older_than(
        ctx, record.obtained_at, ctx.org.indirect_consent_max_age_days
    )


def consent(ctx: MessageContext, evidence: tuple[Evidence, ...]) -> Decision | None:
    """Row 3: a specific consent covers this org, channel (and category if scoped)."""
    for record in evidence:
        if consent_covers(ctx, record):
            how = "given directly" if record.collected_by == "self" else "naming this org"
            return allow(R.CONSENT, f"specific consent {how} on {_day(record)}", record)
    return None


def corporate_subscriber(ctx: MessageContext, evidence: tuple[Evidence, ...]) -> Decision | None:
    """Row 3b: the address is recorded as a corporate subscriber's."""
    for record in evidence:
        if record.basis == "corporate_subscriber":
            return allow(
                R.CORPORATE_SUBSCRIBER,
                f"recorded as a corporate subscriber on {_day(record)}",
                record,
            )
    return None


def _indirect(evidence: tuple[Evidence, ...]) -> list[Evidence]:
    return [e for e in evidence if e.basis == "consent" and e.collected_by == "third_party"]


def third_party_unnamed(ctx: MessageContext, evidence: tuple[Evidence, ...]) -> Decision | None:
    """Row 4: indirect consent that did not name this organisation."""
    for record in _indirect(evidence):
        if not ctx.org.is_named(record.named_orgs):
            return block(
                R.THIRD_PARTY_UNNAMED,
                f"consent collected by a third party did not name {ctx.org.name}",
                record,
            )
    return None


def consent_expired(ctx: MessageContext, evidence: tuple[Evidence, ...]) -> Decision | None:
    """Row 4b: indirect consent older than the org's indirect_consent_max_age_days."""
    days = ctx.org.indirect_consent_max_age_days
    for record in _indirect(evidence):
        if ctx.org.is_named(record.named_orgs) and _older_than(ctx, record.obtained_at, days):
            return block(
                R.CONSENT_EXPIRED,
                f"indirect consent of {_day(record)} is older than {days} days",
                record,
            )
    return None


# Rows 5–10: predicates on one soft opt-in record; True means "this row blocks it".


def soft_opt_in_not_commercial(ctx: MessageContext, record: Evidence) -> bool:
    """Row 5 (uk-pecr): only commercial orgs, only commercial messages."""
    return ctx.org.type != "commercial" or ctx.nature != "commercial"


def soft_opt_in_not_commercial_2026(ctx: MessageContext, record: Evidence) -> bool:
    """Row 5 (uk-pecr-2026): charities may use it for their own purposes, for details
    collected on or after 2026-02-05; political and not-for-profit orgs still may not."""
    if ctx.org.type == "charity":
        return record.obtained_at < CHARITY_SOFT_OPT_IN_FROM
    return soft_opt_in_not_commercial(ctx, record)


def soft_opt_in_third_party(ctx: MessageContext, record: Evidence) -> bool:
    """Row 6: details must come directly from the person, collected by this org."""
    return record.collected_by != "self" or record.org != ctx.org.id


def soft_opt_in_no_sale(ctx: MessageContext, record: Evidence) -> bool:
    """Row 7: details obtained during a sale or negotiations for one (not a general query)."""
    return record.context not in ("sale", "negotiation")


def soft_opt_in_no_sale_2026(ctx: MessageContext, record: Evidence) -> bool:
    """Row 7 (uk-pecr-2026): a charity's supporters qualify by interest or support."""
    if ctx.org.type == "charity":
        return record.context not in ("interest", "support")
    return soft_opt_in_no_sale(ctx, record)


def soft_opt_in_no_opt_out_offered(ctx: MessageContext, record: Evidence) -> bool:
    """Row 8: a simple chance to refuse was given when the details were collected."""
    return record.opt_out_offered is not True


def soft_opt_in_not_similar(ctx: MessageContext, record: Evidence) -> bool:
    """Row 9: the message is about products similar to what was bought or asked about."""
    return not any(ctx.org.similar_categories(ctx.category, c) for c in record.categories)


def soft_opt_in_not_similar_2026(ctx: MessageContext, record: Evidence) -> bool:
    """Row 9 (uk-pecr-2026): a charity's soft opt-in is about its purposes, not products."""
    if ctx.org.type == "charity":
        return False
    return soft_opt_in_not_similar(ctx, record)


def soft_opt_in_expired(ctx: MessageContext, record: Evidence) -> bool:
    """Row 10: older than the org's soft_opt_in_max_age_days (0 = no limit)."""
    return _older_than(ctx, record.obtained_at, ctx.org.soft_opt_in_max_age_days)


def soft_opt_in(ctx: MessageContext, survivors: list[Evidence]) -> Decision | None:
    """Row 11: a record met every soft opt-in condition."""
    if survivors:
        record = survivors[0]
        return allow(
            R.SOFT_OPT_IN,
            f"soft opt-in: {record.context} on {_day(record)} of {', '.join(record.categories)}",
            record,
        )
    return None


def no_consent(ctx: MessageContext) -> Decision:
    """Row 12: nothing recorded that allows marketing."""
    return block(R.NO_CONSENT, f"no consent or soft opt-in recorded for {ctx.channel}")


EXPLAIN_SOFT = {
    R.SOFT_OPT_IN_NOT_COMMERCIAL: "soft opt-in cannot be used by a {org_type} org or for "
    "{nature} messages",
    R.SOFT_OPT_IN_THIRD_PARTY: "soft opt-in details came from a third party",
    R.SOFT_OPT_IN_NO_SALE: "details were obtained in a {context}, not a sale or negotiation",
    R.SOFT_OPT_IN_NO_OPT_OUT_OFFERED: "no opt-out was offered when the details were collected",
    R.SOFT_OPT_IN_NOT_SIMILAR: "category {category!r} is not similar to {categories}",
    R.SOFT_OPT_IN_EXPIRED: "soft opt-in of {day} is older than {max_age} days",
}


def explain_soft(reason: str, ctx: MessageContext, record: Evidence) -> str:
    return EXPLAIN_SOFT[reason].format(
        org_type=ctx.org.type,
        nature=ctx.nature,
        context=record.context or "unknown context",
        category=ctx.category or "",
        categories=", ".join(record.categories) or "nothing recorded",
        day=_day(record),
        max_age=ctx.org.soft_opt_in_max_age_days,
    )


def _day(record: Evidence) -> str:
    return record.obtained_at.date().isoformat()
