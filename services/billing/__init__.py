"""The billing domain the API and the worker share: configuration, models, gateway, rules."""
