"""The logbook: what you saw, what you think causes it, what happened when you tested it.

Every notebook of the series appends to one shared logbook::

    from nbhelpers.logbook import Logbook
    book = Logbook()                       # $NBHELPERS_LOGBOOK_DIR, else ./logbook
    book.add(
        "03 code review",
        observation="Training loss stays at 2.30 for 10 epochs.",
        hypothesis="Gradients are never zeroed, so every step uses the sum of all past gradients.",
        result="With optimizer.zero_grad() the loss falls to 0.9 in 2 epochs.",
        figure=fig,                        # optional matplotlib Figure, saved as PNG
        runs=[record.path],                # optional run records this is based on
        key="03-zero-grad",                # re-running the cell replaces, not duplicates
    )
    book                                   # shows the entries in the notebook
    book.export_html()                     # one self-contained file to print to PDF

Storage: one JSON object per line in ``logbook.jsonl`` inside the logbook folder,
figures in ``figures/`` next to it. Each entry is appended with write + flush +
``os.fsync``, so it survives a kernel restart or crash; a half-written last line (the
process died mid-write) is skipped with a warning and loses nothing written before.
An entry added again with the same ``key`` replaces the earlier one in place (the file
keeps both lines; the newer wins when read; :meth:`Logbook.compact` drops the old ones).

A logbook may come from someone else's folder (a shared Drive), so it is read as plain
data: a line whose fields have the wrong type is skipped with a warning naming the line;
the exports embed or link a figure only when it is a PNG file the logbook itself wrote,
inside its ``figures/`` folder; every text is escaped in the HTML export, and in the
Markdown export HTML is escaped and a stage name stays on one line.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nbhelpers.files import atomic_path, explained_os_error
from nbhelpers.validate import invalid

__all__ = ["ENV_VAR", "Entry", "Logbook", "default_dir"]

ENV_VAR = "NBHELPERS_LOGBOOK_DIR"
FILE_NAME = "logbook.jsonl"
FIGURE_DIR = "figures"
TEXT_FIELDS = ("observation", "hypothesis", "result")
#: The figures a logbook writes itself (:meth:`Logbook.add`): ``figures/<slug>.png``.
FIGURE_NAME = re.compile(r"figures/[A-Za-z0-9][A-Za-z0-9_.-]*\.png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STRING, _OPTIONAL = (str,), (str, type(None))
#: The JSON type each field of a ``logbook.jsonl`` line must have.
FIELD_TYPES = {
    "stage": _STRING, **dict.fromkeys(TEXT_FIELDS, _STRING), "notebook": _OPTIONAL,
    "timestamp": _STRING, "figure": _OPTIONAL, "runs": (list,), "key": _OPTIONAL,
}  # fmt: skip


def default_dir() -> Path:
    """The logbook folder: ``$NBHELPERS_LOGBOOK_DIR`` if set, else ``logbook/`` in the project
    folder (:func:`nbhelpers.env.project_dir`: the checkout's root, or the working directory)."""
    from nbhelpers.env import work_dir

    return work_dir("logbook", ENV_VAR)


@dataclass(frozen=True)
class Entry:
    """One logbook entry.

    Attributes:
        stage: where it happened, e.g. "03 code review".
        observation / hypothesis / result: free text (Markdown is fine in the export).
        notebook: notebook file name, if known.
        timestamp: local time, ISO 8601 with offset, to the second.
        figure: PNG file name relative to the logbook folder (``figures/...``), or None.
        runs: paths of the run records the entry is based on.
        key: entries with the same key replace each other; None: never replaced.
    """

    stage: str
    observation: str = ""
    hypothesis: str = ""
    result: str = ""
    notebook: str | None = None
    timestamp: str = ""
    figure: str | None = None
    runs: tuple[str, ...] = field(default_factory=tuple)
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as one JSON object (a line of ``logbook.jsonl``)."""
        return {**asdict(self), "runs": list(self.runs)}

    @classmethod
    def from_json(cls, data: Any) -> Entry:
        """The entry of one line of ``logbook.jsonl`` (parsed JSON); unknown keys are ignored.

        Raises:
            ValueError: not an object, no stage, or a field of the wrong type
                (:data:`FIELD_TYPES`; ``runs`` must be a list of strings), naming the field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object but {type(data).__name__}")
        if not isinstance(data.get("stage"), str):
            raise ValueError(f"entry without a stage: {data!r:.200}")
        for name, kinds in FIELD_TYPES.items():
            if name in data and not isinstance(data[name], kinds):
                valid = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise invalid(name, data[name], f"a JSON {valid}")
        runs = data.get("runs", [])
        if not all(isinstance(r, str) for r in runs):
            raise invalid("runs", runs, "a list of strings (paths of run files)")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**known, "runs": tuple(runs)})

    @property
    def meta(self) -> str:
        """The line under the stage in a display or export: time and notebook."""
        return " · ".join(b for b in (self.timestamp.replace("T", " "), self.notebook) if b)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "entry"


