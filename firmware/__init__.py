"""Billmaster Arbiter appliance firmware: protocol, detection, decisions, actions."""
