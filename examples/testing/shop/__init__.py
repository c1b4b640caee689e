"""An example application with singleton tasks, and the tests a user writes for it."""
