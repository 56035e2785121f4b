"""Blueprints split by audience; each audience has one security posture."""
