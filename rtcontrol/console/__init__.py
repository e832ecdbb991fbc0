"""rtcontrol.console."""
