"""The app's ``manage.py`` commands (``singleton_beat_prune``)."""
