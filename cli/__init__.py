"""The `aml-trigger` command line."""
