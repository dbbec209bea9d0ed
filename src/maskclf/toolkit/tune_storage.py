"""Where a tuning study lives: an SQLAlchemy database or a journal file, with heartbeats that fail and re-run
the trials of a worker that died."""

from __future__ import annotations

import contextlib
import fcntl
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

JOURNAL = "journal:"
RETRIES = 1  # a trial whose worker died is run once more; a second death fails it for good
_BEAT = "maskclf_heartbeat"  # trial system attribute: wall-clock time of the worker's last heartbeat


class Retry(RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queue of a heartbeat-stale trial, counting the re-runs this process queued."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=RETRIES)
        self.queued = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().__call__(study, trial)
        if len(trial.system_attrs.get("retry_history", [])) < RETRIES:
            self.queued += 1


def retry_of(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial whose worker died and which `trial` re-runs (None for a first run)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal-file study with the heartbeat protocol RDBStorage has (the journal has none of its own).

    Heartbeats are trial system attributes holding the worker's wall-clock time, so every worker's clock must agree.
    """

    def __init__(self, path: str, heartbeat_interval: int, callback: Retry) -> None:
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval, self.grace_period, self.callback = heartbeat_interval, 2 * heartbeat_interval, callback

    def record_heartbeat(self, trial_id: int) -> None:
        """Mark `trial_id` alive now."""
        self.set_trial_system_attr(trial_id, _BEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running
                if now - t.system_attrs.get(_BEAT, t.datetime_start.timestamp()) > self.grace_period]

    def get_heartbeat_interval(self) -> int:
        """Seconds between heartbeats."""
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Retry:
        """What to do with a trial whose worker died."""
        return self.callback


def open_storage(url: str, heartbeat: int, retry: Retry) -> BaseStorage:
    """`journal:PATH` (a journal file) or an SQLAlchemy URL, heartbeat every `heartbeat` s, stale after twice that."""
    if heartbeat < 1:
        raise ValueError(f"--heartbeat must be a whole number of seconds >= 1, got {heartbeat}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if url.startswith(JOURNAL):
            return HeartbeatJournalStorage(url[len(JOURNAL):], heartbeat, retry)
        # Several workers on one SQLite file take turns at its lock: wait for it instead of failing after 5 s.
        engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
        for attempt in range(5):
            try:
                with _creation_lock(url):
                    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                      heartbeat_stale_trial_callback=retry)
            except (IntegrityError, ProgrammingError, OperationalError) as e:
                # Workers starting together on an empty database race to create its tables (PostgreSQL
                # reports a duplicate, SQLite "table ... already exists"): the loser finds them made on its
                # next try. Anything else is not a race and is raised as it is.
                if attempt == 4 or not _is_creation_race(e):
                    raise
                time.sleep(1 + attempt)
        raise AssertionError("unreachable")


def _is_creation_race(e: Exception) -> bool:
    """Whether a database error is two workers creating the same tables or version row at once."""
    text = str(getattr(e, "orig", e)).lower()
    return isinstance(e, (IntegrityError, ProgrammingError)) or "already exists" in text or "locked" in text


@contextlib.contextmanager
def _creation_lock(url: str):
    """For an SQLite file, hold an exclusive lock on `<file>.lock` while the tables are created, so workers
    started together create them one at a time; other databases need none (the retry covers them)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    lock = Path(parsed.database).with_name(Path(parsed.database).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ***, fit to print."""
    if url.startswith(JOURNAL):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
