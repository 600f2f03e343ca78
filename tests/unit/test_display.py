"""How the admin shows a run (executions/display.py): output folded after its first lines without reading the
rest, cells numbered the same way on every page, code highlighted yet escaped, times told briefly."""

from datetime import timedelta

import pytest
from django.utils import timezone

from sandboxctl.executions import artifact_store, display
from sandboxctl.executions.admin import when
from sandboxctl.executions.models import Execution, Session

pytestmark = pytest.mark.django_db


def run(**fields) -> Execution:
    return Execution.objects.create(**{"provider": "self_managed", "language": "python", "code": "print(1)",
                                       "status": "succeeded", **fields})


def test_short_output_is_shown_whole():
    shown = display.output(run(stdout="one\ntwo\n"), "stdout")
    assert (shown.head, shown.folded, shown.size) == ("one\ntwo\n", False, 8)
    assert display.output(run(), "stderr") is None, "nothing written, nothing shown"


def test_output_past_the_fold_shows_its_first_lines_and_the_size_of_the_whole():
    text = "".join(f"{n}\n" for n in range(301))
    shown = display.output(run(stdout=text), "stdout")
    assert shown.folded and shown.head == "".join(f"{n}\n" for n in range(300)) and shown.size == len(text)


def test_output_kept_in_the_store_is_folded_and_measured_without_being_read():
    execution = run()
    whole = "x" * (artifact_store.OUTPUT_INLINE_CHARS * 3)
    execution.stdout, execution.stdout_file, _ = artifact_store.offload_output(execution, "stdout", whole)
    execution.save()
    shown = display.output(execution, "stdout")
    assert shown.folded and shown.head == whole[:artifact_store.OUTPUT_INLINE_CHARS] and shown.size == len(whole)
    assert shown.url.endswith(f"/admin/executions/execution/{execution.pk}/output/stdout.txt")


def test_cells_are_numbered_in_order_alike_everywhere_even_when_created_in_the_same_instant():
    session = Session.objects.create(provider="self_managed", language="python", idle_timeout=60, max_lifetime=60)
    instant = timezone.now()
    cells = [run(session=session, created_at=instant + timedelta(seconds=second)) for second in (0, 1, 1, 2)]
    run()  # another session's, or none: not counted
    numbers = {cell.execution.pk: cell.number for cell in display.session_cells(session)}
    assert sorted(numbers.values()) == [1, 2, 3, 4]
    assert all(display.cell_number(cell) == numbers[cell.pk] for cell in cells)
    assert [cell.number for cell in display.session_cells(session, after=2)] == [3, 4]
    assert display.cell_number(run()) is None, "a one-shot run has no place in a session"


def test_code_is_highlighted_and_escaped_and_huge_code_is_left_plain():
    code = "def main():\n    return '<script>alert(1)</script>'\n"
    html = display.highlighted(code, "python")
    assert '<span class="k">def</span>' in html and "<script>" not in html and "&lt;script&gt;" in html
    huge = "(" * (display.HIGHLIGHT_MAX_CHARS + 1)
    assert display.highlighted(huge, "python") == f'<pre class="run-code" tabindex="0">{huge}</pre>'


def test_a_time_in_a_list_is_told_as_briefly_as_it_can_be():
    now = timezone.localtime()
    assert f">{now:%H:%M:%S}</time>" in when(now)
    assert f">{now - timedelta(days=400):%Y-%m-%d}</time>" in when(now - timedelta(days=400))
    assert when(None) == display.EMPTY
