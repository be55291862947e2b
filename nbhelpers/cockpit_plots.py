"""Former module path of the Cockpit plots; they live in :mod:`nbhelpers.cockpit_tools`."""

from nbhelpers.cockpit_tools import load_log, log_frame, plot_dashboard, plot_instruments

__all__ = ["load_log", "log_frame", "plot_dashboard", "plot_instruments"]
