"""Grading a batch on a Dask cluster (``gradcheck-grade DIR --dask SCHEDULER``).

Each Dask task grades one submission with the same sandbox as a local batch, on
whichever machine runs it. Only data the grader made crosses Dask, and Dask pickles
it: a task's input is the notebook's bytes (read on the instructor's machine with the
safe reader, so a remote worker needs no access to the submissions' files) and plain
grading options; its result is the JSON text and Markdown the grader made, with the
fingerprint of the secret it graded with. No object of the student's ever reaches the
instructor's process.

The secret travels with each task, unless the Dask workers have ``GRADCHECK_SECRET``
in their own environment, which they then prefer: the instructor can keep it off the
scheduler by setting it only there. Every result must come back with the fingerprint
of the secret the batch was keyed with (asked of the cluster first), so that workers
with different secrets cannot mix two gradings in one CSV.

A worker lost in the middle of a batch costs nothing: Dask runs its tasks again
elsewhere, and a task that fails with an exception (a worker's full scratch disk) is
retried too (``RETRIES``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

from .sandbox import SandboxOptions

#: attempts after the first for a task that raised (a lost worker is handled by Dask's
#: own rescheduling, bounded by ``distributed.scheduler.allowed-failures``)
RETRIES = 2
#: tasks in flight per thread of the cluster: enough to keep every worker busy, few
#: enough that the notebooks' bytes need not all be held at once
_PER_THREAD = 4
_MIN_IN_FLIGHT = 64


#: ``--dask current``: the client this process already has (a dask-gateway cluster's,
#: whose address alone does not carry its credentials)
CURRENT = "current"


class ClusterError(Exception):
    """The cluster cannot be used; the message is one line."""


#: options that name things of the instructor's machine: each worker has its own
_MACHINE_LOCAL = ("python", "extra_env", "hide", "namespaces")


def portable_options(options: SandboxOptions) -> dict:
    """The sandbox options a worker on another machine grades with (limits, account)."""
    return {
        field.name: getattr(options, field.name)
        for field in dataclasses.fields(options)
        if field.name not in _MACHINE_LOCAL
    }


# -- on the Dask worker ---------------------------------------------------------------------


def _worker_secret(sent: str | None) -> tuple[str | None, str | None]:
    """(secret, where it came from) on this worker: its own environment first."""
    from .grade import SECRET_ENV

    own = os.environ.get(SECRET_ENV)
    if own:
        return own, "environment"
    return sent, None


def secret_probe(sent: str | None) -> str:
    """The fingerprint of the secret this worker grades with."""
    from .grade import resolve_secret
    from .results import secret_fingerprint

    secret, _ = _worker_secret(sent)
    return secret_fingerprint(resolve_secret(secret)[0])


_warmed: list[bool] = []


def _warm_up(options: SandboxOptions) -> None:
    """A Dask worker process grades many submissions, like a local batch's pool process:
    its sandbox workers start warm the same way (where this sandbox offers it)."""
    from . import sandbox

    prepare = getattr(sandbox, "prepare_warm_workers", None)
    if prepare is not None and not _warmed:
        _warmed.append(True)
        prepare(options)


def grade_task(payload: dict) -> dict:
    """Grade one submission from its bytes; plain strings back."""
    from .batch import grade_to_text
    from .grade import resolve_secret
    from .results import secret_fingerprint

    path = payload["path"]
    secret, source = _worker_secret(payload["secret"])
    options = SandboxOptions(**payload["options"])
    _warm_up(options)
    name = os.path.basename(path)
    if name in ("", ".", ".."):
        name = "submission.ipynb"
    with tempfile.TemporaryDirectory(prefix="gradcheck-dask-") as scratch:
        local = os.path.join(scratch, name)
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload["data"])
        _, report, text = grade_to_text(
            local,
            payload["assignment"],
            secret,
            payload["hidden"],
            options,
            payload["efficiency"],
        )
    if report:
        # the report says where the secret came from as the instructor would see it
        view = json.loads(report)
        view["secret"] = source or payload["source"]
        report = json.dumps(view, sort_keys=True)
    else:
        text = (text or "").replace(local, path)
    return {
        "path": path,
        "report": report,
        "text": text or "",
        "secret": secret_fingerprint(resolve_secret(secret)[0]),
    }


# -- on the instructor's machine ------------------------------------------------------------


def _connect(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--dask needs Dask: pip install 'gradcheck-kit[dask]'") from None
    try:
        if address == CURRENT:
            from distributed import default_client

            return default_client()
        if address.endswith(".json") and os.path.isfile(address):
            return Client(scheduler_file=address, timeout="30s", set_as_default=False)
        return Client(address, timeout="30s", set_as_default=False)
    except Exception as error:  # noqa: BLE001  (OSError, TimeoutError, bad addresses)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ClusterError(f"cannot reach the Dask scheduler {address}: {first}") from None


class DaskBackend:
    """Grades paths on the cluster at ``address``, as :func:`autograder.batch.run_batch`
    grades them locally."""

    def __init__(
        self,
        address: str,
        *,
        assignment: str | None,
        seed: str | None,
        hidden: bool,
        options: SandboxOptions,
        efficiency: dict | None,
    ):
        from .grade import resolve_secret

        secret, source = resolve_secret(seed)
        self.client = _connect(address)
        self.owned = address != CURRENT
        self.run = uuid.uuid4().hex[:12]
        self.common = {
            "assignment": assignment,
            # the public default is not worth sending: a worker resolves it itself
            "secret": None if source == "default" else secret,
            "source": source,
            "hidden": hidden,
            "options": portable_options(options),
            "efficiency": dict(efficiency or {}),
        }
        self._secret_print: str | None = None

    def close(self) -> None:
        if not self.owned:
            return
        try:
            self.client.close()
        except Exception:  # noqa: BLE001  (a scheduler already gone)
            pass

    def secret_print(self) -> str:
        """The fingerprint of the secret the cluster grades with (waits for a worker)."""
        if self._secret_print is None:
            future = self.client.submit(
                secret_probe, self.common["secret"], key=f"gradcheck-secret-{self.run}"
            )
            try:
                self._secret_print = str(future.result())
            except Exception as error:  # noqa: BLE001
                raise ClusterError(f"the Dask cluster cannot grade: {error}") from None
        return self._secret_print

    def _in_flight(self) -> int:
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:  # noqa: BLE001
            threads = 0
        return max(_MIN_IN_FLIGHT, _PER_THREAD * threads)

    def __call__(
        self, paths: list[str], arrived: Callable[[tuple[str, str, str | None]], None]
    ) -> dict[str, tuple[str, str, str | None]]:
        from distributed import as_completed

        from .notebook import BadSubmission, read_bytes

        expected = self.secret_print()
        outcomes: dict[str, tuple[str, str, str | None]] = {}
        waiting = as_completed(loop=self.client.loop)
        owners: dict[str, str] = {}
        live: dict[str, Any] = {}
        queue = iter(enumerate(paths))

        def submit_next() -> bool:
            for index, path in queue:
                try:
                    data = read_bytes(path)
                except BadSubmission as error:
                    outcomes[path] = (path, "", str(error))
                    arrived(outcomes[path])
                    continue
                future = self.client.submit(
                    grade_task,
                    {**self.common, "path": path, "data": data},
                    key=f"gradcheck-grade-{self.run}-{index}",
                    retries=RETRIES,
                )
                owners[future.key] = path
                live[future.key] = future
                waiting.add(future)
                return True
            return False

        try:
            for _ in range(self._in_flight()):
                if not submit_next():
                    break
            for future in waiting:
                path = owners.pop(future.key)
                live.pop(future.key, None)
                outcome, kept = self._outcome(path, future, expected)
                future.release()
                outcomes[path] = outcome
                if kept:
                    arrived(outcome)
                submit_next()
        except BaseException:
            # Ctrl-C or a store that cannot be written: nothing left running for us
            try:
                self.client.cancel(list(live.values()))
            except Exception:  # noqa: BLE001
                pass
            raise
        return outcomes

    @staticmethod
    def _outcome(path: str, future: Any, expected: str) -> tuple[tuple[str, str, str | None], bool]:
        try:
            answer = future.result()
        except Exception as error:  # noqa: BLE001  (failed on every worker it was given)
            first = (str(error).strip().splitlines() or [""])[0]
            message = f"{path}: grading on the Dask cluster failed: {type(error).__name__}"
            return (path, "", f"{message}: {first}" if first else message), False
        if not (
            isinstance(answer, dict)
            and answer.get("path") == path
            and all(isinstance(answer.get(k), str) for k in ("report", "text", "secret"))
        ):
            return (path, "", f"{path}: grading on the Dask cluster failed: bad answer"), False
        if answer["secret"] != expected:
            return (
                path,
                "",
                f"{path}: graded with another secret than the rest of the batch "
                "(GRADCHECK_SECRET differs between Dask workers)",
            ), False
        return (path, answer["report"], answer["text"]), True
