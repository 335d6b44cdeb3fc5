"""Writes of the triggers domain: one module per concern, ``trigger_fire`` for every type."""
