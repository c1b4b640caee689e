"""``make demo-django``: the demo project with two beat replicas, a worker and the admin.

Migrates the SQLite database, creates the demo's rows in django-celery-beat's tables (those
missing), creates (or resets) the admin user and prints its password, starts two
``celery beat -S singleton`` replicas and a worker against local Redis, and
serves the admin on http://127.0.0.1:8000/. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    parser.add_argument("--logs", type=Path, default=HERE / "logs", help="where the logs go")
    options = parser.parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="demo_site.settings")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    python = sys.executable

    def manage(*args: str) -> None:
        subprocess.run([python, "manage.py", *args], cwd=HERE, env=env, check=True)

    manage("migrate", "--verbosity", "0")
    if importlib.util.find_spec("django_celery_beat") is None:
        print("django-celery-beat is not installed: the schedule is the code's beat_schedule only")
    else:
        manage("demo_schedule")  # the rows of django-celery-beat's tables, where missing
    password = secrets.token_urlsafe(9)
    subprocess.run(
        [python, "manage.py", "shell", "--verbosity", "0", "-c",
         "from django.contrib.auth.models import User\n"
         "u = User.objects.filter(username='admin').first() or "
         "User.objects.create_superuser('admin', 'admin@example.com', 'x')\n"
         f"u.set_password({password!r}); u.is_staff = u.is_superuser = True; u.save()"],
        cwd=HERE, env=env, check=True,
    )  # fmt: skip
    logs = options.logs
    logs.mkdir(exist_ok=True)
    commands = {
        "beat-1": [python, "-m", "celery", "-A", "demo_site", "beat", "-S", "singleton",
                   "--loglevel", "INFO", "--pidfile=", "-s", str(logs / "beat-1.db")],
        "beat-2": [python, "-m", "celery", "-A", "demo_site", "beat", "-S", "singleton",
                   "--loglevel", "INFO", "--pidfile=", "-s", str(logs / "beat-2.db")],
        "worker": [python, "-m", "celery", "-A", "demo_site", "worker", "-c", "2",
                   "--loglevel", "INFO", "-n", "demo@%h"],
        "web": [python, "manage.py", "runserver", f"127.0.0.1:{options.port}", "--noreload"],
    }  # fmt: skip
    processes = {}
    for name, command in commands.items():
        out = (logs / f"{name}.log").open("ab")
        processes[name] = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=out)
    print(
        f"\n  admin:      http://127.0.0.1:{options.port}/admin/  user admin  password {password}\n"
        f"  dashboard:  http://127.0.0.1:{options.port}/admin/singleton_beat/taskrun/dashboard/\n"
        f"  control:    http://127.0.0.1:{options.port}/admin/singleton_beat/scheduleaction/control/\n"
        f"  schedule:   http://127.0.0.1:{options.port}/admin/django_celery_beat/periodictask/\n"
        f"  logs:       {logs}/ (beat-1, beat-2, worker, web)\n"
        "  two beat replicas share the schedule; each slot is dispatched once.\n"
        "  Ctrl-C stops everything.\n",
        flush=True,
    )
    deadline = time.monotonic() + options.seconds if options.seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(
                        f"error: {name} stopped (exit {process.returncode}); see {logs}/{name}.log"
                    )
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
