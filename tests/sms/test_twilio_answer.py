"""The Twilio-compatible answer's JSON: orjson writes it, and it means what the json module
would have written, for any text a message can hold."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sms.twilio_api import dumps

resources = st.fixed_dictionaries({
    "sid": st.text(), "body": st.text(), "to": st.text(), "from": st.text(),
    "num_segments": st.integers(0, 10).map(str), "price": st.none(),
    "subresource_uris": st.dictionaries(st.text(max_size=6), st.text(), max_size=2),
})


@settings(max_examples=500, deadline=None)
@given(resources)
def test_the_answer_reads_back_as_the_json_module_writes_it(resource):
    assert json.loads(dumps(resource)) == json.loads(json.dumps(resource))


def test_a_lone_surrogate_is_written_as_the_json_module_writes_it():
    """orjson refuses one; the json module escapes it."""
    resource = {"body": "broken \ud800 text"}
    assert dumps(resource) == json.dumps(resource)
