"""The billing platform on AWS: a folder per concern, a file per component."""
