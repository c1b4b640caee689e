"""Add the project's periodic tasks to sqlalchemy-celery-beat's tables, through its models
(as an admin page or a migration would); run it again to leave them as they are."""

import sqlalchemy as sa
from proj import app
from sqlalchemy.orm import Session
from sqlalchemy_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from sqlalchemy_celery_beat.session import ModelBase

engine = sa.create_engine(app.conf.beat_dburi).execution_options(
    schema_translate_map={"celery_schema": None}
)
ModelBase.metadata.create_all(engine)
with Session(engine) as session:
    if session.scalar(sa.select(PeriodicTask).where(PeriodicTask.name == "every-5-seconds")):
        raise SystemExit("the schedule is there already")
    every = IntervalSchedule(every=5, period="seconds")
    minutely = CrontabSchedule(minute="*", timezone="Europe/Berlin")
    session.add_all([every, minutely])
    session.flush()
    for name, schedule in (("every-5-seconds", every), ("every-minute-berlin", minutely)):
        task = PeriodicTask(name=name, task="proj.report", args=f'["{name}"]')
        task.schedule_model = schedule
        session.add(task)
    session.commit()
print("added every-5-seconds and every-minute-berlin")
