"""The AMQP bytes the emulator writes itself: SASL frames and performatives padded to all fields."""

from __future__ import annotations

import pytest

from aioiothub.emulator.amqp.frames import (
    AMQP_HEADER,
    FrameError,
    PerformativePadder,
    encode_sasl_mechanisms,
    encode_sasl_outcome,
    parse_sasl_init,
    split_frame,
)


def test_sasl_mechanisms_frame() -> None:
    assert encode_sasl_mechanisms(("ANONYMOUS",)) == bytes.fromhex(
        "0000001c" "02" "01" "0000" "005340" "c00f01" "e00c01a3" "09" + b"ANONYMOUS".hex()
    )


def test_sasl_outcome_encodes_both_fields() -> None:
    assert encode_sasl_outcome(0) == bytes.fromhex("00000011" "02010000" "005344" "c00402" "5000" "40")
    assert encode_sasl_outcome(1)[-2:] == b"\x01\x40"


def test_sasl_init_of_each_sdk_is_read() -> None:
    # uamqp: MSSBCBS with no initial response; the redirect sample: PLAIN with \0user\0password.
    mssbcbs = bytes.fromhex("005341" "c00c03" "a3074d5353424342534040")
    assert parse_sasl_init(mssbcbs).mechanism == "MSSBCBS"
    assert parse_sasl_init(mssbcbs).initial_response == b""
    plain = bytes.fromhex("005341" "c01403" "a305504c41494e" "a009") + b"\x00u\x00secret" + b"\x40"
    parsed = parse_sasl_init(plain)
    assert (parsed.mechanism, parsed.initial_response) == ("PLAIN", b"\x00u\x00secret")


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x53\x40", bytes.fromhex("005341" "c00101"), bytes.fromhex("005341" "c00301" "71000000")],
)
def test_a_malformed_sasl_init_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        parse_sasl_init(body)


def test_split_frame_waits_for_a_whole_frame_and_refuses_an_impossible_one() -> None:
    frame = encode_sasl_outcome(0)
    assert split_frame(frame[:9]) is None
    assert split_frame(frame) == (1, frame[8:])
    with pytest.raises(FrameError):
        split_frame(bytes.fromhex("00000004" "02010000"))


def test_the_padder_fills_a_short_begin_and_keeps_payloads_and_heartbeats() -> None:
    # begin with 5 of its 8 fields, as proton writes it; then a heartbeat (an empty frame).
    begin = bytes.fromhex("0000001f" "02000000" "005311" "c0120540" "43" "707fffffff" "707fffffff" "707fffffff")
    heartbeat = bytes.fromhex("00000008" "02000000")
    padder = PerformativePadder()
    out = padder.feed(AMQP_HEADER + begin[:10])
    assert out == AMQP_HEADER  # the rest of the begin is not there yet
    out = padder.feed(begin[10:] + heartbeat)
    expected_begin = bytes.fromhex(
        "00000022" "02000000" "005311" "c0150840" "43" "707fffffff" "707fffffff" "707fffffff" "404040"
    )
    assert out == expected_begin + heartbeat


def test_the_padder_keeps_a_transfers_payload_after_its_fields() -> None:
    transfer = bytes.fromhex("00000019" "02000000" "005314" "c00503" "43" "43" "a000") + b"payload"
    out = PerformativePadder().feed(AMQP_HEADER + transfer)
    body = out[8 + 8 :]
    assert body[:3] == bytes.fromhex("005314")
    assert body[3:6] == bytes.fromhex("c00d0b")  # 11 fields now: 4 bytes of them, 8 nulls and the count
    assert body.endswith(b"\x40" * 8 + b"payload")
    assert int.from_bytes(out[8:12], "big") == len(out) - 8
