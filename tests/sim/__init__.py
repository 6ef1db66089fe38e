"""Deterministic simulation of many-group Raft: one seed drives a whole run."""
