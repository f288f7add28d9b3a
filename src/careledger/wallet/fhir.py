"""FHIR resources: validation with ``fhir.resources.R4B`` and Synthea bundle helpers.

Validation first asks a check compiled from the same models (wallet/fhir_fast.py), which
accepts the common case quickly and is never more permissive than the models; whatever it is
not sure of, the models themselves decide (and name the fields at fault).

The R4B models accept R4 data, except the few resource types that exist only in R4
(MedicinalProduct family, SubstanceSpecification, Effect/RiskEvidenceSynthesis); those are
rejected as unknown types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.fhirresourcemodel import FHIRResourceModel
from pydantic import ValidationError

from careledger.wallet.fhir_fast import surely_valid

# Fields through which a resource names the patient it is about, in the order they are tried
# (subject: most clinical resources; patient: Claim, Immunization, AllergyIntolerance...;
# beneficiary: Coverage).
PATIENT_REFERENCE_FIELDS = ("subject", "patient", "beneficiary")
_MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. "Observation.component[0].code.text"
    message: str


class InvalidResource(ValueError):
    """A resource that does not validate; ``errors`` lists each field at fault."""

    def __init__(self, summary: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors = tuple(errors)
        lines = [summary] + [f"  {e.path}: {e.message}" for e in self.errors]
        super().__init__("\n".join(lines))


def validate_resource(obj: Mapping[str, Any]) -> None:
    """Raise InvalidResource unless ``obj`` is a valid FHIR resource of a known type."""
    resource_type = _resource_type_of(obj)
    model = model_class(resource_type)
    try:
        if surely_valid(obj, model):
            return
    except RecursionError:
        pass  # deeper than this check's recursion: the models decide (and refuse, below)
    validate_with_models(obj, model)


def validate_with_models(obj: Mapping[str, Any], model: Any) -> None:
    """The models' own validation (pydantic): the reference, and the errors' source."""
    resource_type = model.__resource_type__
    try:
        model.model_validate(obj)
    except ValidationError as exc:
        errors = [_field_error(resource_type, e) for e in exc.errors()]
        shown = errors[:_MAX_REPORTED_ERRORS]
        more = f" (first {len(shown)} shown)" if len(errors) > len(shown) else ""
        raise InvalidResource(
            f"invalid {resource_type}: {len(errors)} validation error(s){more}", shown
        ) from None
    except RecursionError:
        raise InvalidResource(f"invalid {resource_type}: nested too deeply") from None
    except (TypeError, KeyError, AttributeError) as exc:
        # fhir_core's own validators fail this way on some wrong JSON types (a number for a
        # url, a contained resource of no known type): bad input all the same, refused.
        raise InvalidResource(
            f"invalid {resource_type}: a value of the wrong kind ({type(exc).__name__})"
        ) from None


def _resource_type_of(obj: Mapping[str, Any]) -> str:
    if not isinstance(obj, Mapping):
        raise InvalidResource(f"a FHIR resource is a JSON object, not {type(obj).__name__}")
    resource_type = obj.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource(
            "not a FHIR resource: resourceType is missing",
            [FieldError("resourceType", "required: the name of the resource type")],
        )
    return resource_type


@lru_cache(maxsize=256)
def model_class(resource_type: str) -> Any:
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        model = None
    # get_fhir_model_class also knows data types (e.g. "HumanName"): only resources qualify.
    if model is None or not issubclass(model, FHIRResourceModel):
        raise InvalidResource(
            f"unknown resource type {resource_type!r} (not a FHIR R4B resource)",
            [FieldError("resourceType", f"{resource_type!r} is not a FHIR resource type")],
        )
    return model


def _field_error(resource_type: str, error: Mapping[str, Any]) -> FieldError:
    path = resource_type
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = str(error.get("msg", "invalid"))
    if error.get("type") not in ("missing", "extra_forbidden") and "input" in error:
        message += f" (got {_short(error['input'])})"
    return FieldError(path, message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- transaction bundles ------------------------------------------------------------------


@dataclass(frozen=True)
class BundleEntry:
    full_url: str | None  # "urn:uuid:..." in Synthea bundles
    resource: dict[str, Any]
    method: str | None  # request.method of a transaction entry


def iter_bundle_entries(bundle: Mapping[str, Any]) -> Iterator[BundleEntry]:
    """Every entry of a Bundle that carries a resource, in bundle order."""
    if bundle.get("resourceType") != "Bundle":
        raise InvalidResource("not a Bundle", [FieldError("resourceType", "must be 'Bundle'")])
    for index, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, dict):
            raise InvalidResource(
                "bundle entry without a resource",
                [FieldError(f"Bundle.entry[{index}].resource", "required")],
            )
        request = entry.get("request")
        method = request.get("method") if isinstance(request, Mapping) else None
        yield BundleEntry(entry.get("fullUrl"), resource, method)


def patient_reference(resource: Mapping[str, Any]) -> str | None:
    """The reference string by which a resource names its patient, if it names one."""
    for name in PATIENT_REFERENCE_FIELDS:
        value = resource.get(name)
        if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
            return str(value["reference"])
    return None


@dataclass
class PatientRecords:
    """One Patient of a bundle and the entries that belong to it."""

    patient: BundleEntry
    entries: list[BundleEntry] = field(default_factory=list)


class BundleIndex:
    """Resolves references inside one bundle: ``urn:uuid:`` full URLs and ``Type/id``."""

    def __init__(self, entries: Sequence[BundleEntry]) -> None:
        self.entries = list(entries)
        self._by_reference: dict[str, BundleEntry] = {}
        for entry in self.entries:
            for key in _names_of(entry):
                self._by_reference[key] = entry

    @classmethod
    def of(cls, bundle: Mapping[str, Any]) -> BundleIndex:
        return cls(list(iter_bundle_entries(bundle)))

    def resolve(self, reference: str) -> BundleEntry | None:
        """The entry a reference points to (ignoring a ``/_history/n`` suffix), or None."""
        reference = reference.split("/_history/", 1)[0]
        found = self._by_reference.get(reference)
        if found is None and reference.count("/") >= 2:  # absolute URL: keep "Type/id"
            found = self._by_reference.get("/".join(reference.rsplit("/", 2)[-2:]))
        return found

    def patient_of(self, resource: Mapping[str, Any]) -> BundleEntry | None:
        """The Patient entry a resource belongs to (a Patient belongs to itself)."""
        if resource.get("resourceType") == "Patient":
            return self.resolve(f"Patient/{resource.get('id')}")
        reference = patient_reference(resource)
        target = self.resolve(reference) if reference else None
        if target is None or target.resource.get("resourceType") != "Patient":
            return None
        return target

    def split_by_patient(self) -> tuple[list[PatientRecords], list[BundleEntry]]:
        """Each Patient with its entries, and the entries of no patient (Organization...)."""
        groups: dict[int, PatientRecords] = {}
        unowned: list[BundleEntry] = []
        for entry in self.entries:
            is_patient = entry.resource.get("resourceType") == "Patient"
            patient = entry if is_patient else self.patient_of(entry.resource)
            if patient is None:
                unowned.append(entry)
            elif patient is entry:
                groups.setdefault(id(patient), PatientRecords(patient))
            else:
                groups.setdefault(id(patient), PatientRecords(patient)).entries.append(entry)
        return list(groups.values()), unowned

    def local_references(self, resource: Any) -> Any:
        """A copy of ``resource`` with bundle-internal ``urn:uuid:`` references as Type/id,
        the way a FHIR server rewrites a transaction's references when it stores it."""
        if isinstance(resource, dict):
            return {k: self._rewrite(k, v) for k, v in resource.items()}
        if isinstance(resource, list):
            return [self.local_references(v) for v in resource]
        return resource

    def _rewrite(self, key: str, value: Any) -> Any:
        if key == "reference" and isinstance(value, str) and value.startswith("urn:uuid:"):
            target = self._by_reference.get(value)
            if target is not None:
                return f"{target.resource['resourceType']}/{target.resource.get('id')}"
        return self.local_references(value)


def _names_of(entry: BundleEntry) -> list[str]:
    names = [entry.full_url] if entry.full_url else []
    resource_id = entry.resource.get("id")
    if isinstance(resource_id, str):
        names.append(f"{entry.resource.get('resourceType')}/{resource_id}")
    return names
