"""Django app for celery-singleton-beat: run records, slot decisions and a dashboard."""
