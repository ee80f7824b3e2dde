"""Telemetry payload templates: text with ``$.Name`` placeholders filled in for every message.

A template is any text, usually JSON; each ``$.Name`` in it is replaced by the value of the
variable ``Name`` for the device and message being sent. Strings are inserted as they are (put
quotes around the placeholder in a JSON template), numbers and booleans as JSON literals, so
``{"id": "$.DeviceId", "t": $.Temperature}`` renders to valid JSON.

Built-in variables: ``DeviceId``, ``Time`` (UTC, ISO 8601 with milliseconds), ``Epoch`` (Unix
seconds), ``Counter`` (the device's message number, from 1), ``Random`` (a float in [0, 1)) and
``Guid`` (a new UUID4 per message). Other variables are declared the way the Azure IoT Telemetry
Simulator declares them::

    [{"name": "Temperature", "random": true, "min": 20, "max": 30},   # random number in the range
     {"name": "Level", "min": 0, "max": 100, "step": 5},              # 0, 5, ... 100, 0, ... per device
     {"name": "Engine", "values": ["on", "off"]},                     # on, off, on, ... per device
     {"name": "Mode", "values": ["eco", "fast"], "random": true}]      # a random pick each time
"""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any, Final

__all__ = ["BUILT_IN_VARIABLES", "DEFAULT_TEMPLATE", "DEFAULT_VARIABLES", "PayloadTemplate", "Variable"]

BUILT_IN_VARIABLES: Final = ("DeviceId", "Time", "Epoch", "Counter", "Random", "Guid")

DEFAULT_TEMPLATE: Final = (
    '{"deviceId": "$.DeviceId", "time": "$.Time", "counter": $.Counter, '
    '"temperature": $.Temperature, "humidity": $.Humidity}'
)
DEFAULT_VARIABLES: Final = (
    '[{"name": "Temperature", "random": true, "min": 18.0, "max": 28.0},'
    ' {"name": "Humidity", "random": true, "min": 30, "max": 70}]'
)

