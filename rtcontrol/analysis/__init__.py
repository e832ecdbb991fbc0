"""rtcontrol.analysis."""
