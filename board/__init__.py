"""Board support: pin maps, GPIO through gpiozero pin factories, systemd, the image."""
