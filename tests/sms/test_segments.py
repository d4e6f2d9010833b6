"""How long a text is in SMS segments: GSM-7 vs UCS-2, single vs multipart boundaries."""

import pytest

from gateway.sms.segments import Segments, measure


def test_empty_text_takes_one_gsm7_segment():
    assert measure("") == Segments("GSM-7", 0, 1)


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_text_fits_160_alone_and_153_per_part(length, segments):
    assert measure("a" * length) == Segments("GSM-7", length, segments)


def test_accented_letters_of_the_gsm_alphabet_stay_gsm7():
    assert measure("Café à Düsseldorf, ¿qué tal? £5 ¥3 §1 Øre Ñandù").encoding == "GSM-7"


def test_lower_case_c_cedilla_is_not_in_the_gsm_alphabet():
    assert measure("garçon").encoding == "UCS-2"


@pytest.mark.parametrize("char", list("^{}\\[~]|€\f"))
def test_extension_characters_count_two_septets(char):
    assert measure(char) == Segments("GSM-7", 2, 1)


def test_extension_character_that_fits_at_the_160_boundary_keeps_one_segment():
    assert measure("a" * 158 + "€") == Segments("GSM-7", 160, 1)


def test_extension_character_that_crosses_the_160_boundary_makes_two_segments():
    assert measure("a" * 159 + "€") == Segments("GSM-7", 161, 2)


def test_extension_character_is_not_split_between_parts():
    # 152 + 2 + 152 = 306 septets, but the € cannot straddle the end of part one
    assert measure("a" * 152 + "€" + "a" * 152) == Segments("GSM-7", 306, 3)


@pytest.mark.parametrize("char", ["Ж", "中"])
def test_non_gsm_text_fits_70_alone(char):
    assert measure(char * 70) == Segments("UCS-2", 70, 1)


@pytest.mark.parametrize("char", ["Ж", "中"])
def test_non_gsm_text_of_71_takes_two_segments(char):
    assert measure(char * 71) == Segments("UCS-2", 71, 2)


@pytest.mark.parametrize(("length", "segments"), [(134, 2), (135, 3), (201, 3), (202, 4)])
def test_ucs2_parts_hold_67_units(length, segments):
    assert measure("Ж" * length) == Segments("UCS-2", length, segments)


def test_one_non_gsm_character_makes_the_whole_text_ucs2():
    assert measure("a" * 69 + "Ж") == Segments("UCS-2", 70, 1)
    assert measure("a" * 70 + "Ж") == Segments("UCS-2", 71, 2)


def test_emoji_counts_two_utf16_units():
    assert measure("👋") == Segments("UCS-2", 2, 1)


def test_emoji_at_the_70_boundary():
    assert measure("a" * 68 + "👋") == Segments("UCS-2", 70, 1)
    assert measure("a" * 69 + "👋") == Segments("UCS-2", 71, 2)


def test_emoji_is_not_split_between_ucs2_parts():
    # 66 + 2 + 66 = 134 units, but the emoji's surrogate pair cannot straddle part one's end
    assert measure("a" * 66 + "👋" + "a" * 66) == Segments("UCS-2", 134, 3)


def test_emoji_only_text_packs_33_emoji_per_part():
    # 67 units per part hold 33 two-unit emoji, so 134 units of emoji need a third part
    assert measure("👋" * 66) == Segments("UCS-2", 132, 2)
    assert measure("👋" * 67) == Segments("UCS-2", 134, 3)
