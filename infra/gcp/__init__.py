"""The billing platform on GCP: a folder per concern, a file per component."""
