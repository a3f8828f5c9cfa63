"""Schemathesis hooks for the billing API: what a well-behaved client does that a schema cannot say.

Loaded by the run in test_openapi.py (SCHEMATHESIS_HOOKS). An Idempotency-Key must be unique per
intended operation; generated data repeats short keys ("0", "00") across different requests,
which the API rightly answers `422 idempotency_key_reused`. So just before each call a
well-formed key is made unique; a malformed or missing one is left alone, so the checks that
send those still do.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

from services.api.idempotency import IDEMPOTENCY_HEADER, KEY_PATTERN

_WELL_FORMED = re.compile(KEY_PATTERN)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    del context, kwargs
    key = (case.headers or {}).get(IDEMPOTENCY_HEADER)
    if isinstance(key, str) and _WELL_FORMED.match(key):
        case.headers[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