def _run_paths(runs: Any) -> tuple[str, ...]:
    """The file paths of ``runs`` (a run record, a path, or an iterable of those)."""
    one = isinstance(runs, (str, os.PathLike)) or hasattr(runs, "path")
    if not one and (isinstance(runs, (bytes, Mapping)) or not isinstance(runs, Iterable)):
        raise TypeError(
            f"runs must be a run record, the path of a run file, or a list of those, got {runs!r}"
        )
    paths = []
    for run in [runs] if one else runs:
        path = run.path if hasattr(run, "path") else run
        if path is None:
            raise ValueError(f"run {run!r} has no path (was it saved?)")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"each run must be a run record or the path of a run file, got {run!r}")
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(
                f"run file {str(path)!r} does not exist (relative paths count from "
                f"{Path.cwd()}); pass the record itself or its .path"
            )
        paths.append(str(path))
    return tuple(paths)


def _write_text(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (temp file, fsync, rename)."""
    with atomic_path(target, suffix=target.suffix) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class Logbook:
    """A persistent logbook in ``directory`` (see the module docstring).

    Args:
        directory: the logbook folder (created on first write); default
            :func:`default_dir`.
        title: heading of the display and the exports.
        author: your name, printed under the title in the exports.

    Raises:
        TypeError: ``directory`` is not a str, a path or None.
        ValueError: ``directory`` is an empty string.
        NotADirectoryError: ``directory`` (or a folder above it) is a file; the
            message names ``$NBHELPERS_LOGBOOK_DIR`` when the folder came from it.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        *,
        title: str = "Logbook: debugging and tuning a training run",
        author: str | None = None,
    ) -> None:
        from_env = directory is None and os.environ.get(ENV_VAR, "").strip()
        self._env_value = os.environ[ENV_VAR] if from_env else None
        if directory is not None and not str(directory).strip():
            raise invalid("directory", directory, "a folder path like 'logbook'")
        self.directory = default_dir() if directory is None else Path(directory).expanduser()
        self.title, self.author = title, author
        existing = next(f for f in (self.directory, *self.directory.parents) if f.exists())
        if not existing.is_dir():
            raise NotADirectoryError(
                f"the logbook folder {self.directory} cannot be used: {existing} is a file, "
                f"not a folder{self._env_hint()}"
            )

    def _env_hint(self) -> str:
        if self._env_value is None:
            return "; pass another folder, e.g. Logbook('logbook')"
        return (
            f"; this folder comes from the environment variable {ENV_VAR}="
            f"{self._env_value!r}: fix or unset it (on Colab: mount Google Drive first)"
        )

    def _writing(self):
        """Re-raise a failed write (same OSError kind) naming the logbook folder."""
        return explained_os_error(f"cannot write the logbook in {self.directory}", self._env_hint())

    @property
    def path(self) -> Path:
        """The JSON Lines file."""
        return self.directory / FILE_NAME

    # -- writing ------------------------------------------------------------
    def add(
        self,
        stage: str,
        observation: str = "",
        hypothesis: str = "",
        result: str = "",
        *,
        notebook: str | None = None,
        figure: Any = None,
        runs: Iterable[Any] = (),
        key: str | None = None,
    ) -> Entry:
        """Append an entry (or replace the one with the same ``key``) and return it.

        Args:
            stage: e.g. "05 data inspection".
            observation, hypothesis, result: text; at least one must be non-empty.
            notebook: notebook file name, e.g. "05_data.ipynb".
            figure: a matplotlib Figure (saved as PNG, 100 dpi) or the path of an
                existing PNG (copied); stored under ``figures/``.
            runs: a run record, the path of a run file, or a list of those.
            key: re-running a cell with the same key replaces its entry instead of
                adding another one.

        Raises:
            ValueError: empty ``stage``, all three texts empty, empty ``key``, a figure
                path that does not exist or is not a PNG, a run record never saved.
            TypeError: a text that is not a string; ``figure`` is neither a Figure nor a
                path; ``runs`` or one of them is neither a run record nor a path.
            FileNotFoundError: a run file that does not exist.
            OSError: writing failed (same kind as the original error); the message
                names the logbook folder and, if it came from it, ``$NBHELPERS_LOGBOOK_DIR``.

        Every check runs before anything is written.
        """
        texts = {"observation": observation, "hypothesis": hypothesis, "result": result}
        if not isinstance(stage, str) or not stage.strip():
            raise invalid("stage", stage, "a non-empty string like '03 code review'")
        for name, text in texts.items():
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a string, got {type(text).__name__}")
        if not any(t.strip() for t in texts.values()):
            raise ValueError("write at least one of observation, hypothesis or result")
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise invalid("key", key, "a non-empty string or None")
        run_paths, timestamp = _run_paths(runs), _now()
        _check_figure(figure)
        with self._writing():
            stem = _slug(key) if key else f"{_slug(stage)}-{timestamp[:19].replace(':', '')}"
            entry = Entry(
                stage.strip(),
                **{name: text.strip() for name, text in texts.items()},
                notebook=notebook,
                timestamp=timestamp,
                figure=None if figure is None else self._save_figure(figure, stem, bool(key)),
                runs=run_paths,
                key=key,
            )
            self._append(entry.to_json())
        return entry

    def remove(self, key: str) -> bool:
        """Remove the entry with ``key``; returns False if there was none."""
        if key not in {e.key for e in self.entries()}:
            return False
        with self._writing():
            self._append({"key": key, "removed": True, "timestamp": _now()})
        return True

    def _append(self, record: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a+b") as f:
            # a crash mid-write can leave a last line without "\n": start on a fresh line
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def _save_figure(self, figure: Any, stem: str, replace: bool) -> str:
        """Save ``figure`` as ``figures/<stem>.png`` (``<stem>-2.png``... unless ``replace``)."""
        target, counter = self.directory / FIGURE_DIR / f"{stem}.png", 2
        while not replace and target.exists():
            target, counter = target.with_name(f"{stem}-{counter}.png"), counter + 1
        with atomic_path(target, suffix=".png") as tmp:
            if hasattr(figure, "savefig"):
                figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
            else:
                shutil.copyfile(figure, tmp)
        return f"{FIGURE_DIR}/{target.name}"

    def compact(self) -> None:
        """Rewrite the file with only the current entries (atomically: temp file + rename)."""
        lines = [json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in self.entries()]
        with self._writing():
            _write_text(self.path, "".join(lines))

    # -- reading ------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """The current entries, oldest first; a replaced entry keeps its first position.

        Lines that are not valid JSON (e.g. cut off by a crash) or not a valid entry
        (:meth:`Entry.from_json`) are skipped with a ``UserWarning`` naming the line number.
        """
        if not self.path.exists():
            return []
        by_slot: dict[Any, Entry] = {}
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("removed"):
                        if not isinstance(data.get("key"), str):
                            raise invalid("key", data.get("key"), "the key of the entry removed")
                        by_slot.pop(("key", data["key"]), None)
                        continue
                    entry = Entry.from_json(data)
                except (ValueError, TypeError, RecursionError) as err:
                    warnings.warn(
                        f"{self.path}: skipped unreadable line {number} ({err})", stacklevel=2
                    )
                    continue
                slot = ("key", entry.key) if entry.key is not None else ("line", number)
                by_slot[slot] = entry  # dicts keep first insertion position
        return list(by_slot.values())

    def to_frame(self, width: int = 90):
        """The logbook in brief, one row per entry: a pandas DataFrame with columns ``stage``,
        ``observation``, ``hypothesis``, ``result`` (each cut to ``width`` characters).

        The last line of a notebook cell, ``Logbook().to_frame()``, shows it as a table; the
        full text and figures are in :meth:`export_html` / :meth:`export_markdown`.
        """
        import pandas as pd

        def cut(text: str) -> str:
            return text if len(text) <= width else text[: width - 1].rstrip() + "…"

        rows = [{f: cut(getattr(e, f)) for f in ("stage", *TEXT_FIELDS)} for e in self.entries()]
        return pd.DataFrame(rows, columns=["stage", *TEXT_FIELDS])

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"Logbook({str(self.directory)!r}, {len(self)} entries)"

    def _figure_file(self, entry: Entry) -> Path | None:
        """The PNG file of ``entry``'s figure if it is one this logbook wrote: named like
        :data:`FIGURE_NAME`, a plain file (no link) right inside ``figures/``, starting with
        the PNG signature. None otherwise (no figure, missing, or not the logbook's own)."""
        if entry.figure is None or not FIGURE_NAME.fullmatch(entry.figure):
            return None
        folder, file = self.directory / FIGURE_DIR, self.directory / entry.figure
        try:
            if file.is_symlink() or not file.is_file() or file.resolve().parent != folder.resolve():
                return None
            with open(file, "rb") as f:
                return file if f.read(len(_PNG_SIGNATURE)) == _PNG_SIGNATURE else None
        except OSError:
            return None

    # -- export -------------------------------------------------------------
    def to_markdown(self, *, author: str | None = None) -> str:
        """The whole logbook as Markdown; figures linked as ``figures/...png`` (relative to
        the logbook folder). HTML in any text is escaped (shown, never run) and headings stay
        on one line; the texts may hold Markdown."""
        author = author or self.author
        blocks = [f"# {_md(self.title, True)}", *([f"*{_md(author, True)}*"] if author else [])]
        entries = self.entries()
        blocks += [b for e in entries for b in _markdown_blocks(e, self._figure_file(e))] or [
            "_No entries yet._"
        ]
        return "\n\n".join(blocks) + "\n"

    def _entries_html(self, embed_figures: bool) -> str:
        sections = [
            _html_section(entry, self._figure_html(entry, embed_figures) if entry.figure else "")
            for entry in self.entries()
        ]
        return "\n".join(sections) or "<p><em>No entries yet.</em></p>"

    def _figure_html(self, entry: Entry, embed: bool) -> str:
        alt, file = html.escape(entry.stage, quote=True), self._figure_file(entry)
        if file is None:
            return (
                f'<p class="missing">(figure {html.escape(entry.figure)} is missing or not a '
                f"PNG file of this logbook's {FIGURE_DIR}/ folder: not shown)</p>"
            )
        if not embed:
            return f'<img src="{html.escape(entry.figure, quote=True)}" alt="{alt}">'
        return f'<img src="data:image/png;base64,{base64.b64encode(file.read_bytes()).decode()}" alt="{alt}">'

    def to_html(self, *, author: str | None = None, embed_figures: bool = True) -> str:
        """A self-contained HTML document (figures embedded as base64 PNG) that prints
        cleanly to PDF from the browser."""
        author = author or self.author
        byline = f'<p class="author">{html.escape(author)}</p>\n' if author else ""
        return (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f'<body class="nbhelpers-logbook">\n<h1>{html.escape(self.title)}</h1>\n{byline}'
            f"{self._entries_html(embed_figures)}\n</body>\n</html>\n"
        )

    def export_markdown(self, path: str | os.PathLike | None = None, **kwargs: Any) -> Path:
        """Write :meth:`to_markdown` to ``path`` (default ``<logbook>/logbook.md``, next to
        ``figures/`` so the image links work) and return the path."""
        target = Path(path) if path is not None else self.directory / "logbook.md"
        _write_text(target, self.to_markdown(**kwargs))
        return target

    def export_html(self, path: str | os.PathLike | None = None, **kwargs: Any) -> Path:
        """Write :meth:`to_html` to ``path`` (default ``<logbook>/logbook.html``) and return
        the path. Open it in a browser and print to PDF to hand it in."""
        target = Path(path) if path is not None else self.directory / "logbook.html"
        _write_text(target, self.to_html(**kwargs))
        return target

    # -- notebook display ---------------------------------------------------
    def _repr_html_(self) -> str:
        n = len(self)
        return (
            f'<div class="nbhelpers-logbook"><style>{_CSS}</style>'
            f"<h3>{html.escape(self.title)} ({n} {'entry' if n == 1 else 'entries'})</h3>"
            f"{self._entries_html(embed_figures=True)}</div>"
        )

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _texts(entry: Entry) -> list[tuple[str, str]]:
    """``(label, text)`` of the entry's non-empty texts, e.g. ``("Observation", "...")``."""
    return [
        (name.capitalize(), getattr(entry, name)) for name in TEXT_FIELDS if getattr(entry, name)
    ]


def _md(text: str, one_line: bool = False) -> str:
    """``text`` for the Markdown export: ``&``, ``<``, ``>`` as entities (HTML is shown, never
    run); with ``one_line``, every run of white space (newlines too) as one space."""
    text = html.escape(text, quote=False)
    return " ".join(text.split()) if one_line else text


def _markdown_blocks(entry: Entry, figure_file: Path | None) -> list[str]:
    """The Markdown paragraphs of one entry (stage, meta line, texts, figure link, runs);
    the figure is linked only when it is the logbook's own (``figure_file`` not None)."""
    stage = _md(entry.stage, True)
    blocks = [f"## {stage}", f"*{_md(entry.meta, True)}*"]
    blocks += [f"**{label}.** {_md(text)}" for label, text in _texts(entry)]
    if figure_file is not None:
        alt = stage.replace("[", "\\[").replace("]", "\\]")
        blocks.append(f"![{alt}]({entry.figure})")
    elif entry.figure:
        blocks.append(
            f"(figure {_md(entry.figure, True)} is missing or not a PNG file of this logbook: not shown)"
        )
    runs = [
        " ".join(r.replace("`", "'").split()) for r in entry.runs
    ]  # code spans show HTML as text
    return blocks + (["Runs: " + ", ".join(f"`{r}`" for r in runs)] if runs else [])


def _html_section(entry: Entry, figure_html: str) -> str:
    """The HTML ``<section>`` of one entry; every text escaped."""
    esc = html.escape
    parts = [f"<h2>{esc(entry.stage)}</h2>", f'<p class="meta">{esc(entry.meta)}</p>']
    parts += [
        f'<p class="{label.lower()}"><strong>{label}.</strong> {esc(text)}</p>'
        for label, text in _texts(entry)
    ]
    parts += [figure_html] if figure_html else []
    runs = ", ".join(f"<code>{esc(r)}</code>" for r in entry.runs)
    parts += [f'<p class="runs">Runs: {runs}</p>'] if entry.runs else []
    return '<section class="entry">\n' + "\n".join(parts) + "\n</section>"


def _check_figure(figure: Any) -> None:
    """A figure for :meth:`Logbook.add`: None, a matplotlib Figure or an existing PNG file."""
    if figure is None or hasattr(figure, "savefig"):
        return
    if not isinstance(figure, (str, os.PathLike)):
        raise TypeError(
            f"figure must be a matplotlib Figure or a PNG path, got {type(figure).__name__}"
        )
    if not Path(figure).is_file() or Path(figure).suffix.lower() != ".png":
        raise ValueError(f"figure path {str(figure)!r} is not an existing .png file")


# one style for the exported page (body) and the notebook display (div)
_CSS = """
body.nbhelpers-logbook { font-family: system-ui, sans-serif; max-width: 50em; margin: 2em auto;
  padding: 0 1em; line-height: 1.45; color: #222; }
.nbhelpers-logbook .entry { border-top: 1px solid #ccc; margin-top: 1.5em; break-inside: avoid; }
.nbhelpers-logbook .meta, .nbhelpers-logbook .author { color: #666; font-style: italic; }
.nbhelpers-logbook .entry p { white-space: pre-wrap; }
.nbhelpers-logbook img { max-width: 100%; height: auto; }
div.nbhelpers-logbook img { max-width: 480px; }
@media print { body.nbhelpers-logbook { margin: 0; max-width: none; } }
"""
