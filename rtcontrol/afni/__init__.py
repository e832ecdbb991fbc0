"""rtcontrol.afni."""
