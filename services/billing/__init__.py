"""Billing domain shared by the API and the worker: configuration, models, gateway, billing rules."""
