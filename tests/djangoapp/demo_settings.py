"""The demo project's settings, with the settings in ``DEMO_SETTINGS`` (JSON) added or
replaced: a test runs the demo as a project whose ``settings.py`` says that."""

import json
import os

from demo_site.settings import *  # noqa: F403

globals().update(json.loads(os.environ.get("DEMO_SETTINGS", "{}")))
