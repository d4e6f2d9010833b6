"""Email service providers behind the gateway: their webhooks (`POST /hooks/sendgrid`,
`/hooks/mailgun`, `/hooks/postmark`) bring opt-outs and complaints back, each checked the way
its provider signs, and recorded through `gateway.optout_events`."""
