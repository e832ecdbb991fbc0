"""rtcontrol.recording."""
