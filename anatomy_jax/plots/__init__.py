"""Figures drawn from results dicts."""
