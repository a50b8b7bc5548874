"""A judgement store that is not one, not ours, damaged, read-only, merged into itself or on a full
disk, and imported judgements that were tampered with: each is refused (or served read-only) with
one line naming the store (or file and row) and the cause, and nothing committed is lost.
"""
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ranker import pairs
from test_store import judged_with_count
from test_user_errors import UNWRITABLE, one_line_error

from pyterrier_reasonrank import InputError, JudgementStore, ReasonRanker, StoreError, judging
from pyterrier_reasonrank.cli import main as reasonrank
from pyterrier_reasonrank.identity import document_sha256, provenance_id
from pyterrier_reasonrank.judgements import Judgements
from pyterrier_reasonrank.store import DATABASE
from pyterrier_reasonrank.testing import counting_judgements

PAGE = 4096  # SQLite's default page size: the tables' first pages are 2 to 5


def records(n: int, start: int = 0) -> list[dict]:
    """``n`` made-up pairs and their judgements, as :meth:`JudgementStore.add` takes them (see :func:`judged`)."""
    return [{"key": hashlib.sha256(f"pair {i}".encode()).hexdigest(), "qid": f"q{i // 10}", "docno": f"d{i}",
             "query": f"query {i // 10}", "document_sha256": document_sha256(f"document {i}"),
             "explanation": f"explanation {i} " * 20, "probabilities": (0.2, 0.3, 0.5), "forced": False,
             "tokens": 40, "samples": 1} for i in range(start, start + n)]


def judged(records: list[dict]) -> Judgements:
    """The judgements of made-up records."""
    return Judgements.of(*([r[name] for r in records] for name in
                           ("explanation", "probabilities", "forced", "tokens", "samples")))


def filled_store(path: Path, n: int = 2000) -> Path:
    """A store of ``n`` made-up judgements, closed: all in the file itself, no -wal or -shm beside it.

    It is one SQLite file at ``path`` (the earlier layout, still opened as it is), so that the file's
    faults below are made at ``path``; a store directory's SQLite file is checked alike
    (tests/test_pyterrier_contracts.py).
    """
    path.touch()  # an empty file is a new store of the earlier layout
    store = JudgementStore(path)
    store.add({"model": "made-up"}, records(n), judged(records(n)))
    store._connection().close()  # the last connection: SQLite moves the log into the file and removes it
    return path


def sqlite_file(path: Path, *statements: str) -> Path:
    """Run SQL statements on an SQLite file (created if need be), as another tool would."""
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()
    return path


def damaged(path: Path, offset: int, length: int) -> Path:
    """The file with ``length`` bytes from ``offset`` overwritten (a torn write, a bad sector)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + length] = b"\xff" * length
    path.write_bytes(bytes(data))
    return path


# What a file given as a store can be, and the error that names it: (make it, the message, whether
# the store finds it on opening, before the model loads, or at its first read).
BAD_STORES = {
    "text file": (lambda p: p.write_text("qid docno score\n") and p,
                  "{path} is not a judgement store: it is not an SQLite file (it starts with b'qid docno score\\n')",
                  "open"),
    "directory": (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")) and p,
                  "{path} is a directory, not a judgement store: it has no pt_meta.json, and other files (notes.txt)",
                  "open"),
    "truncated": (lambda p: p.write_bytes(filled_store(p).read_bytes()[:PAGE * 20]) and p,
                  "judgement store {path}: could not open it: it is corrupted, truncated or overwritten "
                  "(SQLite: database disk image is malformed)", "open"),
    "tables' pages overwritten": (
        lambda p: damaged(filled_store(p), 3 * PAGE, 2 * PAGE),
        "judgement store {path}: could not open it: it is corrupted, truncated or overwritten "
        "(SQLite: database disk image is malformed)", "open"),
    "later pages overwritten": (  # the index's leaves: found by the first lookup, before anything is judged
        lambda p: damaged(filled_store(p), 19 * PAGE, 1000 * PAGE),
        "judgement store {path}: could not read it: it is corrupted, truncated or overwritten "
        "(SQLite: database disk image is malformed)", "read"),
    "another application's database": (
        lambda p: sqlite_file(p, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('ada')"),
        "{path} is not a judgement store: it holds the tables ['users'], not ['provenances', 'judgements']", "open"),
    "a newer schema": (
        lambda p: sqlite_file(filled_store(p, 10), "ALTER TABLE judgements ADD COLUMN reviewer TEXT",
                              "PRAGMA user_version = 3"),
        "judgement store {path} has schema version 3, from a newer pyterrier-reasonrank; this one reads version 2 "
        "(upgrade it to use this store)", "open"),
    "changed tables": (
        lambda p: sqlite_file(filled_store(p, 10), "ALTER TABLE judgements DROP COLUMN samples"),
        "{path} is not a judgement store of schema version 2: its judgements table has no ['samples']", "open"),
}


def contents(path: Path) -> object:
    """The bytes of a file, or a folder's listing."""
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


