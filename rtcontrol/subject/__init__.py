"""rtcontrol.subject."""
