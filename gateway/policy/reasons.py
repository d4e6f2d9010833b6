"""The reason codes of docs/rules.md, verbatim, in decision-table order."""

SERVICE_MESSAGE = "service_message"
OPTED_OUT = "opted_out"
ERASED = "erased"  # step 2, beside opted_out: the person was erased (issue 15)
CONSENT = "consent"
CORPORATE_SUBSCRIBER = "corporate_subscriber"
THIRD_PARTY_UNNAMED = "third_party_unnamed"
CONSENT_EXPIRED = "consent_expired"
SOFT_OPT_IN_NOT_COMMERCIAL = "soft_opt_in_not_commercial"
SOFT_OPT_IN_THIRD_PARTY = "soft_opt_in_third_party"
SOFT_OPT_IN_NO_SALE = "soft_opt_in_no_sale"
SOFT_OPT_IN_NO_OPT_OUT_OFFERED = "soft_opt_in_no_opt_out_offered"
SOFT_OPT_IN_NOT_SIMILAR = "soft_opt_in_not_similar"
SOFT_OPT_IN_EXPIRED = "soft_opt_in_expired"
SOFT_OPT_IN = "soft_opt_in"
NO_CONSENT = "no_consent"

#: Every code, in the order of the decision table (index = specificity rank).
ALL = (
    SERVICE_MESSAGE,
    OPTED_OUT,
    ERASED,
    CONSENT,
    CORPORATE_SUBSCRIBER,
    THIRD_PARTY_UNNAMED,
    CONSENT_EXPIRED,
    SOFT_OPT_IN_NOT_COMMERCIAL,
    SOFT_OPT_IN_THIRD_PARTY,
    SOFT_OPT_IN_NO_SALE,
    SOFT_OPT_IN_NO_OPT_OUT_OFFERED,
    SOFT_OPT_IN_NOT_SIMILAR,
    SOFT_OPT_IN_EXPIRED,
    SOFT_OPT_IN,
    NO_CONSENT,
)

ALLOWING = frozenset({SERVICE_MESSAGE, CONSENT, CORPORATE_SUBSCRIBER, SOFT_OPT_IN})
BLOCKING = frozenset(ALL) - ALLOWING

# --- Added in 0.3: the rule sets beyond the UK (docs/rulesets.md), verbatim ------------
CORPORATE_SUBSCRIBER_NOT_EXEMPT = "corporate_subscriber_not_exempt"
CONSENT_UNCONFIRMED = "consent_unconfirmed"
SOFT_OPT_IN_CHANNEL = "soft_opt_in_channel"
IMPLIED_PURCHASE = "implied_purchase"
IMPLIED_ENQUIRY = "implied_enquiry"
IMPLIED_NONBUSINESS = "implied_nonbusiness"
IMPLIED_EXPIRED = "implied_expired"
NOT_OPTED_OUT = "not_opted_out"
NO_WRITTEN_CONSENT = "no_written_consent"
QUIET_HOURS = "quiet_hours"
DESIGNATED_SENDER = "designated_sender"
INFERRED_CONSENT_INSUFFICIENT = "inferred_consent_insufficient"
INFERRED_CONSENT = "inferred_consent"

RULESET_CODES = (
    CORPORATE_SUBSCRIBER_NOT_EXEMPT,
    CONSENT_UNCONFIRMED,
    SOFT_OPT_IN_CHANNEL,
    IMPLIED_PURCHASE,
    IMPLIED_ENQUIRY,
    IMPLIED_NONBUSINESS,
    IMPLIED_EXPIRED,
    NOT_OPTED_OUT,
    NO_WRITTEN_CONSENT,
    QUIET_HOURS,
    DESIGNATED_SENDER,
    INFERRED_CONSENT_INSUFFICIENT,
    INFERRED_CONSENT,
)
ALL = ALL + RULESET_CODES
ALLOWING = ALLOWING | {IMPLIED_PURCHASE, IMPLIED_ENQUIRY, IMPLIED_NONBUSINESS, NOT_OPTED_OUT,
                       DESIGNATED_SENDER, INFERRED_CONSENT}
#: Neither allows nor blocks: the text goes later.
DEFERRING = frozenset({QUIET_HOURS})
BLOCKING = frozenset(ALL) - ALLOWING - DEFERRING

#: One line per code, as `gateway check` and the status page explain it.
MEANING = {
    SERVICE_MESSAGE: "a service message: outside the marketing rules",
    OPTED_OUT: "the person opted out and has not opted in again since",
    ERASED: "the person was erased on request; only specific consent given since lifts it",
    CONSENT: "a specific consent covers this org and channel",
    CORPORATE_SUBSCRIBER: "the address is recorded as a corporate subscriber's",
    THIRD_PARTY_UNNAMED: "consent collected by a third party did not name this org",
    CONSENT_EXPIRED: "the consent is older than the limit that applies to it",
    SOFT_OPT_IN_NOT_COMMERCIAL: "a soft opt-in cannot be used by this org or for this message",
    SOFT_OPT_IN_THIRD_PARTY: "the details came from a third party, not from the person",
    SOFT_OPT_IN_NO_SALE: "the details were not obtained during a sale (or its negotiation)",
    SOFT_OPT_IN_NO_OPT_OUT_OFFERED: "no opt-out was offered when the details were collected",
    SOFT_OPT_IN_NOT_SIMILAR: "the message is not about products similar to those bought",
    SOFT_OPT_IN_EXPIRED: "the soft opt-in is older than the org's limit",
    SOFT_OPT_IN: "every soft opt-in condition holds",
    NO_CONSENT: "nothing recorded allows marketing to this person on this channel",
    CORPORATE_SUBSCRIBER_NOT_EXEMPT: "here the law protects corporate subscribers too: "
    "a corporate subscriber record is not enough",
    CONSENT_UNCONFIRMED: "consent counts here only once confirmed by double opt-in",
    SOFT_OPT_IN_CHANNEL: "here a soft opt-in covers email only, not texts",
    IMPLIED_PURCHASE: "implied consent: a purchase or contract within the last 2 years",
    IMPLIED_ENQUIRY: "implied consent: an enquiry or negotiation within the last 6 months",
    IMPLIED_NONBUSINESS: "implied consent: a donation, volunteering or membership within "
    "2 years",
    IMPLIED_EXPIRED: "implied consent existed but its window has passed",
    NOT_OPTED_OUT: "commercial email may go until the person opts out (an advertisement)",
    NO_WRITTEN_CONSENT: "marketing texts need a signed written consent naming this org",
    QUIET_HOURS: "not at this hour where the recipient is: the text is sent later",
    DESIGNATED_SENDER: "a charity or political party about its own goods or services",
    INFERRED_CONSENT_INSUFFICIENT: "consent is inferred only from a current, ongoing "
    "relationship",
    INFERRED_CONSENT: "inferred consent from an ongoing relationship, similar products",
}