@pytest.mark.parametrize("kind", BAD_STORES)
def test_what_is_no_usable_store_is_refused_before_any_judging_and_left_as_it_was(tiny_model, tmp_path, kind):
    make, message, found = BAD_STORES[kind]
    path = make(tmp_path / "judgements.sqlite")
    before = contents(path)
    expected = message.format(path=path)
    if found == "open":
        with pytest.raises(StoreError) as raised:
            JudgementStore(path)
        assert str(raised.value) == expected
    ranker = ReasonRanker(str(tiny_model), store=str(path), max_new_tokens=4)
    counted = []
    with pytest.raises(StoreError) as raised:
        ranker.load()
        with counting_judgements(ranker) as counted:
            ranker(pairs(2, 3))
    assert str(raised.value) == expected
    assert sum(counted) == 0 and (not ranker.student.loaded) == (found == "open")  # refused before the model loads
    assert contents(path) == before


@pytest.mark.parametrize("kind", [*BAD_STORES, "an unwritable place"])
def test_the_command_names_a_bad_store_in_one_line(tiny_model, tmp_path, capsys, kind):
    if kind == "an unwritable place":
        path, expected = Path(UNWRITABLE) / "judgements.sqlite", f"Operation not permitted: {UNWRITABLE}"
    else:
        make, message, _ = BAD_STORES[kind]
        path = make(tmp_path / "judgements.sqlite")
        expected = message.format(path=path)
    code = reasonrank(["demo", "--model", str(tiny_model), "--store", str(path), "--max-new-tokens", "4",
                       "--num-queries", "1"])
    assert one_line_error(capsys, code, "reasonrank demo") == f"reasonrank demo: {expected}"


def version_1_store(path: Path, n: int = 10) -> Path:
    """A store as version 1 wrote it (no library versions), with ``n`` made-up judgements."""
    return sqlite_file(filled_store(path, n), "ALTER TABLE judgements DROP COLUMN versions", "DROP TABLE versions",
                       "PRAGMA user_version = 1")


@pytest.mark.parametrize("recorded", [0, 1])  # 0: written before the schema version was recorded
def test_a_version_1_store_is_brought_up_to_date_when_opened_for_writing(tmp_path, recorded):
    path = sqlite_file(version_1_store(tmp_path / "old.sqlite"), f"PRAGMA user_version = {recorded}")
    before = JudgementStore(path, read_only=True)  # read as it is: nothing written
    assert before.schema_version == 1 and len(before) == 10 and before.frame()["library_versions"].isna().all()
    store = JudgementStore(path)
    assert store.schema_version == 2 and len(store) == 10
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
    assert store.frame()["library_versions"].isna().all()  # none were recorded for them
    found, judgements = store.lookup([r["key"] for r in records(3)], versions={"transformers": "0.0.1"})
    assert list(found) == [0, 1, 2] and judgements.explanations[0] == records(1)[0]["explanation"]
    store.add({"model": "made-up"}, records(2, start=10), judged(records(2, start=10)), versions={"torch": "2.13.0"})
    recorded = store.frame().set_index("docno")["library_versions"]
    assert recorded.isna().sum() == 10 and recorded[["d10", "d11"]].tolist() == [{"torch": "2.13.0"}] * 2


def test_a_version_1_store_merges_into_a_new_one(tmp_path):
    old = version_1_store(tmp_path / "old.sqlite")
    store = JudgementStore(tmp_path / "judgements")
    assert store.merge(old) == 10 and store.frame()["library_versions"].isna().all()
    assert JudgementStore(old, read_only=True).schema_version == 1  # a merge reads it, and leaves it as it was


