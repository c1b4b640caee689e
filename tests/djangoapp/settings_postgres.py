"""The same test settings with PostgreSQL as the default database."""

from tests.djangoapp.settings import *  # noqa: F403
from tests.djangoapp.settings import DATABASES

DATABASES = {
    **DATABASES,
    "default": DATABASES["postgres"],
    "postgres": {**DATABASES["postgres"], "TEST": {"MIRROR": "default"}},
}
EXPECTED_VENDOR = "postgresql"
