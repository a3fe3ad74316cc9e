"""The results store: each submission's result on disk as soon as it is graded.

A batch with ``--csv grades.csv`` keeps ``grades.results/`` beside it: one file per
submission (``<hash of its path>.json``, written to a temporary file, flushed and
renamed, so a file is either the whole result or absent), and a manifest of the whole
batch (``batch.json``, or ``batch-K-of-N.json`` for a shard). Whatever stops a batch
(Ctrl-C, a killed machine, a full disk), what was written stays valid, and
``--resume`` grades only the submissions without a result.

A result is reused only under the same key: a hash of the notebook's bytes, the
grading options and a fingerprint of the secret (a slow key derivation, so that the
store does not let anyone test guesses of a weak secret quickly; the secret itself is
never written). A notebook changed since it was graded, or a batch run with other
options or another secret, is graded again.

``gradcheck-grade merge`` reads the stores of a batch's shards and writes the CSV and
feedback a single run would have written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import sanitize
from .notebook import BadSubmission, read_bytes
from .sandbox import SandboxOptions

FORMAT = 1
#: what one graded submission is, everywhere in a batch: (path, report or None, text)
Result = tuple[str, "dict | None", str]
#: what grade_to_text returns: (path, JSON report or "", Markdown or error line)
Outcome = tuple[str, str, "str | None"]

_KDF_ROUNDS = 200_000
_TEMP = ".tmp-"
_HOST = socket.gethostname().replace("-", "_")
#: a temporary file this old is no writer's, whichever machine it came from
_STALE_SECONDS = 3600
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_KDF_SALT = b"gradcheck-kit results store"


class StoreError(Exception):
    """The store cannot be read or written; the message is one line."""


# -- keys ---------------------------------------------------------------------------


_FINGERPRINTS: dict[str, str] = {}


def secret_fingerprint(secret: str) -> str:
    """A fingerprint that tells two secrets apart without revealing either."""
    if secret not in _FINGERPRINTS:
        data = secret.encode("utf-8", "surrogatepass")
        digest = hashlib.pbkdf2_hmac("sha256", data, _KDF_SALT, _KDF_ROUNDS)
        _FINGERPRINTS[secret] = digest.hex()[:32]
    return _FINGERPRINTS[secret]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gradcheck-kit")
    except Exception:  # noqa: BLE001  (run from a checkout that was never installed)
        return "unknown"


def grading_fingerprint(
    *,
    assignment: str | None,
    hidden: bool,
    efficiency: dict | None,
    options: SandboxOptions,
    secret_print: str,
) -> str:
    """Everything besides the notebook that decides its grade, as one hash."""
    from .distributed import portable_options

    limits = portable_options(options)
    limits.pop("user", None)  # which account runs student code does not change a grade
    described = {
        "assignment": assignment,
        "hidden": hidden,
        "efficiency": sorted((efficiency or {}).items()),
        "sandbox": limits,
        "version": _version(),
        "secret": secret_print,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def content_key(data: bytes, grading: str) -> str:
    digest = hashlib.sha256(b"gradcheck-kit result\0" + grading.encode() + b"\0")
    digest.update(data)
    return digest.hexdigest()


def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def shard_of(label: str, count: int) -> int:
    """The shard (0 to count - 1) of a submission, from its path below the batch's
    directory: the same on every machine and in every run."""
    digest = hashlib.sha256(b"gradcheck-kit shard\0" + _path_bytes(label)).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N) as (K, N), for argparse."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (e.g. 2/8)") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: K/N needs 1 <= K <= N")
    return k, n


def in_shard(paths: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The paths of ``paths`` (the whole batch) that shard K of N grades."""
    if shard is None:
        return list(paths)
    from .batch import feedback_labels

    k, n = shard
    labels = feedback_labels(paths)
    return [path for path, label in zip(paths, labels) if shard_of(label, n) == k - 1]


# -- the store ------------------------------------------------------------------------


@dataclass
class Record:
    path: str
    key: str | None
    report: dict | None
    text: str
    graded_at: float

    def result(self) -> tuple[str, dict | None, str]:
        return self.path, self.report, self.text


def store_beside(csv_path: str) -> str:
    """``grades.results`` for ``grades.csv``."""
    return os.path.splitext(os.path.abspath(csv_path))[0] + ".results"


def _manifest_name(shard: tuple[int, int] | None) -> str:
    return "batch.json" if shard is None else f"batch-{shard[0]}-of-{shard[1]}.json"


def _error(action: str, where: str, error: OSError) -> StoreError:
    return StoreError(f"cannot {action} {where}: {error.strerror or error}")


