"""rtcontrol.link."""
