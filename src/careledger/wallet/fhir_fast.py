"""A fast FHIR check compiled from the fhir.resources R4B models: the common case in Python.

`surely_valid(resource, model)` answers True only for a resource that the R4B models accept
(pydantic, `model.model_validate`); on anything it is not sure of it answers False and the
caller asks the models, which decide and name the fields at fault. So the fast path can make
validation cheaper but never more permissive: whatever it lets through, the models would
have let through (tests/test_fhir_equivalence.py checks this on thousands of mutants).

What it checks is read from the models once per type, not written by hand: each field's JSON
name (extra fields are refused), its cardinality (a list or one value), its type (an element
model, recursively, or a primitive with the models' own patterns), the required fields, the
required primitives (`get_required_fields`), the choice groups (`value[x]`: at most one, one
when required) and the primitive extensions (`_field`, id or extension required).

It accepts only the plain JSON form of each value: a str for strings, codes, dates; an int
(not a bool) for integers; a bool for booleans; a dict for elements; a list for repeated
fields. The models' lenient coercions (``"5"`` for an integer, ``1`` for a boolean, a JSON
string for an element, nulls, empty lists, leap seconds, non-ASCII codes...) are left to
them: rare in real data, and the models know their own rules best.
"""

from __future__ import annotations

import datetime
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import fhir_core.constraints as fhir_constraints
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from fhir_core import types as fhir_types
from pydantic.fields import FieldInfo

Check = Callable[[Any], bool]

