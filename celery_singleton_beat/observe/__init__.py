"""What the library tells: typed events (:mod:`.events`) and the Prometheus metrics fed by
them (:mod:`.metrics`)."""
