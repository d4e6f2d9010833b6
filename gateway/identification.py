"""What a marketing message carries to identify its sender under the recipient's rule set
(docs/rulesets.md, "What every marketing message then carries"): under `ca-casl`, `us` and
`au-spam` an email footer naming the org's postal address and/or contact (and, in the US,
"This message is an advertisement." when sent without consent, reason `not_opted_out`),
and texts that start with the org's `brand`. The UK and EU rule sets add nothing beyond
the footer and STOP text every marketing message has. Texts come from templates/."""

from __future__ import annotations

from .config import Org
from .policy import Decision, get_ruleset, reasons
from .templating import render

#: Rule sets whose messages must identify the sender beyond the name and opt-out.
IDENTIFYING = frozenset({"ca-casl", "us", "au-spam"})


def identification_of(decision: Decision) -> str:
    """The identification the decision's rule set asks for ("" for none beyond UK/EU's)."""
    if not decision.ruleset:
        return ""
    found = get_ruleset(decision.ruleset).identification
    return found if found in IDENTIFYING else ""


def email_footers(org: Org | None, decision: Decision) -> tuple[str, str]:
    """(text, html) to add under the usual footer; empty where nothing is asked."""
    kind = identification_of(decision)
    if not kind or org is None:
        return "", ""
    context = {"identification": kind, "org_name": org.name,
               "postal_address": org.postal_address, "contact": org.contact,
               "advertisement": decision.reason == reasons.NOT_OPTED_OUT}
    return (render("email_identification.txt.j2", **context),
            render("email_identification.html.j2", **context))


def branded(body: str, org: Org | None, decision: Decision) -> str:
    """A marketing text starting with the org's brand where the rule set asks for it and
    the body does not already name it."""
    if not decision.needs_opt_out or not identification_of(decision) or org is None:
        return body
    brand = org.brand or org.name
    if brand.casefold() in body.casefold():
        return body
    return render("sms_brand.txt.j2", brand=brand).rstrip("\n") + body
