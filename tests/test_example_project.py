"""The example project runs as its README says, in test mode (fakeredis), with no server.

The README is executed as written, in its own order, on a copy of the example project:
every ``sh`` and ``console`` command is run (``manage.py`` commands as they are; the
interactive ``createsuperuser`` with ``--noinput``; ``runserver`` stands for the server
that the ``curl`` commands reach). The ``curl`` commands of one server session are
sent through ``django.test.Client`` in one process, since fakeredis keeps its data in
the memory of the process, and the output shown under each must match the real answer:

* whitespace outside JSON strings is ignored, and ``...`` matches anything;
* a 13-digit number (a timestamp or cursor) matches any number, but consistently: a
  number shown again, in an output or as ``since=`` in a later command, stands for the
  same real value, which is put into the later commands; two different numbers on the
  page must stand for two different real values.

The one thing the test cannot do as a user does is wait: the README restarts the server
with ``DIFFS_MAX_ELEMENT_AGE=5`` and waits 5 seconds. Here a second of the page is a
millisecond: the restart sets ``max_element_age`` to 5 ms and the session waits until
the Redis clock is 5 ms past the last cursor handed out.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
README = EXAMPLE / "README.rst"
PREFIX = "example:diffs:"
#: The interpreter the README's commands name, from ``example_project/``: the clone's
#: ``.venv``, created by the page's install command.
PAGE_PYTHON = "../.venv/bin/python"
#: Environment variables the example reads; a test run of the example sees none of the
#: caller's (the example always runs in test mode here).
EXAMPLE_VARIABLES = ("DIFFS_REDIS_URL", "DIFFS_MAX_ELEMENT_AGE", "DJANGO_SETTINGS_MODULE")
SUBPROCESS_TIMEOUT = 180
#: A 13-digit number on the page: a timestamp or a cursor (epoch ms, maybe a fraction).
SHOWN_NUMBER = re.compile(r"(?<![\d.])\d{13}(?:\.\d+)?(?![\d.])")
REAL_NUMBER = r"\d+(?:\.\d+)?"


# --- Reading the page --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PageCommand:
    """One command of the README, with the output shown under it."""

    section: str
    #: The command as written, continuation lines joined.
    text: str
    #: The output shown under it (``""`` for none); None in an ``sh`` block, which
    #: shows commands only.
    shown: str | None


def code_blocks(rst: str) -> Iterator[tuple[str, str, str]]:
    """``(section title, language, dedented text)`` of every ``code-block`` in ``rst``."""
    lines = rst.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"([=\-~^])\1{2,}", following.strip()):
            section = line.strip()
        directive = re.fullmatch(r"(\s*)\.\. code-block:: *(\S+)\s*", line)
        if directive is None:
            index += 1
            continue
        indent = len(directive.group(1))
        body: list[str] = []
        index += 1
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
        ):
            body.append(lines[index])
            index += 1
        yield section, directive.group(2), textwrap.dedent("\n".join(body)).strip("\n")


def _logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


def page_commands(rst: str) -> list[PageCommand]:
    """Every command of the page, in order, with the output shown under it."""
    commands: list[PageCommand] = []
    for section, language, text in code_blocks(rst):
        if language == "sh":
            for line in _logical_lines(text):
                if line.strip() and not line.lstrip().startswith("#"):
                    commands.append(PageCommand(section, " ".join(line.split()), None))
        elif language == "console":
            commands.extend(_console_commands(section, text))
        else:
            raise AssertionError(f"a {language!r} block: the test does not know how to run it")
    return commands


def _console_commands(section: str, text: str) -> list[PageCommand]:
    entries: list[tuple[str, list[str]]] = []
    for line in _logical_lines(text):
        if line.startswith("$ "):
            entries.append((" ".join(line[2:].split()), []))
        else:
            assert entries, f"output before any command in a console block: {line!r}"
            entries[-1][1].append(line)
    return [PageCommand(section, command, "\n".join(out).strip()) for command, out in entries]


# --- curl --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CurlRequest:
    """What a ``curl`` command line sends, and whether it prints the headers."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str | None
    include_headers: bool