def write_atomically(path: str, text: str) -> None:
    """``text`` in ``path`` whole or not at all: a temporary file beside it, flushed to
    disk, then renamed over it. A failure leaves what was there and no temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f"{_TEMP}{_HOST}-{os.getpid()}-", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # the mode open() would have given it
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:  # the rename itself survives a crash only once the directory is on disk
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class Store:
    """A results directory: one JSON file per submission and the batch's manifest."""

    def __init__(self, directory: str):
        self.directory = directory

    def _file(self, path: str) -> str:
        name = hashlib.sha256(b"gradcheck-kit path\0" + _path_bytes(path)).hexdigest()[:32]
        return os.path.join(self.directory, name + ".json")

    def create(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise _error("create", self.directory, error) from None
        if not os.path.isdir(self.directory) or os.path.islink(self.directory):
            raise StoreError(f"{self.directory} is not a directory")
        self._sweep()

    def _sweep(self) -> None:
        """Remove what writers killed in the middle of a write left: their temporary
        files (a live writer's, here or on another machine sharing the directory, stay)."""
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(_TEMP)]
        except OSError:
            return
        for name in names:
            where = os.path.join(self.directory, name)
            host, _, rest = name[len(_TEMP) :].partition("-")
            pid = rest.partition("-")[0]
            try:
                if host == _HOST and pid.isdigit() and not _alive(int(pid)):
                    os.unlink(where)
                elif time.time() - os.lstat(where).st_mtime > _STALE_SECONDS:
                    os.unlink(where)
            except OSError:
                pass

    def put(self, path: str, key: str | None, report: dict | None, text: str) -> None:
        record = {
            "format": FORMAT,
            "path": path,
            "key": key,
            "graded_at": time.time(),
            "report": report,
            "text": text,
        }
        where = self._file(path)
        try:
            write_atomically(where, json.dumps(record, sort_keys=True))
        except OSError as error:
            raise _error("write the result of", sanitize.line(path), error) from None

    def get(self, path: str) -> Record | None:
        return self._read(self._file(path), path)

    def _read(self, where: str, path: str | None = None) -> Record | None:
        try:
            with open(where, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # a result that cannot be read is one to grade again, never a stop
            return None
        if not _valid_record(raw) or (path is not None and raw["path"] != path):
            return None
        return Record(raw["path"], raw["key"], raw["report"], raw["text"], raw["graded_at"])

    def write_manifest(self, paths: list[str], shard: tuple[int, int] | None, grading: str) -> None:
        from .batch import feedback_labels

        manifest = {
            "format": FORMAT,
            "paths": paths,
            "labels": feedback_labels(paths),
            "shard": list(shard) if shard else None,
            # options and secret fingerprint, hashed: parts graded differently must not
            # be merged into one CSV
            "grading": grading,
        }
        where = os.path.join(self.directory, _manifest_name(shard))
        try:
            write_atomically(where, json.dumps(manifest))
        except OSError as error:
            raise _error("write", where, error) from None

    def manifests(self) -> list[dict]:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            raise _error("read", self.directory, error) from None
        found = []
        for name in names:
            if name.startswith("batch") and name.endswith(".json"):
                try:
                    with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                        raw = json.load(handle)
                except (OSError, ValueError):
                    raise StoreError(f"{self.directory}/{name}: not a batch manifest") from None
                if not _valid_manifest(raw):
                    raise StoreError(f"{self.directory}/{name}: not a batch manifest")
                found.append(raw)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _valid_record(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and raw.get("format") == FORMAT
        and isinstance(raw.get("path"), str)
        and (raw.get("key") is None or isinstance(raw.get("key"), str))
        and (raw.get("report") is None or isinstance(raw.get("report"), dict))
        and isinstance(raw.get("text"), str)
        and isinstance(raw.get("graded_at"), (int, float))
    )


def _valid_manifest(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and raw.get("format") == FORMAT
        and isinstance(raw.get("paths"), list)
        and isinstance(raw.get("labels"), list)
        and len(raw["paths"]) == len(raw["labels"])
        and all(isinstance(p, str) for p in raw["paths"] + raw["labels"])
        and (raw.get("shard") is None or isinstance(raw.get("shard"), list))
        and isinstance(raw.get("grading"), str)
    )


# -- a batch with a store ----------------------------------------------------------------


#: grades the given paths; calls back with each outcome worth keeping as it completes
#: (not one a lost process or cluster made); returns them all
Backend = Callable[[list[str], Callable[[Outcome], None]], dict[str, Outcome]]


@dataclass
class Plan:
    """What a batch grades, and with what key each submission's result is kept."""

    selected: list[str]
    keys: dict[str, str | None]
    reused: dict[str, Record]


def plan(selected: list[str], store: Store | None, grading: str, resume: bool) -> Plan:
    """Keys for every selected submission (read once, with the safe reader); with
    ``resume``, the results already in the store under the same key."""
    keys: dict[str, str | None] = {}
    reused: dict[str, Record] = {}
    for path in selected:
        try:
            keys[path] = content_key(read_bytes(path), grading)
        except BadSubmission:
            keys[path] = None  # refused again when graded: cheap, and the same message
        if resume and store is not None and keys[path] is not None:
            record = store.get(path)
            if record is not None and record.key == keys[path]:
                reused[path] = record
    return Plan(selected, keys, reused)


def grade_with_store(
    work: Plan, store: Store | None, backend: Backend
) -> list[tuple[str, dict | None, str]]:
    """Grade what the plan does not reuse, writing each result as it arrives; the
    results of every selected submission, in order."""
    todo = [path for path in work.selected if path not in work.reused]

    def arrived(outcome: Outcome) -> None:
        path, report, text = outcome
        if store is not None:
            store.put(path, work.keys.get(path), json.loads(report) if report else None, text or "")

    outcomes = backend(todo, arrived) if todo else {}
    results = []
    for path in work.selected:
        if path in work.reused:
            results.append(work.reused[path].result())
        else:
            _, report, text = outcomes[path]
            results.append((path, json.loads(report) if report else None, text or ""))
    return results


def say(message: str) -> None:
    sys.stderr.write(f"gradcheck-grade: {message}\n")
    sys.stderr.flush()


# -- merge -------------------------------------------------------------------------------


def _part_store(part: str) -> Store:
    if os.path.isdir(part) and not os.path.islink(part.rstrip(os.sep) or part):
        return Store(part)
    if part.endswith(".csv"):
        directory = store_beside(part)
        if os.path.isdir(directory):
            return Store(directory)
    raise StoreError(f"{part}: not a results directory (nor a CSV with one beside it)")


def merged_records(parts: Iterable[str]) -> tuple[list[str], str, list[Record]]:
    """(the batch's paths, how it was graded, its results in order) from the stores of
    its shards."""
    batch: list[str] | None = None
    grading: str | None = None
    chosen: dict[str, Record] = {}
    for part in parts:
        store = _part_store(part)
        manifests = store.manifests()
        if not manifests:
            raise StoreError(f"{part}: no batch manifest (not written by gradcheck-grade)")
        for manifest in manifests:
            if batch is None:
                batch, grading = manifest["paths"], manifest["grading"]
            elif manifest["paths"] != batch:
                raise StoreError(f"{part}: results of another batch (other submissions)")
            elif manifest["grading"] != grading:
                raise StoreError(f"{part}: graded with other options or another secret")
            shard = manifest["shard"]
            for path, label in zip(manifest["paths"], manifest["labels"]):
                if shard is not None and shard_of(label, shard[1]) != shard[0] - 1:
                    continue  # another shard's: whatever is here is not this run's
                record = store.get(path)
                if record is not None and path not in chosen:
                    chosen[path] = record
    assert batch is not None and grading is not None
    missing = [path for path in batch if path not in chosen]
    if missing:
        raise StoreError(
            f"{len(missing)} of {len(batch)} submissions have no result in the parts given "
            f"(first: {sanitize.line(missing[0])}); grade or name the missing shards"
        )
    return batch, grading, [chosen[path] for path in batch]


def merge_main(argv: list[str]) -> int:
    """``gradcheck-grade merge PARTS... --csv OUT``."""
    from .batch import write_outputs
    from .cli import _Parser

    parser = _Parser(
        prog="gradcheck-grade merge",
        description="Merge the results of a batch's shards into one CSV and feedback "
        "directory, as a single run writes them.",
    )
    parser.add_argument(
        "parts", nargs="+", help="results directories (grades.results) or the shards' CSVs"
    )
    parser.add_argument("--csv", required=True, help="write the merged CSV here")
    args = parser.parse_args(argv)
    try:
        paths, grading, records = merged_records(args.parts)
        results = [record.result() for record in records]
        out = os.path.realpath(args.csv)
        if any(out == os.path.realpath(p) for p in paths):
            say("refusing to overwrite a submission with the CSV")
            return 2
        if any(os.path.realpath(_part_store(p).directory) == store_beside(out) for p in args.parts):
            target = None  # the merged store is one of the parts: it already holds it all
        else:
            target = Store(store_beside(args.csv))
            target.create()
        if target is not None:
            for record in records:
                target.put(record.path, record.key, record.report, record.text)
            target.write_manifest(paths, None, grading)
        write_outputs(args.csv, results)
    except StoreError as error:
        say(str(error))
        return 2
    except OSError as error:
        say(f"cannot write {args.csv}: {error.strerror or error}")
        return 2
    say(f"merged {len(results)} results into {sanitize.line(args.csv)}")
    return 0