def test_a_read_only_store_serves_what_it_holds_and_judges_the_rest_unsaved(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(judging, "CHUNK_PAIRS", 2)  # several chunks, one warning
    inp, folder = pairs(3, 2), tmp_path / "shared"
    path = folder / DATABASE
    settings = dict(max_new_tokens=6)
    without = ReasonRanker(str(tiny_model), **settings)(inp)
    judged_with_count(ReasonRanker(str(tiny_model), store=str(folder), **settings), inp[inp.qid == "q0"])
    sqlite_file(path, "PRAGMA wal_checkpoint(TRUNCATE)")
    before = contents(path)
    store = JudgementStore(folder, read_only=True)
    assert store.read_only and store.read_only_reason == "opened with read_only=True"
    with pytest.warns(UserWarning) as warned:
        out, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, **settings), inp)
    assert judged == 4  # q1's and q2's documents; q0's are served
    assert [str(w.message) for w in warned if "judgement store" in str(w.message)] == [
        f"judgement store {path} is read-only (opened with read_only=True): it serves the pairs it holds; the "
        f"pairs it lacks are judged but not saved"]
    assert list(out.docno) == list(without.docno) and list(out.explanation) == list(without.explanation)
    assert out.score.to_numpy() == pytest.approx(without.score.to_numpy(), abs=1e-5)
    assert len(store) == 2 and contents(path) == before
    with pytest.raises(StoreError, match=r"is read-only \(opened with read_only=True\): the judgements of .* cannot"):
        store.merge(filled_store(tmp_path / "other.sqlite", 5))
    with pytest.raises(FileNotFoundError, match="no judgement store at"):
        JudgementStore(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


READ_ONLY_SCRIPT = """
import json, sys, warnings
from pyterrier_reasonrank import JudgementStore
from pyterrier_reasonrank.judgements import Judgements
held, fresh = json.loads(open(sys.argv[3]).read())
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as warned:
    store = JudgementStore(sys.argv[1])
    held, _ = store.lookup([r["key"] for r in held])
    added = [store.add({"model": "made-up"}, fresh[start:start + 5],
                       Judgements.of(*([r[name] for r in fresh[start:start + 5]] for name in
                                       ("explanation", "probabilities", "forced", "tokens", "samples"))))
             for start in (0, 5)]
try:
    JudgementStore(sys.argv[2])
    created = None
except Exception as error:
    created = f"{type(error).__name__}: {error}"
print(json.dumps({"read_only": store.read_only, "reason": store.read_only_reason, "held": len(held),
                  "length": len(store), "added": added, "warnings": [str(w.message) for w in warned],
                  "created": created}))
"""


def read_only_command(folder: Path) -> tuple[list[str], str]:
    """How to run a command that sees ``folder`` read-only, as a read-only mount or a shared folder
    does, and why the store is then read-only; as root, where file modes stop no write, a user
    namespace's read-only bind mount.
    """
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)], \
            "it is on a read-only file system"
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [], "its folder is not writable"
    pytest.skip("as root, a read-only folder needs a user namespace (unshare -rm), which this machine refuses")


