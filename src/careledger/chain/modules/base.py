"""What a chain module is: its messages, their handlers, its genesis and its queries.

Each module lives in its own folder under `modules/` and exports one `Module`, the way a
Cosmos SDK module owns `x/<name>`. The application only dispatches; the rules are here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from careledger.chain.codes import Code, TxFailure
from careledger.chain.genesis import Genesis
from careledger.chain.state import KV, Overlay
from careledger.crypto.keys import KeyError_, check_ed25519_did


@dataclass(frozen=True)
class Event:
    """An event as consensus carries it (ABCI): a type and string attributes."""

    type: str
    attributes: dict[str, str]


E = TypeVar("E", bound="TypedEvent")


class TypedEvent:
    """A module's event as a frozen dataclass of `str` and `tuple[str, ...]` fields.

    The module that emits an event owns its class; everyone who reacts to it (node
    listeners, the wallet) decodes it with `from_event`, never by parsing attributes by hand.
    A tuple travels comma-joined (its items are hashes or dids, which hold no comma).
    """

    TYPE: ClassVar[str]

    def to_event(self) -> Event:
        attributes = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            attributes[name] = ",".join(value) if isinstance(value, tuple) else str(value)
        return Event(self.TYPE, attributes)

    @classmethod
    def from_attributes(cls: type[E], attributes: Mapping[str, str]) -> E:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            text = str(attributes.get(f.name, ""))
            values[f.name] = tuple(filter(None, text.split(","))) if _is_tuple(f) else text
        return cls(**values)

    @classmethod
    def from_event(cls: type[E], event: Event) -> E | None:
        """This event decoded, or None when it is another type."""
        return cls.from_attributes(event.attributes) if event.type == cls.TYPE else None

    @classmethod
    def from_json(cls: type[E], event: Mapping[str, Any]) -> E | None:
        """`from_event` for the JSON form the node API returns ({"type", "attributes"})."""
        if event.get("type") != cls.TYPE:
            return None
        return cls.from_attributes(event.get("attributes") or {})

    @classmethod
    def all_in(cls: type[E], events: Iterable[Event]) -> list[E]:
        return [typed for e in events if (typed := cls.from_event(e)) is not None]


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[TypedEvent]) -> tuple[str, ...]:
    """An event class's field names in order, looked up once per class (every transaction
    emits events: dataclasses.fields costs more than building the attributes)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return names


def _is_tuple(f: dataclasses.Field[Any]) -> bool:
    return str(f.type).startswith("tuple")


@dataclass(frozen=True)
class ValidatorUpdate:
    pub_key: bytes  # raw Ed25519
    power: int  # 0 removes the validator


@dataclass
class TxContext:
    """What a handler sees: the transaction's own state overlay, its sender and the block."""

    state: Overlay
    sender: str
    height: int
    time_ns: int
    events: list[Event] = field(default_factory=list)
    validator_updates: list[ValidatorUpdate] = field(default_factory=list)
    chain_id: str = ""  # for checking signatures over chain-bound bytes (vouchers, consents)
    # The transaction being executed: its SHA-256 (hex) and position in the block. Set in
    # finalize_block only; check_tx and genesis leave them empty (nothing they write keeps them).
    tx_hash: str = ""
    tx_index: int = 0
    # False in check_tx, which applies a registration to the mempool view and has no use for
    # its events (building one costs about 1 us, in every check and every recheck).
    keep_events: bool = True

    def kv(self, module: str) -> KV:
        return KV(self.state, module)

    @property
    def unix_seconds(self) -> int:
        """The block's time in whole unix seconds (consent periods are in seconds)."""
        return self.time_ns // 1_000_000_000

    def emit(self, event: TypedEvent) -> None:
        if self.keep_events:
            self.events.append(event.to_event())


M = TypeVar("M")


@dataclass(frozen=True)
class Message(Generic[M]):
    """One transaction type: how to parse its payload and how to apply it, and the rules
    version that brought it (a chain running older rules knows no such type)."""

    parse: Callable[[Payload], M]
    handle: Callable[[TxContext, M], None]
    since: int = 0


QueryHandler = Callable[[KV, "Payload"], Any]


@dataclass(frozen=True)
class Module:
    name: str
    messages: Mapping[str, Message[Any]]
    queries: Mapping[str, QueryHandler]
    init_genesis: Callable[[TxContext, Genesis], None]


