"""Names, slots, entries and the pure decisions: everything else builds on these, and they
do no I/O (no store, no broker, no settings)."""
