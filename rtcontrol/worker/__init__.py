"""rtcontrol.worker."""