def _is_decimal(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


class Payload:
    """Typed access to a transaction payload or query parameters; refuses unknown fields."""

    def __init__(self, data: Mapping[str, Any], code: Code = Code.INVALID_PAYLOAD) -> None:
        self._data = data
        self._code = code
        self._read: set[str] = set()

    def _fail(self, message: str) -> TxFailure:
        return TxFailure(self._code, message)

    def _take(self, name: str, optional: bool) -> Any:
        self._read.add(name)
        if name not in self._data:
            if optional:
                return None
            raise self._fail(f"missing field {name!r}")
        return self._data[name]

    def text(self, name: str, max_len: int = 256, optional: bool = False, min_len: int = 1) -> str:
        value = self._take(name, optional)
        if value is None and optional:
            return ""
        if not isinstance(value, str) or not min_len <= len(value) <= max_len:
            raise self._fail(f"{name!r} must be a string of {min_len} to {max_len} characters")
        return value

    def integer(
        self, name: str, minimum: int = 0, maximum: int = 2**53 - 1, digits: bool = False
    ) -> int:
        """An integer field; with `digits`, also its decimal string (a query parameter
        that came in a URL)."""
        value = self._take(name, False)
        if digits and isinstance(value, str) and _is_decimal(value):
            value = int(value)
        if type(value) is not int or not minimum <= value <= maximum:
            raise self._fail(f"{name!r} must be an integer in {minimum}..{maximum}")
        return value

    def text_list(
        self, name: str, max_items: int, max_len: int = 128, distinct: bool = True
    ) -> list[str]:
        """A list of 1 to max_items strings of 1 to max_len characters (distinct by default)."""
        values = self._take(name, False)
        if not isinstance(values, list) or not 1 <= len(values) <= max_items:
            raise self._fail(f"{name!r} must be a list of 1 to {max_items} strings")
        if not all(isinstance(v, str) and 0 < len(v) <= max_len for v in values):
            raise self._fail(f"{name!r} must hold strings of 1 to {max_len} characters")
        if distinct and len(set(values)) != len(values):
            raise self._fail(f"{name!r} has duplicates")
        return list(values)

    def hex_bytes(self, name: str, nbytes: int) -> str:
        value = self.text(name, max_len=2 * nbytes)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != nbytes or value != value.lower():
            raise self._fail(f"{name!r} must be {nbytes} bytes in lowercase hex")
        return value

    def boolean(self, name: str) -> bool:
        value = self._take(name, False)
        if not isinstance(value, bool):
            raise self._fail(f"{name!r} must be true or false")
        return value

    def did(self, name: str) -> str:
        return self._checked_did(name, self.text(name, max_len=128))

    def did_list(self, name: str, max_items: int) -> list[str]:
        """A list of 1 to max_items distinct Ed25519 did:keys."""
        return [self._checked_did(name, did) for did in self.text_list(name, max_items)]

    def _checked_did(self, name: str, value: str) -> str:
        try:
            check_ed25519_did(value)
        except KeyError_ as exc:
            raise self._fail(f"{name!r}: {exc}") from None
        return value

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.text(name)
        if value not in options:
            raise self._fail(f"{name!r} must be one of {', '.join(options)}")
        return value

    def nested(self, name: str) -> Payload:
        """A field that is itself an object, as a Payload with the same error code."""
        value = self._take(name, False)
        if not isinstance(value, dict):
            raise self._fail(f"{name!r} must be an object")
        return Payload(value, self._code)

    def objects(self, name: str, max_items: int, min_items: int = 0) -> list[Payload]:
        """A list of min_items to max_items objects, each as a Payload with the same code."""
        values = self._take(name, False)
        if not isinstance(values, list) or not min_items <= len(values) <= max_items:
            raise self._fail(f"{name!r} must be a list of {min_items} to {max_items} objects")
        if not all(isinstance(v, dict) for v in values):
            raise self._fail(f"{name!r} must hold objects")
        return [Payload(v, self._code) for v in values]

    def has(self, name: str) -> bool:
        return name in self._data

    def whole(self) -> Mapping[str, Any]:
        """The whole payload, every field counted as read: for a message whose format has
        its own codec (an audit batch), which checks the fields itself."""
        self._read.update(self._data)
        return self._data

    def done(self) -> None:
        """Fail when the payload has fields the message does not define."""
        if self._read.issuperset(self._data):  # the usual case, without building a set
            return
        extra = set(self._data) - self._read
        if extra:
            raise self._fail(f"unknown field(s): {', '.join(sorted(extra))}")
