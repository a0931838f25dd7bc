"""The storage of a study that many workers share, with crash recovery.

:func:`make_storage` turns a database URL (SQLite, PostgreSQL, MySQL) into an Optuna ``RDBStorage``
with a heartbeat, after checking that the URL's database driver is installed; :func:`create_study`
creates a study in it, or joins it if another worker already did. Messages never show a URL's
password (:func:`_redact`).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mmt_nas.exceptions import MissingExtraError, SearchError
from mmt_nas.integrations.optuna._deps import import_optuna, import_sqlalchemy_exc

if TYPE_CHECKING:
    import optuna

__all__ = ["make_storage", "create_study"]

#: The database dialects :func:`make_storage` accepts in a URL, with their default driver module.
_DIALECTS = {"sqlite": "sqlite3", "postgresql": "psycopg2", "mysql": "MySQLdb"}
#: Driver modules, and how to install each (an mmt_nas extra, or a pip package).
_DRIVERS = {
    "psycopg2": "pip install -c constraints.txt 'mmt-nas[postgres]' (psycopg2-binary)",
    "psycopg": "pip install 'psycopg[binary]'",
    "pg8000": "pip install pg8000",
    "MySQLdb": "pip install mysqlclient",
    "pymysql": "pip install pymysql",
}
_DRIVER_MODULES = {"mysqldb": "MySQLdb", "mysqlconnector": "mysql.connector"}
#: Attempts to open a database whose tables other workers are creating at the same moment.
_OPEN_ATTEMPTS = 5


def _redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe to print)."""
    return re.sub(r"^([^:/]+://[^:/@]+:)[^/]*@", r"\1***@", url)  # up to the last @ before the host


