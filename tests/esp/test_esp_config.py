"""`[esp.NAME]` and `[feedback]`: an ESP is on only with its credential; a bad key, an
unknown org or half a credential stops start-up naming the key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from gwtest import make_settings

from gateway.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from esphelpers import SENDGRID_KEY, esp_toml, public_key_text


def test_every_esp_with_its_credential_is_on(tmp_path):
    settings = make_settings(tmp_path, extra=esp_toml())
    assert sorted(settings.esp) == ["mailgun", "postmark", "sendgrid"]
    assert settings.esp["sendgrid"].org == "acme"
    assert settings.feedback.report_addresses == ("fbl@acme.test",)


def test_an_esp_without_its_credential_is_off(tmp_path):
    settings = make_settings(tmp_path, extra='[esp.sendgrid]\npublic_key = ""\norg = "acme"\n')
    assert settings.esp == {}


def test_secrets_do_not_show_in_the_settings_repr(tmp_path):
    text = repr(make_settings(tmp_path, extra=esp_toml()).esp)
    assert "mg-signing-key" not in text and "pm-long-random" not in text
    assert public_key_text(SENDGRID_KEY) not in text


@pytest.mark.parametrize("extra, key", [
    ('[esp.sendgrid]\npublic_key = "bm90IGEga2V5"\n', "esp.sendgrid.public_key"),
    ('[esp.mailgun]\nsigning_key = "k"\norg = "nobody"\n', "esp.mailgun.org"),
    ('[esp.postmark]\nusername = "u"\n', "esp.postmark.password"),
    ('[esp.sparkpost]\nkey = "k"\n', "esp.sparkpost"),
    ('[esp.mailgun]\nsigning_key = "k"\nsecret = "s"\n', "esp.mailgun.secret"),
    ('[feedback]\nreport_addresses = ["not an address"]\n', "feedback.report_addresses"),
], ids=["bad sendgrid key", "unknown org", "half a credential", "unknown esp", "unknown key",
        "bad report address"])
def test_a_bad_esp_or_feedback_setting_stops_start_up_naming_the_key(tmp_path, extra, key):
    with pytest.raises(ConfigError) as error:
        make_settings(tmp_path, extra=extra)
    assert error.value.key == key
