"""Pulumi programs and the tooling that previews, deploys and checks them."""
