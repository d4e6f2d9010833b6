"""The rows of the rule sets beyond the UK (docs/rulesets.md), one small function per row
named after its reason code, and each rule set's steps 3 onwards as an ordered list.
Steps 1 and 2 (service message, the shared suppression rows) run first in every rule set
(`rulesets.decide`)."""

from __future__ import annotations

from datetime import timedelta

from . import quiet_hours, rules
from . import reasons as R
from .model import Decision, Evidence, MessageContext
from .rules import _day, allow, block, consent_covers
from .steps import Step, allow_survivor, drops, ends, notes, soft

CASL_PURCHASE_DAYS = 730  # 2 years
CASL_ENQUIRY_DAYS = 183  # 6 months
FR_CONSENT_DAYS = 1095  # 3 years (CNIL)
NON_BUSINESS = ("charity", "political")


def _within(ctx: MessageContext, when, days: int) -> bool:
    """`when` is at most `days` days before the message."""
    return ctx.now - when <= timedelta(days=days)


# --- consent, as rules.md rows 3, 4, 4b, with each rule set's extra condition -----------


def _confirmed(record: Evidence) -> bool:
    return record.confirmed_at is not None and record.confirmed_at >= record.obtained_at


def consent_confirmed(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """eu-de step 3: a specific consent counts only once confirmed by double opt-in."""
    return rules.consent(ctx, tuple(e for e in history if _confirmed(e)))


def consent_unconfirmed(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """eu-de step 3: a consent that would cover the message, never confirmed."""
    for record in history:
        if consent_covers(ctx, record) and not _confirmed(record):
            why = ("was never confirmed by double opt-in" if record.confirmed_at is None else
                   "has a confirmation dated before it was obtained, which proves nothing")
            return block(R.CONSENT_UNCONFIRMED, f"consent of {_day(record)} {why}", record)
    return None


def consent_within_3_years(ctx: MessageContext, history: tuple[Evidence, ...]
                           ) -> Decision | None:
    """eu-fr step 3: a consent counts for 1,095 days from obtained_at."""
    return rules.consent(ctx, tuple(e for e in history
                                    if _within(ctx, e.obtained_at, FR_CONSENT_DAYS)))


def consent_expired_3_years(ctx: MessageContext, history: tuple[Evidence, ...]
                            ) -> Decision | None:
    """eu-fr step 3: a consent that would cover the message, older than 3 years."""
    for record in history:
        if consent_covers(ctx, record) and not _within(ctx, record.obtained_at,
                                                        FR_CONSENT_DAYS):
            return block(R.CONSENT_EXPIRED, f"consent of {_day(record)} is older than "
                         f"{FR_CONSENT_DAYS} days (CNIL)", record)
    return None


def corporate_subscriber_not_exempt(ctx: MessageContext, history: tuple[Evidence, ...]
                                    ) -> Decision | None:
    """A corporate subscriber record, where the law protects legal persons too."""
    for record in history:
        if record.basis == "corporate_subscriber":
            return block(R.CORPORATE_SUBSCRIBER_NOT_EXEMPT,
                         f"recorded as a corporate subscriber on {_day(record)}, which is "
                         "no exemption here", record)
    return None


UK_CONSENT = (ends(rules.consent), notes(rules.third_party_unnamed),
              notes(rules.consent_expired))


# --- eu-eprivacy, eu-de, eu-fr ------------------------------------------------------------


def soft_opt_in_no_sale(ctx: MessageContext, record: Evidence) -> bool:
    """eu step 7: "in the context of the sale": a sale, not a negotiation or an enquiry."""
    return record.context != "sale"


def soft_opt_in_channel(ctx: MessageContext, record: Evidence) -> bool:
    """eu-de: a soft opt-in covers email only."""
    return ctx.channel != "email"


def _soft_opt_in_allowed(ctx: MessageContext, record: Evidence) -> str:
    return f"soft opt-in: {record.context} on {_day(record)} of {', '.join(record.categories)}"


def _eu_steps(consent: tuple[Step, ...], corporate: Step, *, email_only: bool = False
              ) -> tuple[Step, ...]:
    no_sale = drops(R.SOFT_OPT_IN_NO_SALE, soft_opt_in_no_sale,
                    lambda ctx, e: f"details were obtained in a {e.context or 'unknown context'}"
                    ", not a sale")
    channel = (drops(R.SOFT_OPT_IN_CHANNEL, soft_opt_in_channel,
                     lambda ctx, e: "a soft opt-in covers email only, not texts"),)
    return (
        *consent,
        corporate,
        soft(R.SOFT_OPT_IN_NOT_COMMERCIAL, rules.soft_opt_in_not_commercial),
        soft(R.SOFT_OPT_IN_THIRD_PARTY, rules.soft_opt_in_third_party),
        no_sale,
        soft(R.SOFT_OPT_IN_NO_OPT_OUT_OFFERED, rules.soft_opt_in_no_opt_out_offered),
        *(channel if email_only else ()),
        soft(R.SOFT_OPT_IN_NOT_SIMILAR, rules.soft_opt_in_not_similar),
        soft(R.SOFT_OPT_IN_EXPIRED, rules.soft_opt_in_expired),
        allow_survivor(R.SOFT_OPT_IN, _soft_opt_in_allowed),
    )


EU_EPRIVACY = _eu_steps(UK_CONSENT, notes(corporate_subscriber_not_exempt))
EU_DE = _eu_steps((ends(consent_confirmed), notes(consent_unconfirmed),
                   notes(rules.third_party_unnamed), notes(rules.consent_expired)),
                  notes(corporate_subscriber_not_exempt), email_only=True)
EU_FR = _eu_steps((ends(consent_within_3_years), notes(rules.third_party_unnamed),
                   notes(rules.consent_expired), notes(consent_expired_3_years)),
                  ends(rules.corporate_subscriber))


# --- ca-casl ------------------------------------------------------------------------------


def _relationship_day(ctx: MessageContext, record: Evidence):
    """The day a sale or support counts from: its date, or for an ongoing relationship
    its end (still running: today)."""
    if record.relationship == "ongoing":
        return record.relationship_ended_at or ctx.now
    return record.obtained_at


def implied_purchase_applies(ctx: MessageContext, record: Evidence) -> bool:
    return record.context == "sale"


def implied_enquiry_applies(ctx: MessageContext, record: Evidence) -> bool:
    return record.context in ("negotiation", "enquiry")


def implied_nonbusiness_applies(ctx: MessageContext, record: Evidence) -> bool:
    return ctx.org.type in NON_BUSINESS and record.context == "support"


def implied_purchase(ctx: MessageContext, record: Evidence) -> bool:
    """CASL step 6: a purchase or contract (or its end) within 2 years."""
    return (implied_purchase_applies(ctx, record)
            and _within(ctx, _relationship_day(ctx, record), CASL_PURCHASE_DAYS))


def implied_enquiry(ctx: MessageContext, record: Evidence) -> bool:
    """CASL step 7: an enquiry or negotiation within 6 months of obtained_at."""
    return (implied_enquiry_applies(ctx, record)
            and _within(ctx, record.obtained_at, CASL_ENQUIRY_DAYS))


def implied_nonbusiness(ctx: MessageContext, record: Evidence) -> bool:
    """CASL step 8: a charity's or party's donor, volunteer or member within 2 years."""
    return (implied_nonbusiness_applies(ctx, record)
            and _within(ctx, _relationship_day(ctx, record), CASL_PURCHASE_DAYS))


def _implied(reason: str, row, what: str) -> Step:
    def step(ctx: MessageContext, person) -> Decision | None:
        for record in person.survivors:
            if row(ctx, record):
                return allow(reason, f"implied consent: {what} on {_day(record)}", record)
        return None
    step.__name__ = reason
    return step


def implied_expired(ctx: MessageContext, person) -> Decision | None:
    """CASL step 9: an implied consent existed, its window has passed (notes the block)."""
    for record in person.survivors:
        if (implied_purchase_applies(ctx, record) or implied_enquiry_applies(ctx, record)
                or implied_nonbusiness_applies(ctx, record)):
            person.blocks.append(block(
                R.IMPLIED_EXPIRED, f"implied consent from the {record.context} of "
                f"{_day(record)} has run out", record))
            break
    return None


CA_CASL = (
    *UK_CONSENT,
    notes(corporate_subscriber_not_exempt),
    soft(R.SOFT_OPT_IN_THIRD_PARTY, rules.soft_opt_in_third_party),
    _implied(R.IMPLIED_PURCHASE, implied_purchase, "a purchase or contract"),
    _implied(R.IMPLIED_ENQUIRY, implied_enquiry, "an enquiry"),
    _implied(R.IMPLIED_NONBUSINESS, implied_nonbusiness, "support given"),
    implied_expired,
)


# --- us -----------------------------------------------------------------------------------


def not_opted_out(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision:
    """US email step 4: commercial email may go until the person opts out."""
    return allow(R.NOT_OPTED_OUT, "no opt-out recorded: commercial email may go, marked as "
                 "an advertisement")


def _written_consent(ctx: MessageContext, history: tuple[Evidence, ...]) -> Evidence | None:
    return next((e for e in history if e.written and consent_covers(ctx, e)), None)


def no_written_consent(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """US text step 3: marketing texts need a signed written consent (naming the org)."""
    if _written_consent(ctx, history) is None:
        return block(R.NO_WRITTEN_CONSENT, "no signed written consent to marketing texts "
                     "recorded for this org")
    return None


def quiet_hours_row(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """US text step 4: outside the allowed hours where the recipient may be: defer."""
    send_at = quiet_hours.next_allowed(ctx.address, ctx.now)
    if send_at is None:
        return None
    record = _written_consent(ctx, history)
    return Decision(False, R.QUIET_HOURS, "outside the hours texts may arrive where the "
                    f"recipient is; sent at {send_at.isoformat(timespec='minutes')}",
                    record.id if record else None, send_at=send_at)


def written_consent(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """US text step 5: the written consent allows."""
    record = _written_consent(ctx, history)
    return allow(R.CONSENT, f"signed written consent on {_day(record)}", record) \
        if record else None


US_EMAIL = (ends(rules.consent), ends(not_opted_out))
US_TEXT = (ends(no_written_consent), ends(quiet_hours_row), ends(written_consent))


# --- au-spam ------------------------------------------------------------------------------


def designated_sender(ctx: MessageContext, history: tuple[Evidence, ...]) -> Decision | None:
    """AU step 3: a charity or political party about its own goods or services."""
    if ctx.org.type in NON_BUSINESS and ctx.nature == "commercial":
        return allow(R.DESIGNATED_SENDER, f"a {ctx.org.type} about its own goods or services:"
                     " a designated commercial electronic message")
    return None


def inferred_consent_insufficient(ctx: MessageContext, record: Evidence) -> bool:
    """AU step 7: a one-off dealing, or an ongoing relationship that has ended."""
    if record.relationship != "ongoing":
        return True
    return record.relationship_ended_at is not None and record.relationship_ended_at <= ctx.now


def _insufficient(ctx: MessageContext, record: Evidence) -> str:
    if record.relationship != "ongoing":
        return f"a one-off {record.context or 'dealing'} on {_day(record)} infers no consent"
    return (f"the relationship ended on {record.relationship_ended_at.date().isoformat()}"
            if record.relationship_ended_at else "the relationship has ended")


AU_SPAM = (
    ends(designated_sender),
    *UK_CONSENT,
    notes(corporate_subscriber_not_exempt),
    soft(R.SOFT_OPT_IN_THIRD_PARTY, rules.soft_opt_in_third_party),
    drops(R.INFERRED_CONSENT_INSUFFICIENT, inferred_consent_insufficient, _insufficient),
    soft(R.SOFT_OPT_IN_NOT_SIMILAR, rules.soft_opt_in_not_similar),
    allow_survivor(R.INFERRED_CONSENT, lambda ctx, e: f"inferred consent: an ongoing "
                   f"relationship since {_day(e)} about {', '.join(e.categories)}"),
)
