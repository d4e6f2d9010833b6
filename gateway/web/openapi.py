"""The OpenAPI 3 description of the gateway's HTTP interface, served at
``GET /api/v1/openapi.json`` (no auth: it holds no secrets). It documents what apps,
providers and operators call; the tests fuzz the running gateway against it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .common import runtime

routes = web.RouteTableDef()

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _html(description: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


UNAUTHORIZED = _error("missing or wrong credentials")
TOO_MANY_FAILURES = _error("too many wrong credentials from this address lately "
                           "(`too_many_failures`); retry after `Retry-After` seconds")
BAD_JSON = _error("malformed JSON, or not a JSON object (`bad_json`)")
INVALID = _json(_ref("Invalid"), "a bad field; `fields` names each one; nothing stored")
STORE_UNAVAILABLE = _error("the ledger cannot be used right now (`store_unavailable`), "
                           "or an internal error (`internal_error`); retry later")
TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the unsubscribe token from the link"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "Invalid": {
        "type": "object", "required": ["error", "fields"],
        "properties": {"error": {"type": "string", "enum": ["invalid"]},
                       "fields": {"type": "object",
                                  "additionalProperties": {"type": "string"}}},
    },
    "Evidence": {
        "type": "object",
        "required": ["org", "channel", "address", "basis", "obtained_at", "source"],
        "properties": {
            "org": {"type": "string", "description": "an org id"},
            "channel": {"type": "string", "enum": ["email", "sms"]},
            "address": {"type": "string",
                        "description": "email address, or phone number (stored in E.164)"},
            "basis": {"type": "string",
                      "enum": ["consent", "soft_opt_in", "corporate_subscriber"]},
            "obtained_at": {"type": "string", "format": "date-time",
                            "description": "when the person gave it; at most 5 minutes "
                                           "in the future (clock slack)"},
            "source": {"type": "string", "minLength": 1,
                       "description": "form, URL, wording version; required"},
            "categories": {"type": "array", "items": {"type": "string"}},
            "context": {"type": "string", "enum": ["sale", "negotiation", "enquiry",
                                                   "interest", "support", "other"]},
            "collected_by": {"type": "string", "enum": ["self", "third_party"]},
            "opt_out_offered": {"type": "boolean"},
            "named_orgs": {"type": "array", "items": {"type": "string"}},
            "region": {"type": "string", "pattern": "^[A-Za-z]{2}$",
                       "description": "ISO 3166-1 alpha-2 country of the person"},
            "relationship": {"type": "string", "enum": ["one_off", "ongoing"]},
            "relationship_ended_at": {"type": "string", "format": "date-time"},
            "written": {"type": "boolean",
                        "description": "consent was a signed written agreement (US texts)"},
            "confirmed_at": {"type": "string", "format": "date-time",
                             "description": "double opt-in confirmation (eu-de)"},
        },
    },
    "Stored": {
        "type": "object", "required": ["id", "address"],
        "properties": {"id": {"type": "integer"},
                       "address": {"type": "string", "description": "as normalised"}},
    },
    "OptOut": {
        "type": "object", "required": ["org", "channel", "address"],
        "additionalProperties": False,
        "properties": {
            "org": {"type": "string", "description": "an org id, or \"*\" for every org"},
            "channel": {"type": "string", "enum": ["email", "sms", "all"]},
            "address": {"type": "string"},
            "source": {"type": "string"},
        },
    },
    "Contact": {
        "type": "object",
        "required": ["address", "channel", "consents", "opt_outs", "decisions"],
        "properties": {
            "address": {"type": "string"},
            "org": {"type": "string", "nullable": True},
            "channel": {"type": "string", "enum": ["email", "sms"]},
            "consents": {"type": "array", "items": {"type": "object"}},
            "opt_outs": {"type": "array", "items": {"type": "object"}},
            "decisions": {"type": "array", "items": {"type": "object"}},
            "erasures": {"type": "array", "items": {"type": "object"},
                         "description": "when the person was erased, for which org, and "
                                        "on whose word (nothing else of them is kept)"},
        },
    },
    "Erasure": {
        "type": "object", "required": ["channel", "address", "org", "source"],
        "additionalProperties": False,
        "properties": {
            "channel": {"type": "string", "enum": ["email", "sms"]},
            "address": {"type": "string"},
            "org": {"type": "string", "description": "an org id, or \"*\" for every org"},
            "source": {"type": "string", "minLength": 1,
                       "description": "who asked and how; kept; must not hold the address"},
        },
    },
    "Erased": {
        "type": "object", "required": ["erasure_id", "new", "at", "removed"],
        "properties": {
            "erasure_id": {"type": "integer"}, "new": {"type": "boolean"},
            "at": {"type": "string"}, "org": {"type": "string"},
            "channel": {"type": "string"}, "source": {"type": "string"},
            "removed": {"type": "object", "additionalProperties": {"type": "integer"},
                        "description": "evidence, opt_outs, tokens, decisions, copies, "
                                       "deferred_texts"},
        },
    },
    "TextRequest": {
        "type": "object", "required": ["to", "body"], "additionalProperties": False,
        "properties": {
            "to": {"type": "string", "description": "the recipient's number"},
            "body": {"type": "string", "maxLength": 1600},
            "from": {"type": "string", "description": "one of the stream's sms_from "
                                                      "(default: the first)"},
            "purpose": {"type": "string", "enum": ["marketing", "service"],
                        "description": "honoured only where the stream has allow_headers"},
            "nature": {"type": "string", "enum": ["commercial", "campaigning"],
                       "description": "honoured only where the stream has allow_headers"},
            "category": {"type": "string",
                         "description": "honoured only where the stream has allow_headers"},
            "status_callback": {"type": "string", "format": "uri"},
        },
    },
    "TextDecision": {
        "type": "object",
        "properties": {
            "allowed": {"type": "boolean"}, "reason": {"type": "string"},
            "explanation": {"type": "string"},
            "outcome": {"type": "string", "enum": ["allowed", "blocked", "defer"]},
            "ruleset": {"type": "string"},
            "region": {"type": "string", "description": "\"\" when the org maps no regions"},
            "region_source": {"type": "string",
                              "enum": ["", "evidence", "number", "default", "given"]},
        },
    },
    "DeferredText": {
        "type": "object",
        "required": ["status", "send_at", "decision", "to", "from", "body",
                     "gateway_message_id"],
        "properties": {
            "status": {"type": "string", "enum": ["deferred"]},
            "send_at": {"type": "string", "format": "date-time",
                        "description": "when it will be decided again and sent"},
            "decision": _ref("TextDecision"),
            "to": {"type": "string"}, "from": {"type": "string"},
            "body": {"type": "string", "description": "as given; brand and opt-out are "
                                                      "added when it is sent"},
            "gateway_message_id": {"type": "string"},
        },
    },
    "SentText": {
        "type": "object",
        "required": ["status", "decision", "to", "from", "body", "segments", "message_id"],
        "properties": {
            "status": {"type": "string", "enum": ["accepted"]},
            "decision": _ref("TextDecision"),
            "to": {"type": "string"}, "from": {"type": "string"},
            "body": {"type": "string", "description": "the final text, opt-out included"},
            "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
            "segments": {"type": "integer"},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "provider": {"type": "string"},
            "message_id": {"type": "string", "description": "the provider's message id"},
            "provider_status": {"type": "string"},
            "gateway_message_id": {"type": "string"},
        },
    },
    "Blocked": {
        "type": "object", "required": ["error", "reason"],
        "properties": {"error": {"type": "string", "enum": ["blocked"]},
                       "reason": {"type": "string", "description": "a reason code"},
                       "explanation": {"type": "string"},
                       "gateway_message_id": {"type": "string"}},
    },
    "TwilioMessage": {
        "type": "object", "required": ["sid", "account_sid", "to", "from", "body", "status"],
        "properties": {k: {"type": "string", "nullable": True} for k in (
            "sid", "account_sid", "api_version", "body", "date_created", "date_sent",
            "date_updated", "direction", "from", "to", "status", "num_segments",
            "num_media", "uri", "price", "price_unit", "messaging_service_sid")},
    },
    "TwilioError": {
        "type": "object", "required": ["code", "message", "status"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "more_info": {"type": "string"}, "status": {"type": "integer"}},
    },
    "SignUp": {
        "type": "object", "required": ["org", "channel", "address", "source", "wording"],
        "additionalProperties": False,
        "properties": {
            "org": {"type": "string"}, "channel": {"type": "string", "enum": ["email", "sms"]},
            "address": {"type": "string"},
            "source": {"type": "string", "description": "the form, URL, wording version"},
            "wording": {"type": "string", "description": "what the person agreed to"},
            "categories": {"type": "array", "items": {"type": "string"},
                           "description": "scope the consent to these categories"},
            "region": {"type": "string", "description": "ISO 3166-1 alpha-2"},
        },
    },
    "Pending": {
        "type": "object", "required": ["id", "status", "confirmation_sent"],
        "properties": {
            "id": {"type": "string"}, "status": {"type": "string", "enum": ["pending"]},
            "address": {"type": "string"}, "confirmation_sent": {"type": "boolean"},
            "throttled": {"type": "string", "nullable": True,
                          "enum": ["resend_after", "max_per_hour", None]},
        },
    },
    "Health": {
        "type": "object", "required": ["status", "checks"],
        "properties": {"status": {"type": "string", "enum": ["ok", "unhealthy"]},
                       "checks": {"type": "object",
                                  "additionalProperties": {"type": "boolean"}}},
    },
}


def _paths() -> dict[str, Any]:
    admin = [{"adminToken": []}]
    stream = [{"streamKey": []}]
    return {
        "/api/v1/consents": {"post": {
            "summary": "Record one evidence record (consent, soft opt-in, corporate)",
            "security": admin,
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": _ref("Evidence")}}},
            "responses": {"201": _json(_ref("Stored"), "stored"), "400": BAD_JSON,
                          "401": UNAUTHORIZED, "422": INVALID, "429": TOO_MANY_FAILURES,
                          "503": STORE_UNAVAILABLE},
        }},
        "/api/v1/optouts": {"post": {
            "summary": "Record an opt-out",
            "security": admin,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("OptOut")}}},
            "responses": {"201": _json(_ref("Stored"), "stored"), "400": BAD_JSON,
                          "401": UNAUTHORIZED, "422": INVALID, "429": TOO_MANY_FAILURES,
                          "503": STORE_UNAVAILABLE},
        }},
        "/api/v1/erasures": {"post": {
            "summary": "Erase a person; a suppression entry keeps them from marketing",
            "security": admin,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Erasure")}}},
            "responses": {"201": _json(_ref("Erased"), "erased now"),
                          "200": _json(_ref("Erased"), "erased before; nothing left"),
                          "400": BAD_JSON, "401": UNAUTHORIZED, "422": INVALID,
                          "429": TOO_MANY_FAILURES, "503": STORE_UNAVAILABLE},
        }},
        "/api/v1/subscriptions": {"post": {
            "summary": "A sign-up: a pending consent and one confirmation message (double "
                       "opt-in; throttled per person and address)",
            "security": admin,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("SignUp")}}},
            "responses": {"202": _json(_ref("Pending"), "pending until confirmed"),
                          "400": BAD_JSON, "401": UNAUTHORIZED, "422": INVALID,
                          "429": TOO_MANY_FAILURES, "503": STORE_UNAVAILABLE},
        }},
        "/api/v1/contacts/{channel}/{address}": {"get": {
            "summary": "A person's consents, opt-outs and decisions (the evidence trail)",
            "security": admin,
            "parameters": [
                {"name": "channel", "in": "path", "required": True,
                 "schema": {"type": "string", "enum": ["email", "sms"]}},
                {"name": "address", "in": "path", "required": True,
                 "schema": {"type": "string"}},
                {"name": "org", "in": "query", "schema": {"type": "string"}},
                {"name": "format", "in": "query",
                 "schema": {"type": "string", "enum": ["json", "csv"]}},
            ],
            "responses": {
                "200": {"description": "the trail",
                        "content": {JSON: {"schema": _ref("Contact")},
                                    "text/csv": {"schema": {"type": "string"}}}},
                "401": UNAUTHORIZED, "404": _error("unknown channel"), "422": INVALID,
                "429": TOO_MANY_FAILURES, "503": STORE_UNAVAILABLE},
        }},
        "/api/v1/sms": {"post": {
            "summary": "Send one text (one consent decision; opt-out text added)",
            "security": stream,
            "requestBody": {"required": True,
                            "content": {JSON: {"schema": _ref("TextRequest")}}},
            "responses": {
                "202": {"description": "sent to the provider, or deferred (quiet hours: "
                                        "held and sent at send_at)",
                        "content": {JSON: {"schema": {"oneOf": [
                            _ref("SentText"), _ref("DeferredText")]}}}},
                "400": _error("bad JSON, field, number or sender"),
                "401": UNAUTHORIZED, "403": _json(_ref("Blocked"), "blocked, with its reason"),
                "422": _error("`from` not one of the stream's sms_from (`from_not_allowed`), "
                              "or a classification the stream may not set "
                              "(`override_not_allowed`)"),
                "502": _error("the provider did not take it (`provider_error`)"),
                "503": STORE_UNAVAILABLE},
        }},
        "/2010-04-01/Accounts/{account}/Messages.json": {"post": {
            "summary": "Twilio-compatible sending: Twilio's SDK with the API base changed",
            "security": [{"twilioBasic": []}],
            "parameters": [{"name": "account", "in": "path", "required": True,
                            "schema": {"type": "string"},
                            "description": "the stream id (the Twilio account sid)"}],
            "requestBody": {"required": True, "content": {FORM: {"schema": {
                "type": "object", "required": ["To", "Body"],
                "properties": {k: {"type": "string"} for k in (
                    "To", "From", "Body", "StatusCallback", "MessagingServiceSid")}}}}},
            "responses": {
                "201": _json(_ref("TwilioMessage"), "the message resource"),
                "400": _json(_ref("TwilioError"), "bad request, or blocked (code 21610)"),
                "401": _json(_ref("TwilioError"), "wrong account or credentials (20003)"),
                "422": _json(_ref("TwilioError"), "From not one of the stream's sms_from "
                                                  "(21212)"),
                "502": _json(_ref("TwilioError"), "the provider did not take it (20503)"),
                "503": _json(_ref("TwilioError"), "store unavailable (20503)")},
        }},
        "/healthz": {"get": {
            "summary": "Can the process serve and write? No auth.",
            "security": [],
            "responses": {"200": _json(_ref("Health"), "healthy"),
                          "503": _json(_ref("Health"), "the ledger or spool cannot be "
                                                       "written, or the disk is full")},
        }},
        "/u/{token}": {
            "get": {"summary": "The unsubscribe page of an email link (changes nothing)",
                    "security": [], "parameters": [TOKEN],
                    "responses": {"200": _html("the form"),
                                  "404": _html("a bad or unknown link"),
                                  "429": _html("too many bad links from this client")}},
            "post": {"summary": "Unsubscribe (form or RFC 8058 one-click)",
                     "security": [], "parameters": [TOKEN],
                     "requestBody": {"content": {FORM: {"schema": {
                         "type": "object", "properties": {
                             "scope": {"type": "string", "enum": ["channel", "all"]},
                             "List-Unsubscribe": {"type": "string",
                                                  "enum": ["One-Click"]}}}}}},
                     "responses": {"200": _html("confirmed"),
                                   "404": _html("a bad or unknown link"),
                                   "429": _html("too many bad links from this client"),
                                   "503": _html("cannot record right now; try again")}},
        },
        "/sms/inbound/twilio": {"post": {
            "summary": "Twilio's inbound-message webhook (STOP, START, HELP, replies)",
            "security": [],
            "parameters": [{"name": "X-Twilio-Signature", "in": "header",
                            "schema": {"type": "string"}}],
            "requestBody": {"content": {FORM: {"schema": {
                "type": "object", "properties": {k: {"type": "string"} for k in (
                    "From", "To", "Body", "MessageSid", "OptOutType")}}}}},
            "responses": {
                "200": {"description": "TwiML", "content": {"text/xml": {
                    "schema": {"type": "string"}}}},
                "400": {"description": "a body that cannot be read; nothing recorded"},
                "403": {"description": "missing or wrong signature; nothing recorded"},
                "503": {"description": "cannot record right now; Twilio may retry"}},
        }},
        "/sms/inbound/vonage": {"post": {
            "summary": "Vonage's signed inbound-message webhook",
            "security": [],
            "requestBody": {"content": {FORM: {"schema": {
                "type": "object", "properties": {k: {"type": "string"} for k in (
                    "msisdn", "to", "text", "messageId", "timestamp", "nonce", "sig")}}}}},
            "responses": {
                "204": {"description": "handled"},
                "400": {"description": "malformed body"},
                "403": {"description": "missing, wrong or stale signature; nothing recorded"},
                "503": {"description": "cannot record right now"}},
        }},
        "/status.json": {"get": {
            "summary": "The operator status page, as data",
            "security": [{"adminBasic": []}, {"adminToken": []}],
            "parameters": [{"name": "reason", "in": "query", "schema": {"type": "string"}},
                           {"name": "address", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "status"),
                          "401": {"description": "log in with the admin token"},
                          "429": {"description": "too many wrong passwords from this "
                                                 "address lately; retry after Retry-After"}},
        }},
    }


def document(public_url: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document, with the gateway's public URL as its server."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Consent gateway HTTP API", "version": "1",
                 "description": "Evidence and opt-outs in, texts out, unsubscribe pages "
                                "and provider webhooks. Reason codes are those of the "
                                "rules (docs/rules.md)."},
        "servers": [{"url": public_url}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "[http] admin_token"},
                "streamKey": {"type": "http", "scheme": "bearer",
                              "description": "a stream's api_key"},
                "twilioBasic": {"type": "http", "scheme": "basic",
                                "description": "stream id : stream api_key"},
                "adminBasic": {"type": "http", "scheme": "basic",
                               "description": "any user, password admin_token"},
            },
        },
    }


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(runtime(request).settings.http.public_url))
