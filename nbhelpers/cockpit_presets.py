"""Former module path of the Cockpit presets; they live in :mod:`nbhelpers.cockpit_tools`."""

from nbhelpers.cockpit_tools import DEFAULT_PRESET, PRESETS, QuantitySpec, preset_specs

__all__ = ["DEFAULT_PRESET", "PRESETS", "QuantitySpec", "preset_specs"]
