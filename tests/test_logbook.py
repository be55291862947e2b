"""Tests of nbhelpers.logbook: persistence, crash safety, replacement by key, exports."""

import base64
import json
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from nbhelpers.logbook import ENV_VAR, Logbook


@pytest.fixture
def figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    yield fig
    plt.close(fig)


def test_round_trip_in_a_new_object(tmp_path, figure, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "abc.json").write_text("{}")
    book = Logbook(tmp_path / "lb")
    first = book.add(
        "01 original run",
        observation="Loss stays at 2.30.",
        hypothesis="The learning rate is far too small.",
        notebook="01_original.ipynb",
        runs=["runs/abc.json"],
    )
    book.add("03 code review", result="zero_grad fixes it.", figure=figure)
    again = Logbook(tmp_path / "lb")  # as after a kernel restart
    entries = again.entries()
    assert len(entries) == 2
    assert entries[0] == first
    assert entries[0].runs == ("runs/abc.json",)
    assert entries[0].notebook == "01_original.ipynb"
    assert entries[1].figure.startswith("figures/") and entries[1].figure.endswith(".png")
    assert (tmp_path / "lb" / entries[1].figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert entries[0].timestamp[:2] == "20" and "T" in entries[0].timestamp


def test_default_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    book = Logbook()
    book.add("00 question", observation="x")
    assert (tmp_path / "from-env" / "logbook.jsonl").is_file()
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.chdir(tmp_path)
    assert Logbook().path == tmp_path.resolve() / "logbook" / "logbook.jsonl"


def test_truncated_last_line_keeps_earlier_entries(tmp_path):
    book = Logbook(tmp_path)
    book.add("a", observation="one")
    book.add("b", observation="two")
    with open(book.path, "ab") as f:  # a crash in the middle of writing entry three
        f.write(b'{"stage": "c", "observation": "thr')
    with pytest.warns(UserWarning, match="line 3"):
        assert [e.stage for e in Logbook(tmp_path).entries()] == ["a", "b"]
    book.add("d", observation="four")  # the next append starts on a fresh line
    with pytest.warns(UserWarning, match="line 3"):
        assert [e.stage for e in book.entries()] == ["a", "b", "d"]
    lines = book.path.read_text().splitlines()
    assert json.loads(lines[-1])["stage"] == "d"


def test_same_key_replaces_in_place(tmp_path):
    book = Logbook(tmp_path)
    book.add("02 speed", observation="10 min per run", key="02-speed")
    book.add("03 review", observation="no zero_grad", key="03-review")
    book.add("02 speed", observation="2 min per run after the fixes", key="02-speed")
    book.add("03 review", observation="no key, always appended")
    entries = Logbook(tmp_path).entries()
    assert [e.observation for e in entries] == [
        "2 min per run after the fixes",
        "no zero_grad",
        "no key, always appended",
    ]
    assert book.remove("03-review") is True
    assert book.remove("missing") is False
    assert [e.key for e in book.entries()] == ["02-speed", None]
    before = book.entries()
    book.compact()
    assert book.entries() == before
    assert len(book.path.read_text().splitlines()) == 2


def test_bad_inputs(tmp_path):
    book = Logbook(tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        book.add("01", observation="  ")
    with pytest.raises(ValueError, match="stage"):
        book.add("", observation="x")
    with pytest.raises(ValueError, match="not an existing .png"):
        book.add("01", observation="x", figure=tmp_path / "nope.png")
    with pytest.raises(TypeError, match="Figure or a PNG path"):
        book.add("01", observation="x", figure=42)
    with pytest.raises(ValueError, match="key"):
        book.add("01", observation="x", key="")
    assert len(book) == 0


def test_exports(tmp_path, figure, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("r1.json", "r2.json"):
        (tmp_path / "runs" / name).write_text("{}")
    book = Logbook(tmp_path, title="My logbook")
    book.add(
        "05 data <inspection>",
        observation="Train and test share images.",
        hypothesis="Eval data is loaded from the train split.",
        result="Test accuracy fell from 99% to 88% after the fix.",
        figure=figure,
        runs=["runs/r1.json", "runs/r2.json"],
        key="05",
    )
    md_path = book.export_markdown(author="Ada")
    md = md_path.read_text()
    assert md_path == tmp_path / "logbook.md"
    assert md.startswith("# My logbook")
    assert "*Ada*" in md
    assert "## 05 data &lt;inspection&gt;" in md  # HTML is shown, never run
    assert "**Observation.** Train and test share images." in md
    assert "**Hypothesis.** Eval data is loaded from the train split." in md
    assert "**Result.** Test accuracy fell from 99% to 88% after the fix." in md
    assert "![05 data &lt;inspection&gt;](figures/05.png)" in md
    assert "`runs/r1.json`, `runs/r2.json`" in md
    assert (tmp_path / "figures" / "05.png").is_file()

    html_path = book.export_html(tmp_path / "out" / "handin.html")
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<h2>05 data &lt;inspection&gt;</h2>" in page  # escaped
    assert "Eval data is loaded from the train split." in page
    png = (tmp_path / "figures" / "05.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert 'src="figures/' not in page  # self-contained

    shown = book._repr_html_()
    assert "(1 entry)" in shown and "Train and test share images." in shown
    assert book._repr_markdown_() == book.to_markdown()


def test_empty_logbook_exports(tmp_path):
    book = Logbook(tmp_path / "new")
    assert book.entries() == []
    assert "No entries yet" in book.to_markdown()
    assert "No entries yet" in book.to_html()


def test_bad_directory_fails_at_construction(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="int"):
        Logbook(123)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("my notes")
    for directory in (a_file, a_file / "sub"):
        with pytest.raises(NotADirectoryError, match="notes.txt is a file"):
            Logbook(directory)
    monkeypatch.setenv(ENV_VAR, str(a_file))
    with pytest.raises(NotADirectoryError, match=ENV_VAR):
        Logbook()
    assert a_file.read_text() == "my notes"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_failed_write_names_the_folder_and_the_variable(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="cannot write the logbook in /proc/nope"):
        Logbook("/proc/nope").add("01", observation="x")
    monkeypatch.setenv(ENV_VAR, "/proc/nope")  # like an unmounted Google Drive
    with pytest.raises(FileNotFoundError, match=f"/proc/nope.*{ENV_VAR}='/proc/nope'"):
        Logbook().add("01", observation="x")


def test_runs_are_checked_before_anything_is_written(tmp_path, figure):
    book = Logbook(tmp_path / "lb")
    book.add("01", observation="kept")
    before = book.path.read_bytes()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        book.add("02", observation="x", figure=figure, runs=["nope.json"])
    with pytest.raises(TypeError, match="got 42"):
        book.add("02", observation="x", figure=figure, runs=42)
    with pytest.raises(TypeError, match="got 42"):
        book.add("02", observation="x", runs=[42])
    assert book.path.read_bytes() == before
    assert not (tmp_path / "lb" / "figures").exists()

    run_file = tmp_path / "r.json"
    run_file.write_text("{}")

    class Record:  # like a saved RunRecord
        path = str(run_file)

    assert book.add("03", observation="x", runs=run_file).runs == (str(run_file),)
    assert book.add("04", observation="x", runs=Record()).runs == (str(run_file),)
    assert [e.stage for e in book.entries()] == ["01", "03", "04"]


GOOD = {"stage": "01", "observation": "kept", "timestamp": "2025-01-01T10:00:00+01:00"}
BAD_LINES = {  # a line of a shared logbook.jsonl -> the field the warning must name
    "observation a number": ({**GOOD, "observation": 5}, "observation=5"),
    "timestamp an integer": ({**GOOD, "timestamp": 1735722000}, "timestamp=1735722000"),
    "figure an integer": ({**GOOD, "figure": 7}, "figure=7"),
    "notebook a list": ({**GOOD, "notebook": ["x"]}, "notebook=['x']"),
    "key a number": ({**GOOD, "key": 3}, "key=3"),
    "runs a string": ({**GOOD, "runs": "abc"}, "runs='abc'"),
    "runs of numbers": ({**GOOD, "runs": [1, 2]}, "runs=[1, 2]"),
    "stage a number": ({**GOOD, "stage": 3}, "without a stage"),
    "not an object": (5, "not a JSON object"),
    "a list": ([GOOD], "not a JSON object"),
    "removal without a key": ({"removed": True}, "key=None is invalid"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_line_of_the_wrong_type_is_skipped_with_a_warning(tmp_path, kind):
    line, fragment = BAD_LINES[kind]
    rows = [GOOD, line, {**GOOD, "observation": "also kept"}]
    (tmp_path / "logbook.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    book = Logbook(tmp_path)
    with pytest.warns(UserWarning) as caught:
        entries = book.entries()
    assert [e.observation for e in entries] == ["kept", "also kept"]
    message = str(caught[0].message)
    assert "line 2" in message and fragment in message
    with pytest.warns(UserWarning, match="line 2"):  # both exports work
        assert "also kept" in book.to_markdown() and "also kept" in book.to_html()


def test_a_deeply_nested_line_is_skipped(tmp_path):
    (tmp_path / "logbook.jsonl").write_text(
        json.dumps(GOOD) + "\n" + '{"stage": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    )
    with pytest.warns(UserWarning, match="line 2"):
        assert [e.observation for e in Logbook(tmp_path).entries()] == ["kept"]


def test_markdown_export_shows_html_and_keeps_the_stage_on_one_line(tmp_path):
    book = Logbook(tmp_path)
    book.add(
        "<script>alert(1)</script>\n# injected heading",
        observation='<img src=x onerror="alert(2)"> & more',
        notebook="<b>nb</b>",
    )
    md = book.to_markdown()
    assert "<script" not in md and "<img" not in md and "<b>" not in md
    assert "## &lt;script&gt;alert(1)&lt;/script&gt; # injected heading\n" in md
    assert not any(line.startswith("# injected") for line in md.splitlines())
    assert '**Observation.** &lt;img src=x onerror="alert(2)"&gt; &amp; more' in md


def test_to_frame_shows_one_short_row_per_entry(tmp_path):
    book = Logbook(tmp_path)
    book.add("03 code review", observation="o" * 200, hypothesis="h", result="r", key="03")
    book.add("04 extras", observation="short", key="04")
    book.add("03 code review", observation="replaced", key="03")
    frame = book.to_frame(width=20)
    assert list(frame.columns) == ["stage", "observation", "hypothesis", "result"]
    assert list(frame["stage"]) == ["03 code review", "04 extras"]
    assert frame["observation"].tolist() == ["replaced", "short"]
    book.add("05 data", observation="x" * 50, key="05")
    assert book.to_frame(width=20)["observation"].iloc[-1] == "x" * 19 + "…"
