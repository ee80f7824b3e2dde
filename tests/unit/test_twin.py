"""Tests for twin merge patches and twin rules (protocol.md section 2.4)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioiothub.protocol.twin import (
    MAX_TWIN_DEPTH,
    MAX_TWIN_SECTION_BYTES,
    MAX_TWIN_STRING_BYTES,
    merge_patch,
    validate_patch,
    validate_section_size,
)

keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
scalars = st.none() | st.booleans() | st.integers(-(2**52), 2**52 - 1) | st.text(max_size=5)
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3)
)
documents = st.dictionaries(keys, json_values, max_size=5)


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """A patch holding ``leaf`` under ``depth`` keys: ``{"k0": {"k1": ... {"k<depth-1>": leaf}}}``."""
    value: Any = leaf
    for level in reversed(range(depth)):
        value = {f"k{level}": value}
    assert isinstance(value, dict)
    return value


def test_constants() -> None:
    assert (MAX_TWIN_DEPTH, MAX_TWIN_SECTION_BYTES, MAX_TWIN_STRING_BYTES) == (10, 32768, 4096)


# --- merge_patch --------------------------------------------------------------------------------


def test_merge_patch_rules() -> None:
    document = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "$version": 4}
    patch = {"a": None, "b": {"c": None, "x": {"y": 1}}, "e": [3], "n": {"m": None, "k": 2}}
    assert merge_patch(document, patch) == {
        "b": {"d": 3, "x": {"y": 1}},
        "e": [3],
        "n": {"k": 2},
        "$version": 4,
    }


def test_merge_patch_replaces_scalars_with_objects_and_back() -> None:
    assert merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert merge_patch({"a": {"b": 2}}, {"a": 5}) == {"a": 5}
    assert merge_patch({"a": {"b": 2}}, {"a": {}}) == {"a": {"b": 2}}
    assert merge_patch({}, {"gone": None}) == {}


def test_merge_patch_ignores_version_and_metadata_in_the_patch() -> None:
    document = {"x": 1, "$version": 3, "$metadata": {"$lastUpdated": "t"}}
    result = merge_patch(document, {"$version": 9, "$metadata": None, "x": 2})
    assert result == {"x": 2, "$version": 3, "$metadata": {"$lastUpdated": "t"}}


def test_merge_patch_returns_new_containers_and_leaves_inputs_alone() -> None:
    document = {"a": {"b": [1, {"c": 1}]}, "keep": {"k": 1}}
    patch = {"a": {"z": [{"q": 1}]}}
    before_document, before_patch = copy.deepcopy(document), copy.deepcopy(patch)
    result = merge_patch(document, patch)
    result["a"]["b"][1]["c"] = 99
    result["a"]["z"][0]["q"] = 99
    result["keep"]["k"] = 99
    assert document == before_document
    assert patch == before_patch


def test_merge_patch_rejects_non_mappings() -> None:
    with pytest.raises(TypeError, match=r"^patch: expected a mapping, got list"):
        merge_patch({}, [])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^document: expected a mapping"):
        merge_patch(None, {})  # type: ignore[arg-type]


@given(document=documents, patch=documents)
def test_merge_patch_properties(document: dict[str, Any], patch: dict[str, Any]) -> None:
    result = merge_patch(document, patch)
    for key, value in patch.items():
        if value is None:
            assert key not in result
        elif not isinstance(value, dict):
            assert result[key] == value
    for key, value in document.items():
        if key not in patch:
            assert result[key] == value
    # Applying the same merge patch twice changes nothing more (RFC 7386 patches are idempotent).
    assert merge_patch(result, patch) == result


# --- validate_patch -----------------------------------------------------------------------------


def test_valid_patch_passes() -> None:
    validate_patch(
        {
            "fw": "1.2.0",
            "n": 2**52 - 1,
            "neg": -(2**52),
            "f": 1.5,
            "ok": True,
            "none": None,
            "list": [1, "a", {"x": [None]}],
            "thermostat1": {"__t": "c", "targetTemperature": {"value": 21, "ac": 200, "av": 3, "ad": "ok"}},
            "ключ": "значение",
        }
    )


def test_depth_limit_is_ten_levels_below_the_section() -> None:
    validate_patch(nested(MAX_TWIN_DEPTH))
    validate_patch(nested(MAX_TWIN_DEPTH, leaf={}))  # an empty object at depth 10 is still fine
    with pytest.raises(ValueError, match=r"^patch\['k0'\].*\['k10'\]: nested deeper than 10 levels"):
        validate_patch(nested(MAX_TWIN_DEPTH + 1, leaf={}))
    with pytest.raises(ValueError, match=r"nested deeper than 10 levels"):
        validate_patch(nested(MAX_TWIN_DEPTH, leaf={"x": {}}))


def test_arrays_count_towards_depth() -> None:
    validate_patch({"a": [[[[[[[[[[1]]]]]]]]]]})
    with pytest.raises(ValueError, match=r"^patch\['a'\]\[0\]\[0\].*: nested deeper than 10 levels"):
        validate_patch({"a": [[[[[[[[[[[1]]]]]]]]]]]})


def test_self_referencing_patch_is_rejected() -> None:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    with pytest.raises(ValueError, match=r"nested deeper"):
        validate_patch(loop)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"": 1}, r"^patch\[''\]: keys must not be empty"),
        ({"a.b": 1}, r"^patch\['a.b'\]: keys must not contain '.'"),
        ({"$x": 1}, r"^patch\['\$x'\]: keys must not contain '\$'"),
        ({"$version": 1}, r"^patch\['\$version'\]: keys must not contain '\$'"),
        ({"a b": 1}, r"^patch\['a b'\]: keys must not contain ' '"),
        ({"a\tb": 1}, r"keys must not contain '\\t'"),
        ({"a\x7fb": 1}, r"keys must not contain '\\x7f'"),
        ({"a\x85b": 1}, r"keys must not contain '\\x85'"),
        ({"a": {"b": {"c.d": 1}}}, r"^patch\['a'\]\['b'\]\['c.d'\]: keys must not contain '.'"),
        ({"a": [0, {"x y": 1}]}, r"^patch\['a'\]\[1\]\['x y'\]: "),
        ({"k" * 1025: 1}, "keys must be at most 1024 bytes"),
        ({"é" * 513: 1}, "keys must be at most 1024 bytes"),
        ({1: 1}, r"^patch: key 1 is not a string"),
        ({"a": {2: 1}}, r"^patch\['a'\]: key 2 is not a string"),
        ({"s": "x" * 4097}, r"^patch\['s'\]: strings must be at most 4096 bytes"),
        ({"s": "é" * 2049}, r"^patch\['s'\]: strings must be at most 4096 bytes"),
        ({"s": "\ud800"}, r"^patch\['s'\]: not encodable as UTF-8"),
        ({"i": 2**52}, r"^patch\['i'\]: integers must be within"),
        ({"i": -(2**52) - 1}, r"^patch\['i'\]: integers must be within"),
        ({"f": float("nan")}, r"^patch\['f'\]: nan is not a JSON number"),
        ({"f": float("inf")}, r"^patch\['f'\]: inf is not a JSON number"),
        ({"t": (1, 2)}, r"^patch\['t'\]: tuple is not a JSON type"),
        ({"b": b"x"}, r"^patch\['b'\]: bytes is not a JSON type"),
        ({"s": {1, 2}}, r"^patch\['s'\]: set is not a JSON type"),
        ({"a": [object()]}, r"^patch\['a'\]\[0\]: object is not a JSON type"),
    ],
)
def test_invalid_patches_name_the_key_path(patch: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_patch(patch)


def test_string_and_key_limits_are_inclusive() -> None:
    validate_patch({"k" * 1024: "x" * 4096})
    validate_patch({"é" * 512: "é" * 2048})


def test_validate_patch_uses_the_given_argument_name() -> None:
    with pytest.raises(ValueError, match=r"^reported\['a'\]\['b c'\]: "):
        validate_patch({"a": {"b c": 1}}, argument="reported")


def test_validate_patch_rejects_non_mappings() -> None:
    with pytest.raises(TypeError, match=r"^patch: expected a mapping, got str"):
        validate_patch("x")  # type: ignore[arg-type]


@given(documents)
def test_generated_documents_are_valid(document: dict[str, Any]) -> None:
    validate_patch(document)


# --- validate_section_size ----------------------------------------------------------------------


def section_of_size(size: int) -> dict[str, Any]:
    # {"a":"..."} is 8 bytes of JSON around the value; spread the rest over several keys under 4 KiB.
    section: dict[str, Any] = {}
    remaining = size - 2  # the outer braces
    index = 0
    while remaining > 0:
        key = f"k{index:03d}"
        overhead = len(json.dumps(key)) + 3 + (1 if section else 0)  # "key":"" and a comma
        chunk = min(4000, remaining - overhead)
        section[key] = "x" * chunk
        remaining -= overhead + chunk
        index += 1
    return section


def compact_size(section: dict[str, Any]) -> int:
    return len(json.dumps(section, separators=(",", ":"), ensure_ascii=False).encode())


def test_section_size_limit_is_inclusive() -> None:
    exact = section_of_size(MAX_TWIN_SECTION_BYTES)
    assert compact_size(exact) == MAX_TWIN_SECTION_BYTES
    validate_section_size(exact, argument="reported")
    over = section_of_size(MAX_TWIN_SECTION_BYTES + 1)
    assert compact_size(over) == MAX_TWIN_SECTION_BYTES + 1
    with pytest.raises(ValueError, match=r"^reported: 32769 bytes of JSON exceed the 32768 byte limit"):
        validate_section_size(over, argument="reported")


def test_section_size_excludes_version_and_metadata() -> None:
    exact = section_of_size(MAX_TWIN_SECTION_BYTES)
    validate_section_size({**exact, "$version": 12, "$metadata": {"$lastUpdated": "x" * 1000}}, argument="desired")


def test_section_size_counts_utf8_bytes() -> None:
    with pytest.raises(ValueError, match=r"^desired: "):
        validate_section_size({f"k{i}": "é" * 2000 for i in range(9)}, argument="desired")


def test_section_size_rejects_non_json() -> None:
    with pytest.raises(ValueError, match=r"^desired: not representable as JSON"):
        validate_section_size({"x": object()}, argument="desired")
    with pytest.raises(ValueError, match=r"^desired: not representable as JSON"):
        validate_section_size({"x": float("nan")}, argument="desired")
    with pytest.raises(TypeError, match=r"^desired: expected a mapping"):
        validate_section_size([], argument="desired")  # type: ignore[arg-type]
