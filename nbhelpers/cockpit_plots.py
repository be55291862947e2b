"""Former module path of the Cockpit plots; they live in :mod:`nbhelpers.cockpit_tools`."""

from nbhelpers.cockpit_tools import log_frame, plot_dashboard, plot_instruments
from nbhelpers.cockpit_tools.logs import load_log

__all__ = ["load_log", "log_frame", "plot_dashboard", "plot_instruments"]
