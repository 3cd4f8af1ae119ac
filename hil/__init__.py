"""The hardware-in-the-loop rig: a whole site on one Linux machine."""
