"""Planning a launch, with no side effects: hostfile and selectors -> pool, machine facts, the WorldPlan (every
rank's host, env and command) and how it is shown (--dry-run). No torch, no contact with other hosts."""
