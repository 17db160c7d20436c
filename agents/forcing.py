"""Forced, grammar-constrained tool calls for models whose chat template knows no tools.

Small local models (SmolLM2-135M and most GGUF chat templates) ignore the OpenAI
`tools` field, and llama.cpp's `tool_choice` "auto"/"required" fail for them. What does
work reliably is structured output: a `response_format` JSON schema whose `name` is one
of the bound tool names and whose `arguments` is that tool's parameter schema. The
grammar then makes every answer a well-formed tool call.

This module is the one place that forcing lives, as pure functions:

* `forced_response_format(tools)` builds the `response_format` from OpenAI tool dicts.
* `parse_forced_output(text, tool_names)` turns the model's text back into a tool call,
  or an error the caller can report as a LangChain `invalid_tool_call`.

Unbounded arrays and strings are capped because a tiny model inside a grammar that
allows "one more item" forever will happily emit items until `max_tokens`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from foreman.errors import ForcingError

# Caps added to schemas that set none. Generous enough for real answers, small
# enough that a looping model stops within a few hundred tokens.
DEFAULT_MAX_ITEMS = 10
DEFAULT_MAX_STRING_LENGTH = 1000

# Schema keys whose presence already bounds a string.
_BOUNDED_STRING_KEYS = ("enum", "const", "maxLength", "pattern", "format")




class ToolCallParse(BaseModel):
    """The model's forced output read back as a tool call, or why it could not be."""

    name: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.name is not None


def tool_name(tool: dict[str, Any]) -> str:
    """The name of an OpenAI-format tool (`{"type": "function", "function": {...}}`)."""
    function = tool.get("function", tool)
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise ForcingError(f"Tool has no function name: {json.dumps(tool)[:200]}")
    return name


def forced_response_format(
    tools: list[dict[str, Any]],
    *,
    max_items: int | None = DEFAULT_MAX_ITEMS,
    max_string_length: int | None = DEFAULT_MAX_STRING_LENGTH,
) -> dict[str, Any]:
    """An OpenAI `response_format` that forces exactly one call to one of `tools`.

    The schema is `{"name": <const>, "arguments": <parameters>}` per tool (`anyOf` when
    there are several). Each tool's `$defs` are lifted to the top level, renamed when two
    tools define the same name differently, because `$ref` only resolves from the root.
    """
    if not tools:
        raise ForcingError("Forcing needs at least one tool.")
    defs: dict[str, Any] = {}
    variants: list[dict[str, Any]] = []
    for tool in tools:
        name = tool_name(tool)
        function = tool.get("function", tool)
        params = copy.deepcopy(function.get("parameters") or {"type": "object", "properties": {}})
        params = _lift_defs(params, name, defs)
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if defs:
        schema = {**schema, "$defs": defs}
    schema = _cap(schema, max_items=max_items, max_string_length=max_string_length)
    return {
        "type": "json_schema",
        "json_schema": {"name": "tool_call", "strict": True, "schema": schema},
    }


def _lift_defs(params: dict[str, Any], tool: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move `params`' `$defs`/`definitions` into `defs`, renaming on conflict."""
    local: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        local.update(params.pop(key, None) or {})
    if not local:
        return params
    renames: dict[str, str] = {}
    for def_name, def_schema in local.items():
        new_name = def_name
        if def_name in defs and defs[def_name] != def_schema:
            new_name = f"{tool}__{def_name}"
        renames[def_name] = new_name
    rewritten = _rewrite_refs({"params": params, "defs": local}, renames)
    for def_name, def_schema in rewritten["defs"].items():
        defs[renames[def_name]] = def_schema
    return rewritten["params"]


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                match = re.fullmatch(r"#/(?:\$defs|definitions)/(.+)", value)
                if match:
                    value = f"#/$defs/{renames.get(match.group(1), match.group(1))}"
            out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _cap(node: Any, *, max_items: int | None, max_string_length: int | None) -> Any:
    """Bound arrays and free strings; close objects that list their properties."""
    if isinstance(node, list):
        return [_cap(n, max_items=max_items, max_string_length=max_string_length) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: (
            value
            if key in ("enum", "const", "default", "examples", "required")
            else _cap(value, max_items=max_items, max_string_length=max_string_length)
        )
        for key, value in node.items()
    }
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "array" in types and max_items is not None and "maxItems" not in out:
        out["maxItems"] = max(max_items, out.get("minItems", 0))
    if (
        "string" in types
        and max_string_length is not None
        and not any(k in out for k in _BOUNDED_STRING_KEYS)
    ):
        out["maxLength"] = max(max_string_length, out.get("minLength", 0))
    if "object" in types and "properties" in out and "additionalProperties" not in out:
        # Extra keys only give a small model room to wander.
        out["additionalProperties"] = False
    return out


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_TOOL_TAG = re.compile(r"</?tool_call>")


def parse_forced_output(text: str, tool_names: Iterable[str]) -> ToolCallParse:
    """Read `{"name": ..., "arguments": {...}}` from the model's text.

    Never raises: invalid JSON, a missing or unknown name, or non-object arguments give
    a `ToolCallParse` with `error` set, so the caller can surface an invalid tool call
    (and the agent framework its own retry) instead of crashing.
    """
    names = list(tool_names)
    raw = text or ""
    cleaned = _TOOL_TAG.sub("", _FENCE.sub("", raw.strip())).strip()
    try:
        data = json.loads(cleaned)
    except json.JSONDecodeError as exc:
        return ToolCallParse(raw=raw, error=f"Model output is not valid JSON ({exc.msg}).")
    if not isinstance(data, dict):
        return ToolCallParse(raw=raw, error="Model output is JSON but not an object.")
    name = data.get("name")
    if not isinstance(name, str) or name not in names:
        return ToolCallParse(
            raw=raw,
            name=name if isinstance(name, str) else None,
            error=f"Unknown tool {name!r}; expected one of {names}.",
        )
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):  # some models double-encode
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolCallParse(
                raw=raw, name=name, error=f"Arguments are not valid JSON ({exc.msg})."
            )
    if not isinstance(args, dict):
        return ToolCallParse(raw=raw, name=name, error="Arguments are not a JSON object.")
    return ToolCallParse(raw=raw, name=name, args=args)