def parse_curl(command: str) -> CurlRequest:
    """The request of a ``curl`` command (the options the page uses, nothing else)."""
    words = shlex.split(command)
    assert words[0] == "curl", command
    method: str | None = None
    headers: list[tuple[str, str]] = []
    body: str | None = None
    include = False
    urls: list[str] = []
    rest = iter(words[1:])
    for word in rest:
        if word in ("-X", "--request"):
            method = next(rest)
        elif word in ("-H", "--header"):
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif word in ("-d", "--data"):
            body = next(rest)
        elif word in ("-i", "--include"):
            include = True
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word!r}: the test does not know it")
        else:
            urls.append(word)
    assert len(urls) == 1, f"one URL per curl command: {command}"
    # curl sends a GET, or a POST when given data, unless -X says otherwise.
    method = method or ("POST" if body is not None else "GET")
    return CurlRequest(method, urls[0], tuple(headers), body, include)


def send(client: Any, request: CurlRequest) -> tuple[int, str]:
    """Send ``request`` through a ``django.test.Client``; return the status and what
    curl would print (the status line and headers first with ``-i``)."""
    url = urlsplit(request.url)
    headers = dict(request.headers)
    # What curl sends on its own: a form content type for -d, and any media type.
    content_type = headers.pop("Content-Type", "application/x-www-form-urlencoded")
    headers.setdefault("Accept", "*/*")
    headers["Host"] = url.netloc
    response = client.generic(
        request.method,
        url.path + (f"?{url.query}" if url.query else ""),
        data=request.body or "",
        content_type=content_type,
        headers=headers,
        SERVER_PORT=str(url.port or 80),
    )
    text = response.content.decode()
    if request.include_headers:
        head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
        head += [f"{name}: {value}" for name, value in response.items()]
        text = "\n".join(head) + "\n\n" + text
    return response.status_code, text


# --- Comparing shown and real output ---------------------------------------------


def squeeze(text: str, *, wildcards: bool) -> list[str | None]:
    """``text`` without whitespace outside double-quoted strings; with ``wildcards``,
    split at each ``...`` outside strings (a None in the list)."""
    parts: list[str | None] = []
    current: list[str] = []
    in_string = escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif wildcards and text.startswith("...", index):
            parts += ["".join(current), None]
            current = []
            index += 2
        elif not char.isspace():
            current.append(char)
            in_string = char == '"'
        index += 1
    parts.append("".join(current))
    return parts


class Numbers:
    """What each 13-digit number on the page stands for in this run."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def substitute(self, command: str) -> str:
        """``command`` with each number replaced by the real value it stands for."""

        def real(match: re.Match[str]) -> str:
            shown = match.group()
            assert shown in self.real, f"{shown} in {command!r} was in no earlier output"
            return self.real[shown]

        return SHOWN_NUMBER.sub(real, command)

    def latest(self) -> float:
        """The largest real value met so far (0 when none)."""
        return max((float(value) for value in self.real.values()), default=0.0)

    def match(self, command: str, shown: str, real: str) -> None:
        """Check that ``real`` is what the page shows, and learn its new numbers."""
        groups: dict[str, str] = {}
        pattern = "".join(self._pieces(squeeze(shown, wildcards=True), groups))
        found = re.fullmatch(pattern, "".join(squeeze(real, wildcards=False)), re.DOTALL)
        assert found, f"{command}\nshows:\n{shown}\nbut the real output is:\n{real}"
        learned = {number: found.group(name) for name, number in groups.items()}
        values = list(self.real.values()) + list(learned.values())
        assert len(values) == len(set(values)), (
            f"{command}: two different numbers of the page stand for one real value "
            f"({learned} after {self.real})"
        )
        self.real.update(learned)

    def _pieces(self, parts: list[str | None], groups: dict[str, str]) -> Iterator[str]:
        named: dict[str, str] = {}  # shown number -> its group, once met in this output
        for part in parts:
            if part is None:
                yield ".*?"
                continue
            position = 0
            for number in SHOWN_NUMBER.finditer(part):
                yield re.escape(part[position : number.start()])
                position = number.end()
                shown = number.group()
                if shown in self.real:
                    yield re.escape(self.real[shown])
                elif shown in named:
                    yield f"(?P={named[shown]})"
                else:
                    named[shown] = name = f"n{len(groups)}"
                    groups[name] = shown
                    yield f"(?P<{name}>{REAL_NUMBER})"
            yield re.escape(part[position:])


# --- One server session, in the example's process ----------------------------------


def run_session(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one server session of the page: ``runserver`` (re)starts and ``curl``
    commands, in the example's own process. Returns what each command got."""
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    numbers = Numbers()
    transcript: list[dict[str, Any]] = []
    for step in steps:
        if step["kind"] == "runserver":
            _restart(step["env"], numbers)
            continue
        command = numbers.substitute(step["text"])
        status, real = send(client, parse_curl(command))
        if step["shown"] is None:  # an sh block: no output to compare, but it must work
            assert 200 <= status < 300, f"{command}\nanswered {status}:\n{real}"
        else:
            numbers.match(command, step["shown"], real)
        transcript.append({"command": command, "status": status, "output": real})
    return transcript


