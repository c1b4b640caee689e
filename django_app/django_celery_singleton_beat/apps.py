from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SingletonBeatConfig(AppConfig):
    name = "django_celery_singleton_beat"
    label = "singleton_beat"
    verbose_name = _("Celery singleton beat")
    default_auto_field = "django.db.models.BigAutoField"
