"""The names the runbooks give what they create on a target, in one place: the migration that creates a
replication object and the alert rule that watches it must agree on its name."""

from __future__ import annotations

PUBLICATION = "rollout_forward"  # legacy -> new cluster: the fill before the cutover
SUBSCRIPTION = "rollout_forward"
REVERSE_PUBLICATION = "rollout_reverse"  # new cluster -> legacy: the way back, for 72 hours
REVERSE_SUBSCRIPTION = "rollout_reverse"
REVERSE_SLOT = REVERSE_SUBSCRIPTION  # a subscription's slot on its publisher is named after it
PROBE_TABLE = "rollout_write_probe"
DRILL_TABLE = "rollout_drill_writes"  # in the write endpoint's maintenance database, never the application's
