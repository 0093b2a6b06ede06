from __future__ import annotations

import pytest

from fhirgraph import jsontext


@pytest.mark.parametrize(
    "text",
    [
        '{"valueQuantity":{"value":120.00,"unit":"mmHg"}}',
        '{"a":[1,2.50e3,-0.0,1E-7],"b":"caf\u00e9","c":true,"d":null}',
        '{"s":"looks like 1.0 but is a string"}',
    ],
)
def test_round_trip_keeps_number_text(text: str) -> None:
    assert jsontext.dumps(jsontext.loads(text)) == text


def test_decimal_markers_are_recognisable() -> None:
    value = jsontext.loads('{"v": 1.50}')["v"]
    assert jsontext.is_decimal(value) and jsontext.decimal_text(value) == "1.50"
    assert not jsontext.is_decimal("1.50")
