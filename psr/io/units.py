"""Length units: the spellings microscopy files use, mapped to NGFF (UDUNITS-2) names, and conversions."""

from __future__ import annotations

from psr.errors import DataError

# Lengths in metres: metadata sizes are converted to one unit per image (NGFF unit names).
UNIT_METRES = {
    "angstrom": 1e-10,
    "nanometer": 1e-9,
    "micrometer": 1e-6,
    "millimeter": 1e-3,
    "centimeter": 1e-2,
    "meter": 1.0,
}
_ALIASES = {
    "a": "angstrom",
    "å": "angstrom",
    "\\u00c5": "angstrom",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "μm": "micrometer",  # greek mu
    "\\u00b5m": "micrometer",  # ImageJ writes the escape literally
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "metre": "meter",
}
_NO_UNIT = {"", "pixel", "pixels", "px", "none"}
# NGFF names -> the short spellings ImageJ writes, and the symbols figures show
IMAGEJ_UNITS = {"micrometer": "um", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m"}
SYMBOLS = {
    "angstrom": "Å",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}


class UnitError(DataError):
    """A length unit psr does not know."""


def normalise_unit(unit: object, where: str = "--unit", strict: bool = True) -> str | None:
    """The NGFF name of a length unit (``"um"`` -> ``"micrometer"``), ``None`` for pixels / no unit.

    An unknown unit raises ``UnitError`` naming ``where``, or gives ``None`` when not ``strict``.
    """
    if unit is None:
        return None
    key = str(unit).strip().lower()
    if key in _NO_UNIT:
        return None
    name = _ALIASES.get(key, key)
    if name not in UNIT_METRES:
        if not strict:
            return None
        raise UnitError(
            f"{where}: unknown length unit '{unit}' (expected one of {', '.join(UNIT_METRES)}, or um / nm / mm)"
        )
    return name


def convert(value: float, unit: str | None, to: str | None) -> float:
    """``value`` in ``unit`` expressed in ``to`` (unchanged when either is unknown)."""
    if unit is None or to is None or unit == to:
        return value
    return value * UNIT_METRES[unit] / UNIT_METRES[to]


def symbol(unit: object) -> str | None:
    """The symbol a figure shows for a length unit in any spelling (``"micrometer"``, ``"um"`` → ``"µm"``);
    ``None`` for no unit, and an unknown name as it is."""
    if unit is None:
        return None
    name = normalise_unit(unit, strict=False)
    return SYMBOLS[name] if name else (str(unit).strip() or None)
