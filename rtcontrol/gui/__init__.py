"""rtcontrol.gui."""