def test_a_store_in_a_read_only_folder_is_found_to_be_read_only(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    path = filled_store(folder / "judgements.sqlite", 20)
    before = contents(path)
    (tmp_path / "records.json").write_text(json.dumps([records(30), records(10, 100)]))
    prefix, reason = read_only_command(folder)
    run = subprocess.run([*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(path), str(folder / "new.sqlite"),
                          str(tmp_path / "records.json")],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    folder.chmod(0o755)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result == {
        "read_only": True, "reason": reason, "held": 20, "length": 20, "added": [0, 0],
        "warnings": [f"judgement store {path} is read-only ({reason}): it serves the pairs it holds; the pairs it "
                     f"lacks are judged but not saved"],
        "created": f"StoreError: judgement store {folder / 'new.sqlite'} cannot be created: {reason}"}
    assert contents(path) == before


def test_merging_a_store_into_itself_adds_nothing_at_once(tmp_path):
    path = filled_store(tmp_path / "judgements.sqlite", 50)
    (tmp_path / "link.sqlite").symlink_to(path)
    store = JudgementStore(path)
    start = time.monotonic()
    assert store.merge(store) == 0 and store.merge(path) == 0 and store.merge(tmp_path / "link.sqlite") == 0
    assert time.monotonic() - start < 5 and len(store) == 50


def test_a_full_disk_stops_the_run_and_keeps_every_earlier_commit(tiny_model, tmp_path, monkeypatch):
    """SQLite's page limit stands in for a full disk: the batch that passes it fails."""
    monkeypatch.setattr(judging, "CHUNK_PAIRS", 4)  # a commit per query
    store, inp = JudgementStore(tmp_path / "judgements"), pairs(20, 4)
    path = store.file
    pages = store._connection().execute("PRAGMA page_count").fetchone()[0]
    store._connection().execute(f"PRAGMA max_page_count = {pages + 6}")
    ranker = ReasonRanker(str(tiny_model), store=store, batch_size=1, max_new_tokens=32)
    with pytest.raises(StoreError) as raised:
        ranker(inp)
    assert str(raised.value) == (f"judgement store {path}: could not save 4 judgements: the disk is full (SQLite: "
                                 f"database or disk is full); the judgements saved before are kept")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        kept = connection.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    assert 4 <= kept < 80 and kept % 4 == 0  # whole batches, the failed one rolled back
    _, judged = judged_with_count(ReasonRanker(str(tiny_model), store=JudgementStore(path.parent), batch_size=1,
                                               max_new_tokens=32), inp)
    assert judged == 80 - kept


def test_the_command_on_a_full_disk_says_so_in_one_line_and_keeps_what_it_saved(tiny_model, tmp_path, capsys):
    """A file-size limit stands in for a full disk (writes past it fail with EFBIG)."""
    folder = tmp_path / "judgements"
    path = folder / DATABASE
    command = ["demo", "--model", str(tiny_model), "--store", str(folder), "--max-new-tokens", "128"]
    assert reasonrank([*command, "--num-queries", "1"]) == 0
    capsys.readouterr()
    with sqlite3.connect(path) as connection:
        saved = connection.execute("SELECT key, p0, p1, p2, explanation FROM judgements ORDER BY key").fetchall()

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))  # SQLite's -shm index takes the first 32 KiB

    run = subprocess.run([sys.executable, "-m", "pyterrier_reasonrank.cli", *command], capture_output=True,
                         text=True, timeout=300, preexec_fn=small_disk)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"reasonrank demo: judgement store {path}: could not save 29 judgements: a disk I/O error, as on a full disk "
        f"or past a file-size limit (SQLite: disk I/O error); the judgements saved before are kept")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT key, p0, p1, p2, explanation FROM judgements ORDER BY key").fetchall() \
            == saved


@pytest.fixture(scope="module")
def export(tiny_model, tmp_path_factory) -> Path:
    """A Parquet export of a store of six judgements."""
    folder = tmp_path_factory.mktemp("export")
    store = JudgementStore(folder / "judgements")
    ReasonRanker(str(tiny_model), store=store, max_new_tokens=4)(pairs(2, 3))
    return store.to_parquet(folder / "judgements.parquet")


def edited_provenance(frame: pd.DataFrame) -> pd.DataFrame:
    fields = json.loads(frame.loc[0, "provenance_json"])
    frame.loc[:, "provenance_json"] = json.dumps({**fields, "max_new_tokens": 512}, sort_keys=True)
    return frame


