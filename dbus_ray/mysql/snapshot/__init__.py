"""Snapshots of the `mysql` source."""
