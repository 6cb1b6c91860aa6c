"""The base of every settings class (model, train, data, study, a variant's options)."""

from __future__ import annotations

import types
import typing

import pydantic


class Settings(pydantic.BaseModel):
    """Settings read from YAML: a yes/no is never taken for a number. YAML reads `yes`, `on`
    and `true` as true, which pydantic would turn into 1 (`steps: yes` would train one step)."""

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_numbers(cls, value, info: pydantic.ValidationInfo):
        if isinstance(value, bool) and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is a yes/no (YAML reads yes, on and true as true), not a number")
        return value


def _is_number(annotation) -> bool:
    """An int or float field (optionally None), not one that also takes a yes/no."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_number(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        return bool(members) and all(_is_number(member) for member in members)
    return annotation in (int, float)
