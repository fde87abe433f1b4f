"""The sandbox: a real single-node Docker Swarm that is the embedded default target."""
