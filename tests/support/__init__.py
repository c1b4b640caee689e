"""What the tests share: real Celery processes of the test apps, and the helpers that read
what they did (``celery_singleton_beat.testing`` holds what users get too)."""
