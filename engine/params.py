"""Workflow parameters: what a run may change without editing the file (a topic, a folder, a limit).

    params:
      topic: backups                               # a default; its type (str) comes from it
      threshold: {type: int, default: 80, description: Disk use that raises an alert}
      target: {type: str}                          # no default: every run must give it

Steps use them as `${name}` in titles, instructions, script args and env values, and in
conditions (where a value becomes a literal: `disk.percent > ${threshold}`). Scripts also
get all of them as JSON in FOREMAN_PARAMS. `$${` writes a literal `${`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter, ValidationError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
PLACEHOLDER = re.compile(r"\$(\$?)\{([^}]*)\}")
TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
ParamType = Literal["str", "int", "float", "bool"]


class Param(BaseModel):
    """One declared parameter. Without a default it is required."""

    type: ParamType = "str"
    default: str | int | float | bool | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def coerce(self, value: Any) -> Any:
        """The value as this parameter's type ("7" -> 7 for an int), or ValueError saying why."""
        if self.type == "str" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # a number typed into a text field is still text
        try:
            return TypeAdapter(TYPES[self.type]).validate_python(value, strict=False)
        except ValidationError as exc:
            raise ValueError(f"{value!r} is not a valid {self.type}: {exc.errors()[0]['msg']}") from None


def declare(raw: Mapping[str, Any]) -> tuple[dict[str, Param], list[str]]:
    """Read the file's `params:` block; a scalar is shorthand for its default. Returns (params, errors)."""
    params: dict[str, Param] = {}
    errors: list[str] = []
    for name, spec in raw.items():
        where = f"params.{name}"
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            errors.append(f"{where}: a parameter name is snake_case, starting with a letter")
            continue
        if isinstance(spec, dict):
            try:
                param = Param.model_validate(spec)
            except ValidationError as exc:
                errors.extend(f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                continue
        elif isinstance(spec, str | int | float | bool):
            param = Param(type=type(spec).__name__, default=spec)  # type: ignore[arg-type]
        else:
            errors.append(f"{where}: give a default value (str, int, float or bool) or "
                          "{type: ..., default: ..., description: ...}")
            continue
        if param.default is not None:
            try:
                param = param.model_copy(update={"default": param.coerce(param.default)})
            except ValueError as exc:
                errors.append(f"{where}.default: {exc}")
                continue
        params[name] = param
    return params, errors


def resolve(params: Mapping[str, Param], given: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The values for one run: given ones coerced to their types, defaults for the rest."""
    given = dict(given or {})
    values: dict[str, Any] = {}
    errors = [f"params.{name}: this workflow has no parameter {name!r}; it has: {', '.join(params) or 'none'}"
              for name in given if name not in params]
    for name, param in params.items():
        if name in given:
            try:
                values[name] = param.coerce(given[name])
            except ValueError as exc:
                errors.append(f"params.{name}: {exc}")
        elif param.required:
            errors.append(f"params.{name}: required; give it with `--param {name}=VALUE` or in the run's "
                          "`params` (the form in the Prefect UI)")
        else:
            values[name] = param.default
    return values, errors


def substitute(text: str, values: Mapping[str, Any], *, literal: bool = False,
               declared: Collection[str] = ()) -> tuple[str, list[str]]:
    """Replace `${name}` with its value (as a JSON literal when `literal`, for conditions).

    A `declared` name without a value (its value was refused, and said so) is left as is."""
    unknown: list[str] = []

    def one(match: re.Match[str]) -> str:
        escaped, name = match.group(1), match.group(2)
        if escaped:
            return "${" + name + "}"
        if name not in values:
            if name not in declared:
                unknown.append(name)
            return match.group(0)
        value = values[name]
        return json.dumps(value) if literal else str(value)

    out = PLACEHOLDER.sub(one, text)
    known = ", ".join(sorted({*values, *declared})) or "none declared (add a params: block)"
    return out, [f"unknown parameter ${{{name}}}; known: {known}" for name in unknown]
