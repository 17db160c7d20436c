"""The parameter forms a deployment shows a person in the Prefect UI.

Prefect draws a deployment's Run form from the flow's signature. A flow's Python signature
also carries internals a person must not be offered (`plan`, `resume`, `approve_in`: a
worker's terminal has nobody at it), and plain names with no words. Each flow therefore
declares its form as a pydantic model (titles, descriptions, defaults), and `offer_form`
makes that the signature Prefect reads (`inspect.signature` honours `__signature__`), while
calls from Python still take every parameter (Prefect binds calls against `flow.fn`).
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import Flow
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from foreman.engine.params import Param
from foreman.engine.workflow import Workflow

PYTHON_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _as_default(field: FieldInfo) -> FieldInfo:
    """The field as Prefect reads a parameter default: its description, and its title in the extra."""
    extra = dict(field.json_schema_extra) if isinstance(field.json_schema_extra, dict) else {}
    if field.title:
        extra["title"] = field.title
    return Field(default=field.default, description=field.description, json_schema_extra=extra)


def form_signature(flow: Flow, form: type[BaseModel], *, same_defaults: bool = True) -> inspect.Signature:
    """The signature Prefect shows: the form's fields, in its order, checked against the flow's.

    Every form field must be a flow parameter (with the same default, unless the form fills
    one in on purpose), and every parameter left out must have a default, so a run started
    from the form is a valid call."""
    full = inspect.signature(flow.fn)
    missing = [n for n in form.model_fields if n not in full.parameters]
    hidden_required = [n for n, p in full.parameters.items()
                       if n not in form.model_fields and p.default is inspect.Parameter.empty]
    drift = [n for n, f in form.model_fields.items()
             if same_defaults and n in full.parameters and not f.is_required()
             and full.parameters[n].default != f.default]
    if missing or hidden_required or drift:
        raise TypeError(f"form {form.__name__} does not match flow {flow.name}: not parameters {missing}, "
                        f"required but hidden {hidden_required}, defaults differ {drift}")
    return inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=field.annotation,
                          default=_as_default(field) if not field.is_required()
                          else Field(description=field.description,
                                     json_schema_extra={"title": field.title} if field.title else None))
        for name, field in form.model_fields.items()
    ])


def offer_form(flow: Flow, form: type[BaseModel], *, same_defaults: bool = True) -> Flow:
    """Make `form` the deployment form of `flow` (`prefect deploy`, `to_deployment`, `serve`)."""
    flow.__signature__ = form_signature(flow, form, same_defaults=same_defaults)  # type: ignore[attr-defined]
    flow.parameters = parameter_schema(flow)
    return flow


def params_model(workflow: Workflow) -> type[BaseModel]:
    """The workflow file's `params:` block as a model: one typed field per param, with its default."""
    fields: dict[str, Any] = {name: (PYTHON_TYPES[p.type], _param_field(name, p)) for name, p in workflow.params.items()}
    title = f"Parameters of {workflow.name}"
    return create_model(f"{workflow.name.replace('-', '_')}_params", __config__=ConfigDict(title=title), **fields)


def _param_field(name: str, param: Param) -> Any:
    title = name.replace("_", " ").capitalize()
    if param.required:
        return Field(title=title, description=param.description or None)
    return Field(default=param.default, title=title, description=param.description or None)


def workflow_form(workflow: Workflow, base: type[BaseModel], path: str) -> type[BaseModel]:
    """The run-workflow form for one file: its path fixed, its `params:` as typed fields."""
    fields: dict[str, Any] = {
        "path": (str, Field(default=path, title="Workflow file", description=f"This deployment runs {path}.",
                            json_schema_extra={"readOnly": True})),
    }
    if workflow.params:
        model = params_model(workflow)
        required = any(p.required for p in workflow.params.values())
        fields["params"] = (model, Field(
            title="Workflow parameters", description=f"The params: block of {workflow.path.name}, each typed.",
            **({} if required else {"default": model()})))
    return create_model(f"{base.__name__}_{workflow.name.replace('-', '_')}", __base__=base, **fields)
