"""Running an exported bundle without torch: preprocessing to scores, the runtimes, bundle checks (used by serve)."""
