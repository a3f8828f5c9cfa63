"""The billing worker: renews subscriptions, charges invoices, runs dunning."""
