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
