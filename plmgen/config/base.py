"""What every config shares: the dict/YAML round trip (``YamlConfig``) and ``check``, the one validation helper."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, TypeVar

import yaml

from ..errors import UserError
from ..files import atomic_write_text

C = TypeVar("C", bound="YamlConfig")


def check(cond: bool, cls: str, msg: str) -> None:
    """Raise ``UserError`` (a ValueError: the CLI prints it as one ``error:`` line) ``"<cls>: <msg>"`` unless cond."""
    if not cond:
        raise UserError(f"{cls}: {msg}")


@dataclasses.dataclass
class YamlConfig:
    """Mixin: dict/YAML round trip for a (possibly nested) config dataclass.

    It is itself a (field-less) dataclass so jsonargparse treats every config as a plain dataclass: flags like
    ``--model.d_model`` appear in ``--help`` and a bad key gives a one-line error.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {}
        for name, value in d.items():
            sub = _nested_type(cls, name)
            kwargs[name] = sub.from_dict(value) if sub is not None and isinstance(value, dict) else value
        return cls(**kwargs)

    def to_yaml(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None


def _nested_type(cls: type, name: str) -> type | None:
    """The YamlConfig subclass a field holds, if any (resolves string annotations)."""
    hints = _type_hints(cls)
    t = hints.get(name)
    return t if isinstance(t, type) and issubclass(t, YamlConfig) else None


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - only for exotic annotations
        return {}


# --- precision: one spelling ------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16")  # bf16 = bfloat16 autocast (training: Lightning's "bf16-mixed"; decoding: autocast)
_PRECISION_ALIASES = {"fp32": "fp32", "32": "fp32", "bf16": "bf16", "bf16-mixed": "bf16"}  # older spellings load


def parse_precision(value, where: str) -> str:
    """``fp32`` or ``bf16`` (also read: ``32``, ``bf16-mixed``, as older configs and checkpoints spell them);
    a one-line UserError naming ``where`` otherwise."""
    got = _PRECISION_ALIASES.get(str(value))
    if got is None:
        raise UserError(f"{where}: precision must be one of {', '.join(PRECISIONS)}; got {value!r}")
    return got

