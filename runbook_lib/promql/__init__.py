"""Monitoring: the matrix's metrics as PromQL, and the alert rules generated from the policy."""