# The patterns below accept a subset of what the models' patterns accept (pydantic runs
# `pattern=` constraints with Rust's regex, unanchored; fhir_core's own date patterns with
# Python's `fullmatch`, reused as they are). ASCII only where Unicode classes could differ.
_STRING = re.compile(r"[ \r\n\t!-~]")  # search: one such character satisfies [ \r\n\t\S]+
_CODE = re.compile(r"[!-~]+(?: [!-~]+)*")  # fullmatch: within ^[^\s]+(\s[^\s]+)*$
_ID = re.compile(r"[A-Za-z0-9\-.]+")  # fullmatch: the models' ^[A-Za-z0-9\-.]+$
_OID = re.compile(r"urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_BASE64_TAIL = re.compile(r"[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=")
_TIME_TAIL = re.compile(r"T[0-9]{2}:[0-9]{2}:(?:[0-5][0-9])(?:\.[0-9]{1,6})?(?:Z|[+\-].{5})")
_CLOCK = re.compile(r"[0-9]{2}:[0-9]{2}:[0-5][0-9](?:\.[0-9]{1,6})?")
# A lone surrogate (a str from Python, or from a JSON parser that decodes "\ud800" escapes
# one by one) has no UTF-8 form: pydantic refuses such a str for every string type.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode(v: str) -> bool:
    """Whether the str is valid Unicode text (str.isascii answers at once for most)."""
    return v.isascii() or _SURROGATE.search(v) is None


def _string(v: Any) -> bool:
    return type(v) is str and _STRING.search(v) is not None and _unicode(v)


def _any_string(v: Any) -> bool:  # uri, url, canonical, markdown, xhtml: any text matches
    return type(v) is str and _unicode(v)


def _code(v: Any) -> bool:
    return type(v) is str and _CODE.fullmatch(v) is not None


def _id_check() -> Check:
    longest = fhir_constraints.TYPES_ID_MAX_LENGTH or 255
    pattern = getattr(fhir_constraints, "TYPES_ID_PATTERN", None)
    if pattern != r"^[A-Za-z0-9\-.]+$":  # patched by someone: let the models decide
        return _never

    def check(v: Any) -> bool:
        return type(v) is str and 0 < len(v) <= longest and _ID.fullmatch(v) is not None

    return check


def _oid(v: Any) -> bool:
    return type(v) is str and _OID.fullmatch(v) is not None


def _boolean(v: Any) -> bool:
    return type(v) is bool


def _integer(low: int, high: int) -> Check:
    def check(v: Any) -> bool:
        return type(v) is int and low <= v <= high

    return check


def _decimal(v: Any) -> bool:
    kind = type(v)
    return (kind is int or kind is float) and fhir_types.Decimal.pattern.fullmatch(
        str(v)
    ) is not None


def _base64(v: Any) -> bool:
    return type(v) is str and (
        _BASE64.fullmatch(v) is not None or _BASE64_TAIL.fullmatch(v) is not None
    )


def _valid_date(text: str) -> bool:
    try:
        datetime.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _date(v: Any) -> bool:
    if type(v) is not str or fhir_types.Date.pattern.fullmatch(v) is None:
        return False
    return len(v) < 10 or _valid_date(v)


def _date_time(v: Any) -> bool:
    if type(v) is not str or fhir_types.DateTime.pattern.fullmatch(v) is None:
        return False
    if len(v) < 10:
        return True  # a year or a year and month: the models keep the string
    return _valid_date(v) and (len(v) == 10 or _TIME_TAIL.fullmatch(v, 10) is not None)


def _instant(v: Any) -> bool:
    if type(v) is not str or fhir_types.Instant.pattern.fullmatch(v) is None:
        return False
    return _valid_date(v) and _TIME_TAIL.fullmatch(v, 10) is not None


def _time(v: Any) -> bool:
    return (
        type(v) is str
        and fhir_types.Time.pattern.fullmatch(v) is not None
        and _CLOCK.fullmatch(v) is not None
    )


def _never(v: Any) -> bool:
    return False


# Most specific first: Instant is a DateTime is a Date, PositiveInt an UnsignedInt an Integer.
_PRIMITIVES: list[tuple[type, Check]] = [
    (fhir_types.String, _string),
    (fhir_types.Code, _code),
    (fhir_types.Oid, _oid),
    (fhir_types.Canonical, _any_string),
    (fhir_types.Uri, _any_string),
    (fhir_types.Url, _any_string),
    (fhir_types.Markdown, _any_string),
    (fhir_types.Xhtml, _any_string),
    (fhir_types.Decimal, _decimal),
    (fhir_types.Base64Binary, _base64),
    (fhir_types.Instant, _instant),
    (fhir_types.DateTime, _date_time),
    (fhir_types.Date, _date),
    (fhir_types.Time, _time),
]


def _primitive_check(metadata: tuple[Any, ...]) -> Check:
    for item in metadata:
        if isinstance(item, fhir_types.PositiveInt):
            return _integer(1, item.max_length)
        if isinstance(item, fhir_types.UnsignedInt):
            return _integer(0, item.max_length)
        if isinstance(item, fhir_types.Integer):
            return _integer(item.min_length, item.max_length)
        if isinstance(item, fhir_types.Id):
            return _id_check()
        for kind, check in _PRIMITIVES:
            if isinstance(item, kind):
                return check
    return _never  # a primitive this module does not know (uuid, integer64): the models


class _Compiler:
    """Checks compiled per model class, once, on first use (types refer to each other and
    to themselves: Extension.extension)."""

    def __init__(self) -> None:
        self._checks: dict[type, Check] = {}
        self._resources: dict[type, Check] = {}

    def resource(self, model: type) -> Check:
        """The check of a resource of this model: its fields and its resourceType."""
        found = self._resources.get(model)
        if found is None:
            found = self._resources[model] = _resource_check(model, self.element(model))
        return found

    def element(self, model: type) -> Check:
        # Registered before its fields are filled in (a type may contain itself). Another
        # thread that sees it half-built only finds fewer fields, so it refuses more: a
        # check in the making is never more permissive than the finished one.
        found = self._checks.get(model)
        if found is None:
            fields: dict[str, Check] = {}
            found = _element_check(model, fields)
            self._checks[model] = found
            fields.update(self._fields_of(model))
        return found

    def _fields_of(self, model: type) -> dict[str, Check]:
        fields = {}
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            if name == "fhir_comments":
                continue  # a comment field: rare, left to the models
            fields[info.alias or name] = self._field_check(info)
        return fields

    def _field_check(self, info: FieldInfo) -> Check:
        kind = _without_none(info.annotation)
        if typing.get_origin(kind) is list:
            item = self._type_check(_without_none(typing.get_args(kind)[0]))
            return _list_of(item)
        return self._type_check(kind)

    def _type_check(self, kind: Any) -> Check:
        if kind is bool:
            return _boolean
        if typing.get_origin(kind) is typing.Annotated:
            return _primitive_check(kind.__metadata__)
        if isinstance(kind, type) and issubclass(kind, fhir_types.FhirElementOrResourceBase):
            return self._any_resource(kind)
        if isinstance(kind, type) and issubclass(kind, fhir_types.FhirBase):
            return self._lazy_element(kind)
        return _never

    def _lazy_element(self, kind: type[fhir_types.FhirBase]) -> Check:
        """An element's check, compiled when a value of it is first seen: compiling every
        type a resource could hold would import hundreds of models the data never uses."""
        compiled: Check | None = None

        def check(v: Any) -> bool:
            nonlocal compiled
            if compiled is None:
                compiled = self.element(kind.get_model_klass())
            return compiled(v)

        return check

    def _any_resource(self, kind: type[fhir_types.FhirBase]) -> Check:
        """A contained resource (Resource-typed fields): its own type's check."""
        if kind.get_model_klass().__name__ != "Resource":
            return _never

        def check(v: Any) -> bool:
            if type(v) is not dict:
                return False
            model = resource_model(v.get("resourceType"))
            return model is not None and self.resource(model)(v)

        return check


def _resource_check(model: type, element: Check) -> Check:
    name = model.__resource_type__  # type: ignore[attr-defined]

    def check(v: Any) -> bool:
        if type(v) is not dict or v.get("resourceType") != name:
            return False
        rest = dict(v)  # the element's fields, without the resource's type
        del rest["resourceType"]
        return element(rest)

    return check


def _element_check(model: type, fields: Mapping[str, Check]) -> Check:
    """The check of one element model: `fields` is filled in after (recursive types)."""
    required = tuple(
        info.alias or name
        for name, info in model.model_fields.items()  # type: ignore[attr-defined]
        if info.is_required()
    )
    required += tuple(_required_primitives(model))
    choices = _choice_groups(model)
    extension_like = model.__name__ == "FHIRPrimitiveExtension"

    def check(v: Any) -> bool:
        if type(v) is not dict:
            return False
        for key, value in v.items():
            field = fields.get(key)
            if field is None or not field(value):
                return False
        for key in required:
            if key not in v:
                return False
        for group, needed in choices:
            present = sum(1 for key in group if key in v)
            if present > 1 or (needed and present == 0):
                return False
        return not extension_like or "id" in v or "extension" in v

    return check


def _list_of(item: Check) -> Check:
    def check(v: Any) -> bool:
        if type(v) is not list or not v:
            return False  # an empty list: the models decide
        for value in v:  # noqa: SIM110 (a loop: no generator frame per list, the hot path)
            if not item(value):
                return False
        return True

    return check


def _without_none(kind: Any) -> Any:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return kind


def _required_primitives(model: type) -> list[str]:
    """Primitives of minimum cardinality 1 (a value, or an extension saying why none: the
    latter is left to the models)."""
    get = getattr(model, "get_required_fields", None)
    return [name for name, _ in get(None)] if get is not None else []


def _choice_groups(model: type) -> list[tuple[tuple[str, ...], bool]]:
    get = getattr(model, "get_one_of_many_fields", None)
    groups = get(None) if get is not None else {}
    compiled = []
    for names in groups.values():
        infos = [model.model_fields[name] for name in names]  # type: ignore[attr-defined]
        extra = infos[0].json_schema_extra
        needed = isinstance(extra, dict) and extra.get("one_of_many_required") is True
        compiled.append((tuple(i.alias or n for i, n in zip(infos, names, strict=True)), needed))
    return compiled


def resource_model(resource_type: Any) -> type | None:
    """The R4B model of a resource type, None for anything else (a data type, unknown)."""
    if not isinstance(resource_type, str):
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None
    if not isinstance(model, type) or not issubclass(model, FHIRResourceModel):
        return None
    return model


_COMPILER = _Compiler()

# The models validate recursively in Python: a resource nested past ~100-150 levels (contained
# in contained, extension in extension) exhausts the stack there and is refused ("nested too
# deeply"), at a depth that depends on the caller's own stack. This check's recursion would
# go deeper, so it leaves anything nested deeper than this (real data: about 10) to them.
MAX_SURE_DEPTH = 40


def surely_valid(resource: Any, model: type) -> bool:
    """True only if `model` (an R4B resource model) surely accepts `resource`."""
    return _nested_within(resource, MAX_SURE_DEPTH) and _COMPILER.resource(model)(resource)


def _nested_within(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest at most `limit` levels: level by level, no recursion."""
    level, depth = [value], 0
    while level:
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is dict:
                below.extend(item.values())
            elif kind is list:
                below.extend(item)
        if not below:
            return True
        depth += 1
        if depth > limit:
            return False
        level = [item for item in below if type(item) is dict or type(item) is list]
    return True
