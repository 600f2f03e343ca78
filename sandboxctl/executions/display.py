"""A run as staff read it in the admin: one `Cell` (its code highlighted, the first lines of its output with the
rest fetched on demand, its result, its error and the pictures it drew), shown alone on the run's page or, in
order, in its session's notebook. templates/admin/executions/cell.html draws a cell."""

import base64
import json
from dataclasses import dataclass, field

from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import JavascriptLexer, PythonLexer

from providers.base import Status
from sandboxctl.executions import artifact_store
from sandboxctl.executions.models import Execution, Session

EMPTY = "—"  # one mark for "nothing here" everywhere in the admin (admin.site.empty_value_display too)
FOLD_AFTER_LINES = 300
INLINE_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")
HIGHLIGHT_MAX_CHARS = 64 * 1024
LEXERS = {"python": PythonLexer, "nodejs": JavascriptLexer}


def seconds(value) -> str:
    """One way to show a duration everywhere in the history: seconds with three decimals."""
    if value is None:
        return EMPTY
    if hasattr(value, "total_seconds"):
        value = value.total_seconds()
    return f"{value:.3f} s"


def outcome_kind(status: str) -> str:
    """ok, problem or pending: the colour a status is shown in."""
    if status == Status.SUCCEEDED:
        return "ok"
    return "problem" if Status(status).is_terminal else "pending"


def highlighted(code: str, language: str) -> SafeString:
    """The code in a focusable <pre class="run-code">, coloured unless it is too big to colour quickly."""
    if len(code) > HIGHLIGHT_MAX_CHARS:
        # Highlighting is superlinear on some inputs (1 MB of `(` took 9.7 s of a web thread): show it plain.
        return format_html('<pre class="run-code" tabindex="0">{}</pre>', code)
    lexer = LEXERS.get(language, PythonLexer)(stripnl=False)
    spans = highlight(code, lexer, HtmlFormatter(nowrap=True))
    return mark_safe(f'<pre class="run-code" tabindex="0">{spans}</pre>')  # Pygments escapes what it formats


@dataclass
class Output:
    """stdout or stderr: its first lines on the page; the whole is fetched only when someone unfolds it."""

    stream: str
    head: str
    folded: bool  # there is more than `head`
    size: int  # bytes of the whole
    truncated: bool  # the run wrote more than its output limit kept
    url: str  # the whole, as a download (and what the unfolding fetches)


@dataclass
class Artifact:
    name: str
    mime_type: str
    size: int
    url: str
    picture: str = ""  # a data: URI for images small enough to show inline


@dataclass
class Cell:
    execution: Execution
    number: int | None  # its place in its session, from 1; None for a one-shot run
    code: SafeString
    outputs: list[Output]
    result: str | None  # main()'s return value as indented JSON; None when main() returned nothing
    artifacts: list[Artifact] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.execution.is_terminal

    @property
    def kind(self) -> str:
        return outcome_kind(self.execution.status)

    @property
    def url(self) -> str:
        return reverse("admin:executions_execution_change", args=[self.execution.pk])

    @property
    def run_time(self) -> str:
        return seconds(self.execution.execution_time)

    @property
    def arguments(self) -> str:
        return json.dumps(self.execution.arguments, ensure_ascii=False) if self.execution.arguments else ""


def output(execution: Execution, stream: str) -> Output | None:
    """The stream as the page shows it, or None when the run wrote nothing there. The row holds the first
    characters of a long output (artifact_store.py), which is all the head needs: the whole is never read here."""
    text = getattr(execution, stream)
    if not text:
        return None
    lines = text.splitlines(keepends=True)
    head = "".join(lines[:FOLD_AFTER_LINES])
    stored = getattr(execution, f"{stream}_file")
    return Output(stream=stream, head=head, folded=bool(stored) or len(lines) > FOLD_AFTER_LINES,
                  size=artifact_store.output_size(execution, stream),
                  truncated=getattr(execution, f"{stream}_truncated"),
                  url=reverse("admin:executions_output", args=[execution.pk, stream]))


def artifacts(execution: Execution) -> list[Artifact]:
    shown = []
    for index, entry in enumerate(execution.artifacts or []):
        artifact = Artifact(name=entry.get("name", "artifact"), mime_type=entry.get("mime_type", ""),
                            size=entry.get("size", 0), url=reverse("admin:executions_artifact",
                                                                   args=[execution.pk, index]))
        if artifact.mime_type in INLINE_IMAGES and artifact.size <= artifact_store.inline_limit():
            # An <img> never runs scripts, so even an svg the code wrote is safe to show this way; a data: URI
            # keeps the picture off the admin's origin as a document.
            encoded = base64.b64encode(artifact_store.content(entry)).decode()
            artifact.picture = f"data:{artifact.mime_type};base64,{encoded}"
        shown.append(artifact)
    return shown


def result(execution: Execution) -> str | None:
    if not execution.result_present:
        return None
    return json.dumps(execution.result, indent=2, ensure_ascii=False)


def cell(execution: Execution, number: int | None = None) -> Cell:
    return Cell(execution=execution, number=number, code=highlighted(execution.code, execution.language),
                outputs=[shown for stream in ("stdout", "stderr") if (shown := output(execution, stream))],
                result=result(execution), artifacts=artifacts(execution))


# A session's cells in order: by creation, the id breaking a tie, so a cell keeps its number.
CELL_ORDER = ("created_at", "id")


def cell_number(execution: Execution) -> int | None:
    """Where the run stands in its session (1 for the first cell), or None for a one-shot run."""
    if execution.session_id is None:
        return None
    earlier = Q(created_at__lt=execution.created_at) | Q(created_at=execution.created_at, id__lt=execution.id)
    return Execution.objects.filter(earlier, session_id=execution.session_id).count() + 1


def session_cells(session: Session, after: int = 0) -> list[Cell]:
    """The session's cells numbered above `after`, in order."""
    rows = Execution.objects.filter(session=session).order_by(*CELL_ORDER)[after:]
    return [cell(execution, number) for number, execution in enumerate(rows, start=after + 1)]
