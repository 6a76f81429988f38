"""Broadcasters: deliver an envelope to its targets, locally or across a cluster."""
