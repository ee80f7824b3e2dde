"""Every parser of network input, fed arbitrary bytes, raises only the library's own errors.

The targets are shared with the coverage-guided fuzz command (``python benchmarks/fuzz.py``), which
runs millions of inputs each; here hypothesis runs a few hundred per target on every test run, plus
the shapes that broke parsers elsewhere (deep nesting, huge lengths, stray escapes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.fuzz_targets import EXPECTED, TARGETS

_NASTY = [
    b"",
    b"\x00",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"%",
    b"%zz&=&&==",
    b"\xff\xfe\xfd",
    b"\x10\xff\xff\xff\xff\x7f",  # CONNECT with a remaining length past the MQTT maximum
    b"\x30\x80\x80\x80\x80\x01",  # a five-byte remaining length
    b"\x82\x05\x00\x01\x00\x00\x02",  # SUBSCRIBE with an empty filter
    b"SharedAccessSignature sr=&sig=&se=99999999999999999999999",
    b"HostName=;DeviceId=;SharedAccessKey=;;;",
    b"$iothub/twin/res/200/?$rid=" + b"9" * 10_000,
]


def _run(target: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(EXPECTED):
        target(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("data", _NASTY, ids=range(len(_NASTY)))
def test_known_nasty_inputs(name: str, data: bytes) -> None:
    _run(TARGETS[name], data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(name: str, data: bytes) -> None:
    _run(TARGETS[name], data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("$#/?&=%+.*-_aZ09 {}[]\":,\\\x00é"), max_size=200))
def test_arbitrary_protocol_looking_text(name: str, text: str) -> None:
    _run(TARGETS[name], text.encode("utf-8"))
