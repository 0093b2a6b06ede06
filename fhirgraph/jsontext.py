"""JSON that keeps every decimal exactly as the server wrote it.

Python's ``json`` turns ``120.00`` into the float ``120.0``; FHIR decimals carry
their precision in their text, so that would change clinical data. ``loads``
keeps each non-integer number as a marked string holding its original text and
``dumps`` writes the text back unquoted. The markers start with a NUL
character, which FHIR forbids in strings, so they cannot clash with data.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: a FHIR resource or other JSON object, as parsed (the one alias for it in fhirgraph)
JSON = dict[str, Any]

_MARK = "\x00#"
_MARKED = re.compile(r'"\\u0000#([-+0-9.eE]+)"')


def _mark(text: str) -> str:
    return _MARK + text


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=_mark)


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    return _MARKED.sub(r"\1", text) if "\\u0000#" in text else text


def is_decimal(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_MARK)


def decimal_text(value: str) -> str:
    return value[len(_MARK) :]
