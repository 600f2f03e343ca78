"""The worker's durable spool of run endings (sandboxctl/worker/spool.py): what is kept reads back whole,
and a half-written file is never taken for an entry."""


from providers.base import ExecutionResult, Status
from sandboxctl.worker.spool import Ending, Spool


def test_an_outcome_reads_back_exactly_as_it_was_kept(tmp_path):
    outcome = ExecutionResult(status=Status.SUCCEEDED, stdout="hé\n", result_present=True,
                              result_value={"rows": [1, 2.5, None]}, artifacts=[{"name": "a.csv", "size": 3}],
                              execution_time=0.25, memory_used_kb=1024)
    spool = Spool(tmp_path / "spool")
    entry = spool.keep(Ending("1f0e", "worker@host#ab", outcome=outcome))
    [found] = spool.entries()
    assert found == entry
    ending = Ending.from_json(found.read_text())
    assert ending == Ending("1f0e", "worker@host#ab", outcome=outcome)
    assert isinstance(ending.outcome.status, Status)


def test_an_error_ending_reads_back(tmp_path):
    spool = Spool(tmp_path)
    spool.keep(Ending("2a", "w#1", error=("sandbox_error", "pool_exhausted", "no sandbox")))
    [found] = spool.entries()
    assert Ending.from_json(found.read_text()).error == ("sandbox_error", "pool_exhausted", "no sandbox")


def test_entries_are_only_whole_files_and_drop_removes_them(tmp_path):
    spool = Spool(tmp_path)
    (tmp_path / ".incoming-half").write_text('{"execution_id": ')  # a write cut short by a crash
    entry = spool.keep(Ending("3b", "w#1", error=("failed", "x", "y")))
    assert spool.entries() == [entry]
    assert entry.is_file() and not entry.name.startswith(".")
    spool.drop(entry)
    assert spool.entries() == []


def test_a_missing_folder_has_no_entries(tmp_path):
    assert Spool(tmp_path / "never-made").entries() == []