# How an export can be tampered with, and what the refusal says after "FILE" (the file).
TAMPERED = {
    "probabilities out of range": (  # as reported: the ranker then scored 14.0 on a 0-2 scale
                                   lambda f: f.assign(p0=np.where(f.index == 4, 0.0, f.p0),
                                                      p1=np.where(f.index == 4, 0.0, f.p1),
                                                      p2=np.where(f.index == 4, 7.0, f.p2)),
                                   ", row 4: p2 is 7.0, not a probability in [0, 1]"),
    "probabilities not summing to 1": (lambda f: f.assign(**{p: np.where(f.index == 2, 0.5, f[p])
                                                             for p in ["p0", "p1", "p2"]}),
                                       ", row 2: p0, p1 and p2 sum to 1.5, not 1"),
    "a missing probability": (lambda f: f.assign(p1=np.where(f.index == 3, np.nan, f.p1)),
                              ", row 3: p1 is None, not a probability in [0, 1]"),
    "missing columns": (lambda f: f.drop(columns=["p2", "provenance_json"]),
                        " is not an export of a judgement store: it lacks the columns ['p2', 'provenance_json']"),
    "probabilities as text": (lambda f: f.assign(p1=f.p1.map(lambda p: f"{p:.2f}")),
                              ", row 0: p1 is '0."),
    "a fractional count": (lambda f: f.assign(tokens=f.tokens.astype(float) + 0.5),
                           ", row 0: tokens is "),
    "a label that is not a flag": (lambda f: f.assign(forced=np.where(f.index == 5, 3, 0)),
                                   ", row 5: forced is 3, not true or false"),
    "a key that is not a hash": (lambda f: f.assign(key=np.where(f.index == 2, "d1-2", f.key)),
                                 ", row 2: key is 'd1-2', not a SHA-256 in hex"),
    "an edited provenance": (edited_provenance, ", row 0: provenance_json is not the provenance whose id is "),
    "a provenance that is not JSON": (lambda f: f.assign(provenance_json="{model: tiny"),
                                      ", row 0: provenance_json is not JSON (Expecting property name"),
    "edited library versions": (lambda f: f.assign(versions_json=json.dumps({"torch": "2.0.0"})),
                                ", row 0: versions_json is not the versions whose id is "),
    "library versions that are no versions": (lambda f: f.assign(versions_json=json.dumps({"torch": 2})),
                                              ", row 0: versions_json is {'torch': 2}, not library names and their "
                                              "versions"),
    "library versions without their JSON": (lambda f: f.assign(versions_json=None),
                                            ", row 0: versions_json is None, not JSON text"),
}


@pytest.mark.parametrize("kind", TAMPERED)
def test_a_tampered_export_is_refused_naming_the_file_and_row(export, tmp_path, kind):
    edit, message = TAMPERED[kind]
    path = tmp_path / "tampered.parquet"
    edit(pd.read_parquet(export)).to_parquet(path, index=False)
    store = JudgementStore(tmp_path / "judgements")
    with pytest.raises(InputError) as raised:
        store.import_parquet(path)
    assert str(raised.value).startswith(f"{path}{message}"), str(raised.value)
    assert len(str(raised.value).splitlines()) == 1
    assert len(store) == 0 and store.provenances().empty  # all or nothing
    assert store.import_parquet(export) == 6  # the export itself is fine


def test_a_file_that_is_no_parquet_is_refused_by_name(tmp_path):
    path = tmp_path / "judgements.parquet"
    path.write_text("key,p0\n")
    with pytest.raises(InputError, match=f"^{path} is not a Parquet file: "):
        JudgementStore(tmp_path / "judgements").import_parquet(path)


def test_a_tampered_store_is_refused_by_merge_naming_it_and_the_row(tmp_path):
    other = filled_store(tmp_path / "other.sqlite", 30)
    sqlite_file(other, "UPDATE judgements SET p0 = 0, p1 = 0, p2 = 7 WHERE rowid = 13")
    store = JudgementStore(tmp_path / "judgements")
    with pytest.raises(InputError) as raised:
        store.merge(other)
    assert str(raised.value) == f"judgement store {other}, row 12: p2 is 7.0, not a probability in [0, 1]"
    assert len(store) == 0
    sqlite_file(other, "UPDATE judgements SET p0 = 0.2, p1 = 0.3, p2 = 0.5",
                "UPDATE provenances SET provenance = '{\"model\": \"another\"}'")
    with pytest.raises(InputError, match=f"^judgement store {other}, provenance '[0-9a-f]{{64}}': its JSON is not "
                                         f"the provenance whose id is"):
        store.merge(other)
    identity = provenance_id({"model": "made-up"})
    sqlite_file(other, f"UPDATE provenances SET provenance = '{{\"model\": \"made-up\"}}' WHERE id = '{identity}'")
    assert store.merge(other) == 30