def _seconds(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchError(
            f"{name} must be a whole number of seconds >= 1 (or None), but got {name}={value!r}. "
            "Optuna's heartbeat counts in whole seconds."
        )
    return value


def make_storage(
    storage: str | optuna.storages.BaseStorage | None,
    *,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    retries: int | None = 3,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> optuna.storages.BaseStorage | None:
    """The storage of a study shared by many workers, with crash recovery.

    A database URL becomes an ``optuna.storages.RDBStorage`` whose running trials send a
    heartbeat every ``heartbeat_interval`` seconds. When a worker dies mid-trial (killed,
    preempted, out of memory), its trial's heartbeat stops; the next worker that asks for a
    trial after ``grace_period`` seconds marks it ``FAIL`` and, up to ``retries`` times, queues a
    copy with the same parameters (``RetryFailedTrialCallback``; the copy's
    ``system_attrs["failed_trial"]`` is the number of the trial it retries).

    Args:
        storage: ``None`` for Optuna's in-memory storage (one process; returned as ``None``),
            a database URL (``sqlite:///search.db``, ``postgresql://user@host:5432/db``,
            ``mysql://...``; a driver may be named, ``postgresql+psycopg2://``), or an Optuna
            storage object, returned unchanged.
        heartbeat_interval: Seconds between a running trial's heartbeats; ``None`` turns the
            heartbeat off (then a killed worker's trial stays ``RUNNING`` for ever).
        grace_period: Seconds without a heartbeat after which a running trial counts as dead;
            must be more than ``heartbeat_interval``. ``None``: twice ``heartbeat_interval``.
        retries: How many times a dead trial is queued again (``0``: only marked ``FAIL``;
            ``None``: no limit). Used only with a heartbeat.
        engine_kwargs: Passed to SQLAlchemy's ``create_engine``. SQLite gets a 60 s lock
            timeout unless given, so several local workers can share one file.

    Returns:
        The storage to give ``optuna.create_study`` / ``optuna.load_study``.

    Raises:
        SearchError: The URL is not one of the accepted forms, a value is out of range, or the
            database cannot be opened (the message says why and what to do).
        MissingExtraError: The URL's database driver is not installed (the message names the
            package or mmt_nas extra that installs it).
    """
    optuna_ = import_optuna()
    if storage is None or isinstance(storage, optuna_.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise SearchError(
            f"storage must be None (in memory), a database URL such as 'sqlite:///search.db' or "
            f"'postgresql://user@host/db', or an optuna storage, but got storage={storage!r}."
        )
    interval = _seconds("heartbeat_interval", heartbeat_interval)
    grace = _seconds("grace_period", grace_period)
    if interval is not None and grace is not None and grace <= interval:
        raise SearchError(
            f"grace_period must be more than heartbeat_interval (a live trial would be failed between two "
            f"heartbeats), but got grace_period={grace} and heartbeat_interval={interval}. Use at least "
            f"grace_period={2 * interval}, or None for twice the interval."
        )
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise SearchError(f"retries must be an integer >= 0 or None (no limit), but got retries={retries!r}.")
    scheme, sep, _ = storage.partition("://")
    dialect, _, driver = scheme.lower().partition("+")
    if not sep or dialect not in _DIALECTS:
        hint = " Write 'postgresql://' (SQLAlchemy does not accept 'postgres://')." if dialect == "postgres" else ""
        raise SearchError(
            f"storage must be a database URL starting with sqlite://, postgresql:// or mysql:// (optionally "
            f"with a driver, postgresql+psycopg2://), but got storage={_redact(storage)!r}.{hint} Use None for an "
            "in-memory study."
        )
    if dialect == "postgresql" and not driver:
        # SQLAlchemy 2.0 defaults to psycopg2, 2.1 to psycopg (3): name the installed one, psycopg2 first.
        driver = next((m for m in ("psycopg2", "psycopg") if importlib.util.find_spec(m)), "psycopg2")
        storage = f"postgresql+{driver}://{storage.partition('://')[2]}"
    module = _DRIVER_MODULES.get(driver, driver) if driver else _DIALECTS[dialect]
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        install = _DRIVERS.get(module, f"pip install the package that provides the {module!r} module")
        raise MissingExtraError(
            f"storage {_redact(storage)!r} needs the database driver {module!r}, which is not installed. "
            f"Install it with: {install}"
        )
    kwargs = dict(engine_kwargs or {})
    if dialect == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 60})
    else:
        kwargs.setdefault("pool_pre_ping", True)  # a worker outliving a server restart reconnects
    callback = None
    if interval is not None:
        storages = optuna_.storages
        retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna_.exceptions.ExperimentalWarning)
            callback = retry(max_retry=retries)
    sqlalchemy_exc = import_sqlalchemy_exc()
    heartbeat: dict[str, Any] = {}
    if callback is not None:
        params = inspect.signature(optuna_.storages.RDBStorage.__init__).parameters
        key = "heartbeat_stale_trial_callback"
        key = key if key in params else "failed_trial_callback"  # its name before Optuna 4.9
        heartbeat = {"heartbeat_interval": interval, "grace_period": grace, key: callback}
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna since 2.8
                warnings.simplefilter("ignore", optuna_.exceptions.ExperimentalWarning)
                return optuna_.storages.RDBStorage(storage, engine_kwargs=kwargs, **heartbeat)
        except (sqlalchemy_exc.IntegrityError, sqlalchemy_exc.ProgrammingError) as exc:
            # Workers started together race to create optuna's tables; the loser sees "already exists".
            if attempt + 1 == _OPEN_ATTEMPTS:
                raise SearchError(
                    f"could not create optuna's tables in {_redact(storage)!r} ({exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0]}). Check that the user may create tables in this database."
                ) from exc
            time.sleep(0.2 * (attempt + 1))
        except ImportError as exc:  # the driver module exists but cannot load (e.g. a missing libpq)
            raise MissingExtraError(
                f"storage {_redact(storage)!r} needs the database driver {module!r}, which failed to import "
                f"({exc}). Reinstall it: {_DRIVERS.get(module, 'pip install --force-reinstall ' + module)}"
            ) from exc
        except sqlalchemy_exc.SQLAlchemyError as exc:
            raise SearchError(
                f"could not open the study storage {_redact(storage)!r}: {str(exc).splitlines()[0].rstrip('.')}. "
                "Check that the database server is running and reachable, that the database exists "
                "(PostgreSQL: createdb NAME) and that the user may connect to it."
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def create_study(
    storage: str | optuna.storages.BaseStorage | None = None,
    *,
    study_name: str | None = None,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    retries: int | None = 3,
    engine_kwargs: Mapping[str, Any] | None = None,
    **create_study_kwargs: Any,
) -> optuna.Study:
    """Create a study, or join it if another worker already created it.

    With ``storage=None`` this is ``optuna.create_study`` (in memory, one process). With a
    database URL, every worker calls it with the same URL and ``study_name``: the first creates
    the study, the others load it (``load_if_exists=True``), in any order or all at once; the
    storage has a heartbeat and retries the trials of killed workers (see :func:`make_storage`).

    Args:
        storage: ``None``, a database URL or an Optuna storage (see :func:`make_storage`).
        study_name: The study's name; required with a storage, so that all workers join one study.
        heartbeat_interval: See :func:`make_storage`.
        grace_period: See :func:`make_storage`.
        retries: See :func:`make_storage`.
        engine_kwargs: See :func:`make_storage`.
        **create_study_kwargs: Passed to ``optuna.create_study`` (``direction``/``directions``,
            ``sampler``, ``pruner``, ``load_if_exists``; the last defaults to ``True``).

    Returns:
        The study.

    Raises:
        SearchError: A storage without ``study_name``; a study of that name exists with other
            directions; or :func:`make_storage` refused the storage.
        MissingExtraError: The database driver is not installed.
    """
    if storage is not None and not study_name:
        raise SearchError(
            f"study_name is required with a storage (every worker must join the same study), but got "
            f"study_name={study_name!r}. Give every worker the same name, e.g. study_name='search'."
        )
    if "storage" in create_study_kwargs:
        raise SearchError("give the storage as create_study's first argument, not in create_study_kwargs.")
    optuna_ = import_optuna()
    rdb = make_storage(
        storage,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        retries=retries,
        engine_kwargs=engine_kwargs,
    )
    create_study_kwargs.setdefault("load_if_exists", True)
    sqlalchemy_exc = import_sqlalchemy_exc()
    try:
        study = optuna_.create_study(storage=rdb, study_name=study_name, **create_study_kwargs)
    except ValueError as exc:  # e.g. a direction that is neither 'minimize' nor 'maximize'
        raise SearchError(f"optuna refused the study's arguments {sorted(create_study_kwargs)}: {exc}") from exc
    except sqlalchemy_exc.SQLAlchemyError as exc:
        raise SearchError(
            f"could not create or load study {study_name!r} in {_redact(str(storage))!r}: "
            f"{str(exc).splitlines()[0]}. Check that the database server is running and reachable."
        ) from exc
    wanted = create_study_kwargs.get("directions") or [create_study_kwargs.get("direction") or "minimize"]
    wanted = [d if isinstance(d, str) else d.name for d in wanted]
    have = [d.name.lower() for d in study.directions]
    if [w.lower() for w in wanted] != have:
        raise SearchError(
            f"study {study_name!r} in {_redact(str(storage))!r} exists with directions={have}, but this worker "
            f"asked for directions={[w.lower() for w in wanted]}. A study's directions are fixed when it is created: "
            "use the same directions in every worker, or another study_name."
        )
    return study
