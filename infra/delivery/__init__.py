"""Delivery: promotion between environment branches, change freezes and change detection."""