def _restart(env: dict[str, str], numbers: Numbers) -> None:
    """A restart of the server with ``env``: with a real Redis, as the page asks, the
    diffs survive it, so the session goes on with the same (fake) Redis."""
    from django.conf import settings
    from django.test import override_settings

    from diffs import get_connection
    from diffs.clock import redis_time_ms

    unknown = set(env) - {"DIFFS_REDIS_URL", "DIFFS_MAX_ELEMENT_AGE"}
    assert not unknown, f"runserver with {unknown}: the test does not know them"
    if "DIFFS_MAX_ELEMENT_AGE" not in env:
        return
    # A second of the page is a millisecond here (see the module's docstring).
    page_seconds = float(env["DIFFS_MAX_ELEMENT_AGE"])
    override_settings(
        DIFFS_SETTINGS={**settings.DIFFS_SETTINGS, "max_element_age": page_seconds / 1000}
    ).enable()
    until = numbers.latest() + page_seconds + 1
    for _ in range(10_000):
        if redis_time_ms(get_connection()) > until:
            return
        time.sleep(0.001)
    raise AssertionError("the Redis clock did not move")


SESSION_SCRIPT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("example_walkthrough", {module!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print("TRANSCRIPT " + json.dumps(module.run_session(json.loads({steps!r}))))
"""


# --- Running the page --------------------------------------------------------------


def example_env(**extra: str) -> dict[str, str]:
    """The environment of a command of the example: the caller's, without the example's
    variables (so it runs in test mode), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_VARIABLES}
    return {**env, **extra}


def manage(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=workdir,
        env=env or example_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def example_copy(tmp_path: Path) -> Path:
    """A copy of the example project as a clone holds it (no database yet)."""
    workdir = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, workdir, ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__"))
    return workdir


def migrated_copy(tmp_path: Path) -> Path:
    """A copy of the example project with its database migrated."""
    workdir = example_copy(tmp_path)
    manage(workdir, "migrate", "-v", "0")
    return workdir


@dataclasses.dataclass
class PageRun:
    """What following the page did."""

    #: stdout of each ``manage.py`` command, by its subcommand.
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The admin's change page of the question added through the admin.
    admin_html: str = ""
    #: Every curl command sent (numbers replaced), with its status and output.
    transcript: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Why a server session failed (a shown output that is not the real one, say).
    session_error: str | None = None


class PageRunner:
    """Follows the page's commands in order on a copy of the example project."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run = PageRun()
        self.session: list[dict[str, Any]] = []
        self.in_example = False

    def follow(self, commands: list[PageCommand]) -> PageRun:
        for index, command in enumerate(commands):
            self.execute(command)
            following = commands[index + 1].section if index + 1 < len(commands) else None
            if command.section == "The admin" and following != "The admin":
                self.flush_session()
                self.run.admin_html = visit_admin(self.workdir)
        self.flush_session()
        return self.run

    def execute(self, command: PageCommand) -> None:
        words = shlex.split(command.text)
        if words[0] == "curl" or "runserver" in words:
            self.session.append(self.session_step(command, words))
            return
        self.flush_session()
        if words[0] == "export":
            # The example's test runs use fakeredis: the URL is checked, not used (see
            # test_the_example_uses_its_own_prefix_with_fakeredis_and_with_a_real_redis).
            name, _, value = words[1].partition("=")
            assert name == "DIFFS_REDIS_URL" and value.startswith("redis://"), command.text
        elif words[0] == "python3":
            check_install_command(command.text)
        elif words[0] == "cd":
            assert words == ["cd", "example_project"] and EXAMPLE.is_dir(), command.text
            self.in_example = True
        elif words == ["rm", "-f", "db.sqlite3"]:
            assert self.in_example, command.text
            self.shell(words)
        else:
            self.manage_command(command.text, words)

    def session_step(self, command: PageCommand, words: list[str]) -> dict[str, Any]:
        if words[0] == "curl":
            return {"kind": "curl", "text": command.text, "shown": command.shown}
        env, argv = split_assignments(words)
        assert argv == [PAGE_PYTHON, "manage.py", "runserver"], command.text
        assert self.in_example, command.text
        return {"kind": "runserver", "env": env}

    def manage_command(self, text: str, words: list[str]) -> None:
        env, argv = split_assignments(words)
        assert not env, f"{text}: the test does not know these variables"
        assert argv[:2] == [PAGE_PYTHON, "manage.py"] and self.in_example, text
        subcommand, args = argv[2], argv[3:]
        if subcommand == "createsuperuser":
            # Interactive: the same command, answered from the command line.
            args += ["--noinput", "--username", "admin", "--email", "admin@example.com"]
            env = {"DJANGO_SUPERUSER_PASSWORD": "example-password"}
        self.run.outputs[subcommand] = self.shell(
            [sys.executable, "manage.py", subcommand, *args], env
        )

    def shell(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            argv,
            cwd=self.workdir,
            env=example_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        assert result.returncode == 0, f"{argv}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def flush_session(self) -> None:
        """Run the server session gathered so far, if it sends anything."""
        steps, self.session = self.session, []
        if not any(step["kind"] == "curl" for step in steps):
            return
        script = SESSION_SCRIPT.format(module=__file__, steps=json.dumps(steps))
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=self.workdir,
            env=example_env(),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
        )
        marker = "TRANSCRIPT "
        lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
        if result.returncode != 0 or not lines:
            self.run.session_error = result.stdout + result.stderr
            return
        self.run.transcript += json.loads(lines[-1][len(marker) :])


def split_assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """``NAME=value`` words before a command, and the command."""
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words[0].partition("=")
        env[name] = value
        words = words[1:]
    return env, words


def check_install_command(text: str) -> None:
    """The install command creates ``.venv`` at the clone's root (``../.venv`` from
    ``example_project/``) and installs this project with extras it has."""
    create, install = (shlex.split(part) for part in text.split("&&"))
    assert create == ["python3", "-m", "venv", ".venv"], text
    assert install[:3] == [".venv/bin/pip", "install", "-e"], text
    from_root = os.path.normpath(os.path.join("example_project", PAGE_PYTHON))
    assert Path(from_root).parent == Path(install[0]).parent, (from_root, install[0])
    spec = re.fullmatch(r"\.\[([\w,]+)\]", install[3])
    assert spec is not None and (ROOT / "setup.py").exists(), text
    provided = set(importlib.metadata.metadata("django-diffs").get_all("Provides-Extra") or [])
    assert set(spec.group(1).split(",")) <= provided, provided


CURL_SECTION = "Syncing a client with curl"


def follow_page(workdir: Path, *, section: str | None = None) -> PageRun:
    """Follow the README of ``workdir`` in order, as written: from its start, or from
    the start of ``section`` (after the page's ``cd example_project``)."""
    commands = page_commands((workdir / "README.rst").read_text(encoding="utf-8"))
    runner = PageRunner(workdir)
    if section is not None:
        runner.in_example = True
        commands = [c for c in commands if c.section == section]
    return runner.follow(commands)


ADMIN_VISIT = """
from django.test import Client
from polls.models import Question

client = Client()
assert client.login(username="admin", password="example-password")
form = {
    "question_text": "Shown <b>escaped</b>?",
    "pub_date_0": "2025-01-01",
    "pub_date_1": "12:00:00",
    "choices-TOTAL_FORMS": "2",
    "choices-INITIAL_FORMS": "0",
    "choices-MIN_NUM_FORMS": "0",
    "choices-MAX_NUM_FORMS": "1000",
    "choices-0-choice_text": "Yes",
    "choices-0-votes": "0",
    "choices-1-choice_text": "No",
    "choices-1-votes": "0",
}
added = client.post("/admin/polls/question/add/", form, HTTP_HOST="127.0.0.1:8000")
assert added.status_code == 302, added.content.decode()
question = Question.objects.latest("pk")
choices = list(question.choices.order_by("pk"))
form.update({
    "question_text": "Edited",
    "choices-INITIAL_FORMS": "2",
    "choices-0-id": str(choices[0].pk), "choices-0-question": str(question.pk),
    "choices-1-id": str(choices[1].pk), "choices-1-question": str(question.pk),
})
url = f"/admin/polls/question/{question.pk}/change/"
edited = client.post(url, form, HTTP_HOST="127.0.0.1:8000")
assert edited.status_code == 302, edited.content.decode()
page = client.get(url, HTTP_HOST="127.0.0.1:8000")
assert page.status_code == 200, page.status_code
changes = f"/admin/polls/question/{question.pk}/diffs/"
assert changes in page.content.decode()  # the "Recent changes" link
page = client.get(changes, HTTP_HOST="127.0.0.1:8000")
assert page.status_code == 200, page.status_code
print(page.content.decode())
"""


def visit_admin(workdir: Path) -> str:
    """What the page asks of the admin: add a question with some choices, save and edit
    it; returns the question's "Recent changes" page."""
    return manage(workdir, "shell", "-c", ADMIN_VISIT)


@pytest.fixture(scope="module")
def page_run(tmp_path_factory: pytest.TempPathFactory) -> PageRun:
    return follow_page(example_copy(tmp_path_factory.mktemp("page")))


# --- The page, followed as written ----------------------------------------------------


def page_text() -> str:
    return README.read_text(encoding="utf-8")


def test_the_curl_walkthrough_shows_what_a_user_gets(page_run):
    assert page_run.session_error is None, page_run.session_error
    curls = [c for c in page_commands(page_text()) if c.text.startswith("curl")]
    assert len(page_run.transcript) == len(curls)
    statuses = [entry["status"] for entry in page_run.transcript]
    assert statuses == [201, 201, 200, 200, 200, 204, 200, 200, 400, 400, 410]


def test_the_demo_shows_diffs_and_prunes_the_examples_keys(page_run):
    out = page_run.outputs["demo"]
    assert (
        f"fakeredis (test mode; the data lives in this process only), keys under '{PREFIX}'" in out
    )
    assert '"model":"polls.choice"' in out  # the choice's diffs land in the question's set
    assert "created=False  deleted=True" in out
    assert f"Sorted set {PREFIX}polls.question:1" in out
    assert f"Removed 6 diff(s) from 1 of 1 key(s) under '{PREFIX}'" in out
    assert "Diffs left for question 1: 0" in out


def test_the_admin_shows_a_questions_recent_changes(page_run):
    html = page_run.admin_html
    assert "Recent changes: Edited" in html
    kinds = re.findall(r'<tr class="diffs-row diffs-(\w+)">', html)
    assert kinds == ["updated", "created", "created", "created"]  # 2 choices' diffs too
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html and "<b>escaped" not in html
    assert 'diffs-old">Shown &lt;b&gt;escaped&lt;/b&gt;?</span> &rarr;' in html
    assert 'class="diffs-who">admin</td>' in html


def test_the_clean_start_leaves_an_empty_database(page_run):
    assert "Applying polls.0001_initial" in page_run.outputs["migrate"]
    assert (
        f"Removed 0 diff(s) from 0 of 0 key(s) under '{PREFIX}'" in page_run.outputs["prune_diffs"]
    )
    # The walkthrough's first question is pk 1 although the demo and the admin added some.
    assert '"id":1,' in page_run.transcript[0]["output"]


def test_the_page_never_flushes_a_redis_database():
    texts = [c.text for c in page_commands(page_text())]
    assert not [t for t in texts if re.search(r"redis-cli|flush", t, re.IGNORECASE)]
    clean_start = [
        "export DIFFS_REDIS_URL=redis://127.0.0.1:6379/1",
        "rm -f db.sqlite3",
        f"{PAGE_PYTHON} manage.py migrate",
        f"{PAGE_PYTHON} manage.py prune_diffs --max-age 0.001",
        f"{PAGE_PYTHON} manage.py runserver",
        "curl -X POST http://127.0.0.1:8000/api/questions/ -H 'Content-Type: application/json' "
        """-d '{"question_text": "What is life?"}'""",
    ]
    # The clean start comes right before the walkthrough, in this order.
    start = texts.index(clean_start[1]) - 1
    assert texts[start : start + len(clean_start)] == clean_start


# --- The test notices a wrong page or a changed API ------------------------------------


def test_shown_output_matches_without_whitespace_with_wildcards_and_numbers():
    numbers = Numbers()
    shown = '{"a": [... "x y" ...], "t": 1795347038141.53, "c": "1795347038141.53"}'
    numbers.match("first", shown, '{"a":[1,"x y",2],"t":17.5,"c":"17.5"}')
    assert numbers.substitute("?since=1795347038141.53&x=1") == "?since=17.5&x=1"
    with pytest.raises(AssertionError, match="real output"):  # not the same real value
        Numbers().match("c", shown, '{"a":["x y"],"t":17.5,"c":"17.6"}')
    with pytest.raises(AssertionError, match="real output"):  # whitespace inside strings
        Numbers().match("s", shown, '{"a":["x  y"],"t":1,"c":"1"}')
    with pytest.raises(AssertionError, match="no earlier output"):
        Numbers().substitute("?since=1795347038141.53")
    with pytest.raises(AssertionError, match="one real value"):  # two numbers, one value
        numbers.match("again", '["1795347045109.077"]', '["17.5"]')
    assert squeeze('{"a \\" b": 1 ...}', wildcards=True) == ['{"a \\" b":1', None, "}"]


FIRST_PAGE_END = '"cursor": "1795347038152.116",\n     "has_more": true}'
DELETED_PK = '{"model": "polls.question", "pk": 2,\n        "data": [{"model": "polls.question", "pk": 2, "fields": {"question_text": "What is Django?", ...}}],\n        "created": false, "deleted": true'


@pytest.mark.parametrize(
    ("shown", "changed"),
    [
        pytest.param(FIRST_PAGE_END, FIRST_PAGE_END.replace("true", "false"), id="has_more"),
        pytest.param(DELETED_PK, DELETED_PK.replace('"pk": 2', '"pk": 3'), id="pk"),
        pytest.param(
            '"timestamp": 1795347044799.334, "cursor": "1795347044799.334"',
            '"timestamp": 1795347044799.334, "cursor": "1795347045109.077"',
            id="cursor-is-not-its-timestamp",
        ),
        pytest.param(
            "?since=1795347038152.116&limit=2",
            "?since=1795347038141.53&limit=2",
            id="since-is-not-the-pages-cursor",
        ),
    ],
)
def test_a_changed_output_on_the_page_fails_the_walkthrough(tmp_path, shown, changed):
    workdir = example_copy(tmp_path)
    readme = workdir / "README.rst"
    text = readme.read_text(encoding="utf-8")
    assert text.count(shown) == 1
    readme.write_text(text.replace(shown, changed), encoding="utf-8")
    run = follow_page(workdir, section=CURL_SECTION)
    assert run.session_error is not None
    assert "but the real output is" in run.session_error or "real value" in run.session_error


def test_a_changed_api_fails_the_walkthrough(tmp_path):
    workdir = example_copy(tmp_path)
    api = workdir / "polls" / "api.py"
    source = api.read_text(encoding="utf-8")
    shown = 'fields = ["id", "question_text", "pub_date"]'
    assert shown in source
    api.write_text(source.replace(shown, 'fields = ["id", "pub_date"]'), encoding="utf-8")
    run = follow_page(workdir, section=CURL_SECTION)
    assert run.session_error is not None
    assert "but the real output is" in run.session_error


# --- Safe on a shared Redis ------------------------------------------------------------


def test_the_example_uses_its_own_prefix_with_fakeredis_and_with_a_real_redis(tmp_path):
    urls = {
        c.text.partition("=")[2]
        for c in page_commands(page_text())
        if c.text.startswith("export DIFFS_REDIS_URL=")
    }
    assert len(urls) == 1, urls  # one database all along: the clean start reaches it
    [url] = urls
    workdir = example_copy(tmp_path)
    show = "from django.conf import settings; print(repr(settings.DIFFS_SETTINGS))"
    real_env = example_env(DIFFS_REDIS_URL=url)
    fake = ast.literal_eval(manage(workdir, "shell", "-c", show).splitlines()[-1])
    real = ast.literal_eval(manage(workdir, "shell", "-c", show, env=real_env).splitlines()[-1])
    assert fake == {"prefix": PREFIX, "max_element_age": 3600.0, "test_mode": True}
    assert real == {"prefix": PREFIX, "max_element_age": 3600.0, "url": url}
    assert PREFIX.endswith(":")
    # The settings pass the checks with a real Redis too (no connection is made).
    assert "no issues" in manage(workdir, "check", env=real_env)
    assert f"``{PREFIX}``" in page_text()


CLEAN_START = """
import time
from django.core.management import call_command
from diffs import get_connection
from diffs.clock import redis_time_ms
from polls.models import Question

redis = get_connection()
# Another project's keys in the same database: one under the default prefix, one not.
redis.zadd("diffs:polls.question:1", {{"theirs": 1.0}})
redis.set("other:thing", "theirs")
call_command("demo")
question = Question.objects.create(question_text="What is life?")
question.question_text = "What is python?"
question.save()
assert redis.exists("{prefix}ix:polls.question:%d" % question.pk)
started = redis_time_ms(redis)
for _ in range(100_000):  # every diff at least a millisecond old
    if redis_time_ms(redis) > started + 2:
        break
call_command(*{prune!r})
ours = sorted(k.decode() for k in redis.scan_iter(match="{prefix}*"))
print("LEFT", ours)
assert redis.zrange("diffs:polls.question:1", 0, -1) == [b"theirs"]
assert redis.get("other:thing") == b"theirs"
print("theirs kept")
"""


def test_the_clean_start_removes_only_the_examples_diffs(tmp_path):
    prune = next(
        shlex.split(c.text)[2:] for c in page_commands(page_text()) if "prune_diffs" in c.text
    )
    script = CLEAN_START.format(prefix=PREFIX, prune=prune)
    out = manage(migrated_copy(tmp_path), "shell", "-c", script)
    assert "theirs kept" in out
    left = ast.literal_eval(
        next(line for line in out.splitlines() if line.startswith("LEFT "))[5:]
    )
    # No diffs left: only the bookkeeping keys (horizons, births), none holding a diff.
    assert [k for k in left if not k.startswith((f"{PREFIX}horizon:", f"{PREFIX}born:"))] == []
    assert f"under '{PREFIX}'" in out


# --- The API beyond the walkthrough ----------------------------------------------------


def test_the_examples_migrations_match_its_models(tmp_path):
    workdir = migrated_copy(tmp_path)
    assert "No changes detected" in manage(workdir, "makemigrations", "--check", "--dry-run")
    assert "dirtyfields" not in (workdir / "polls" / "migrations" / "0001_initial.py").read_text()


API_SCRIPT = """
from rest_framework.test import APIClient
from polls.models import Choice, Question

question = Question.objects.create(question_text="What is life?")
question.question_text = "What is python?"
question.save()
Choice.objects.create(question=question, choice_text="Yes")
client = APIClient()
response = client.get("/api/questions/diffs/", {"limit": 2}, HTTP_HOST="localhost")
assert response.status_code == 200, response.content
page = response.json()
assert set(page) == {"results", "cursor", "has_more"}, page
assert page["has_more"] is True
fields = {"model", "pk", "data", "created", "deleted", "timestamp", "cursor"}
# Question keeps old values: the update's entry shows what question_text was.
assert [set(r) for r in page["results"]] == [fields, fields | {"old"}]
assert page["results"][1]["old"] == {"question_text": "What is life?"}
assert [(r["model"], r["pk"], r["created"]) for r in page["results"]] == [
    ("polls.question", question.pk, True),
    ("polls.question", question.pk, False),
]
assert page["results"][1]["data"][0]["fields"] == {"question_text": "What is python?"}
rest = client.get("/api/questions/diffs/", {"since": page["cursor"]}, HTTP_HOST="localhost")
[choice] = rest.json()["results"]
assert choice["model"] == "polls.choice" and rest.json()["has_more"] is False
# the choice's data, through the viewset's diffs_child_serializers
assert choice["data"][0]["fields"] == {"question": question.pk, "choice_text": "Yes", "votes": 0}
detail = client.get(f"/api/questions/{question.pk}/diffs/", HTTP_HOST="localhost").json()
assert len(detail["results"]) == 3
bad = client.get("/api/questions/diffs/", {"since": "x"}, HTTP_HOST="localhost")
assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
print("api ok")
"""


def test_api_serves_a_choices_diffs_through_its_serializer(tmp_path):
    assert "api ok" in manage(migrated_copy(tmp_path), "shell", "-c", API_SCRIPT)