_PLACEHOLDER: Final = re.compile(r"\$\.([A-Za-z_][A-Za-z0-9_]*)")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VARIABLE_KEYS: Final = frozenset({"name", "random", "min", "max", "step", "values"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _literal(value: Any) -> str:
    """How a value appears in the rendered text: strings raw, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(round(value, 3))
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Variable:
    """One declared template variable (see the module docstring for the forms).

    Attributes:
        name: the name used as ``$.name`` in the template.
        random: pick a random value (in ``[minimum, maximum]`` or from ``values``) for each message.
        minimum: lower bound of a range (and the first value of a sequence).
        maximum: upper bound of a range (a sequence wraps back to ``minimum`` past it).
        step: sequence increment per message (default 1).
        values: a list of values, taken in turn or at random.
    """

    name: str
    random: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    values: tuple[Any, ...] | None = None

    @classmethod
    def from_json(cls, declaration: object) -> Variable:
        """Build a variable from its JSON declaration; raise ``ValueError`` naming what is wrong."""
        if not isinstance(declaration, dict):
            raise ValueError(f"variables: each variable must be a JSON object, not {declaration!r}")
        unknown = set(declaration) - _VARIABLE_KEYS
        if unknown:
            raise ValueError(f"variables: unknown keys {sorted(unknown)} (allowed: {sorted(_VARIABLE_KEYS)})")
        name = declaration.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"variables: 'name' must be a letter or '_' followed by letters, digits, '_': {name!r}")
        if name in BUILT_IN_VARIABLES:
            raise ValueError(f"variables: {name!r} is a built-in variable")
        randomly = declaration.get("random", False)
        if not isinstance(randomly, bool):
            raise ValueError(f"variables: {name}: 'random' must be true or false")
        minimum, maximum, step = declaration.get("min"), declaration.get("max"), declaration.get("step")
        values = declaration.get("values")
        if values is not None:
            if not isinstance(values, list) or not values:
                raise ValueError(f"variables: {name}: 'values' must be a non-empty list")
            if minimum is not None or maximum is not None or step is not None:
                raise ValueError(f"variables: {name}: give either 'values' or 'min'/'max'/'step', not both")
            return cls(name, randomly, values=tuple(values))
        for key, value in (("min", minimum), ("max", maximum), ("step", step)):
            if value is not None and not _is_number(value):
                raise ValueError(f"variables: {name}: {key!r} must be a number, not {value!r}")
        if minimum is None or maximum is None:
            raise ValueError(f"variables: {name}: give 'min' and 'max', or 'values'")
        if minimum > maximum:
            raise ValueError(f"variables: {name}: 'min' is greater than 'max'")
        if step is not None and (randomly or step <= 0):
            raise ValueError(f"variables: {name}: 'step' must be positive and is only for sequences (random: false)")
        return cls(name, randomly, float(minimum) if isinstance(minimum, float) else minimum,
                   float(maximum) if isinstance(maximum, float) else maximum, step)

    def value(self, position: int, generator: Random) -> Any:
        """The value for a device's ``position``-th message (counted from 0)."""
        if self.values is not None:
            if self.random:
                return generator.choice(self.values)
            return self.values[position % len(self.values)]
        assert self.minimum is not None
        assert self.maximum is not None
        if self.random:
            if all(isinstance(bound, int) for bound in (self.minimum, self.maximum)):
                return generator.randint(int(self.minimum), int(self.maximum))
            return generator.uniform(self.minimum, self.maximum)
        step = self.step if self.step is not None else 1
        count = int((self.maximum - self.minimum) // step) + 1
        return self.minimum + (position % count) * step


class PayloadTemplate:
    """A compiled template: :meth:`render` gives the text of one message.

    Example:
        >>> template = PayloadTemplate('{"id": "$.DeviceId", "n": $.Counter, "level": $.Level}',
        ...                            '[{"name": "Level", "min": 0, "max": 10, "step": 5}]')
        >>> [template.render("sim-1", n) for n in (1, 2, 3, 4)]  # doctest: +NORMALIZE_WHITESPACE
        ['{"id": "sim-1", "n": 1, "level": 0}', '{"id": "sim-1", "n": 2, "level": 5}',
         '{"id": "sim-1", "n": 3, "level": 10}', '{"id": "sim-1", "n": 4, "level": 0}']

    Args:
        text: the template text.
        variables: the declared variables, as JSON text or already decoded.
        seed: seed of the random values (for reproducible payloads).

    Raises:
        ValueError: the template names an undeclared variable, or a declaration is malformed.
    """

    def __init__(
        self, text: str, variables: str | Sequence[Mapping[str, Any]] = "[]", *, seed: int | None = None
    ) -> None:
        if not isinstance(text, str) or not text:
            raise ValueError("template must be a non-empty string")
        if isinstance(variables, str):
            try:
                declarations = json.loads(variables)
            except json.JSONDecodeError as exc:
                raise ValueError(f"variables must be a JSON list: {exc}") from None
        else:
            declarations = list(variables)
        if not isinstance(declarations, list):
            raise ValueError("variables must be a JSON list of objects")
        declared = [Variable.from_json(dict(item) if isinstance(item, Mapping) else item) for item in declarations]
        self._variables = {variable.name: variable for variable in declared}
        if len(self._variables) != len(declared):
            raise ValueError("variables: a name is declared twice")
        # Split once: even positions are literal text, odd positions are variable names.
        self._parts = _PLACEHOLDER.split(text)
        used = set(self._parts[1::2])
        unknown = used - set(BUILT_IN_VARIABLES) - set(self._variables)
        if unknown:
            names = ", ".join(f"$.{name}" for name in sorted(unknown))
            raise ValueError(f"template uses undeclared variables: {names}")
        self.text = text
        self._random = Random(seed)

    @property
    def variable_names(self) -> Iterable[str]:
        """The names of the declared variables."""
        return self._variables.keys()

    def render(self, device_id: str, counter: int) -> str:
        """The message text for ``device_id``'s message number ``counter`` (from 1)."""
        parts = self._parts
        pieces = [parts[0]]
        for index in range(1, len(parts), 2):
            pieces.append(_literal(self._value(parts[index], device_id, counter)))
            pieces.append(parts[index + 1])
        return "".join(pieces)

    def _value(self, name: str, device_id: str, counter: int) -> Any:
        if name == "DeviceId":
            return device_id
        if name == "Counter":
            return counter
        if name == "Time":
            now = datetime.datetime.now(datetime.UTC)
            return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if name == "Epoch":
            return int(time.time())
        if name == "Random":
            return self._random.random()
        if name == "Guid":
            return str(uuid.uuid4())
        return self._variables[name].value(counter - 1, self._random)
