"""Where notifications go, through Apprise: the configuration file that defines the tags, the
URLs of a spec, and one delivery to a target within a bounded time.

The configuration file is the operator's: a mistake in it (a syntax error, a tab, bytes that are
not UTF-8, an URL Apprise cannot use) is one line naming the file and its line, at every command
that reads it, rather than Apprise's silence (it reads a file it cannot parse as empty).
A delivery never takes longer than its timeout: Apprise's own connect and read timeouts of each
service (``cto``, ``rto``; SMTP's one timeout) are capped by it, and so is the whole call
(``notify(timeout=)``); a service that does not answer in time counts as not delivered.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbsched.errors import ConfigError
from nbsched.notices import is_url

MAX_FILE = 1_000_000  # bytes of an Apprise configuration file read
DEFAULT_TIMEOUT = 5.0  # seconds one delivery may take, connect included


# -- the configuration file --------------------------------------------------------------------------
def file_error(path: Path) -> str | None:
    """What is wrong with the Apprise configuration file at ``path``, in one line naming it and
    its line; None when it is fine or missing (then only URLs are targets)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _file_error(path, stat.st_mtime_ns, stat.st_size)


def check_file(path: Path) -> None:
    """A ConfigError for a configuration file that does not parse."""
    problem = file_error(path)
    if problem is not None:
        raise ConfigError(problem)


@functools.lru_cache(maxsize=16)  # each send reads it: parse a file once per change
def _file_error(path: Path, mtime_ns: int, size: int) -> str | None:
    del mtime_ns  # a key of the cache only
    if size > MAX_FILE:
        return f"{path}: larger than {MAX_FILE:,} bytes"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    problem = _problem(data)
    return f"{path}: {problem}" if problem else None


def _problem(data: bytes) -> str | None:
    nul = data.find(b"\x00")
    if nul >= 0:
        return f"line {_line(data, nul)}: a NUL byte (is it a text file?)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"line {_line(data, exc.start)}: not UTF-8 (byte 0x{data[exc.start]:02x})"
    from apprise.common import ConfigFormat
    from apprise.config.base import ConfigBase

    found = ConfigBase.detect_config_format(text)
    if found is None:
        return "Apprise cannot tell its format (YAML with urls:, or TEXT lines of URLs, one a line)"
    if found is ConfigFormat.YAML:
        return _yaml_problem(text)
    return _text_problem(text)


def _line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _yaml_problem(text: str) -> str | None:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{where}{' '.join(str(exc.problem or exc.context).split())}"
    except yaml.YAMLError as exc:  # a reader's error: a character YAML refuses
        position = getattr(exc, "position", None)
        where = f"line {text.count(chr(10), 0, position) + 1}: " if isinstance(position, int) else ""
        return f"{where}{' '.join(str(getattr(exc, 'reason', exc)).split())}"
    except RecursionError:
        return "nested too deeply"
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        return f"line {node.start_mark.line + 1}: expected a mapping with urls: (Apprise's YAML)"
    for key, value in node.value:
        if key.value != "urls":
            continue
        if not isinstance(value, yaml.SequenceNode):
            return f"line {value.start_mark.line + 1}: urls: expected a list of URLs"
        for item in value.value:
            for url_node in item.value if isinstance(item, yaml.MappingNode) else [item]:
                url = url_node[0] if isinstance(url_node, tuple) else url_node
                if isinstance(url, yaml.ScalarNode) and (problem := _url_problem(url.value)):
                    return f"line {url.start_mark.line + 1}: {problem}"
    return None


def _text_problem(text: str) -> str | None:
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry[0] in "#;" or "://" not in entry:
            continue
        url = entry.split("=", 1)[1].strip() if "=" in entry.split("://", 1)[0] else entry
        if problem := _url_problem(url):
            return f"line {number}: {problem}"
    return None


def _url_problem(url: str) -> str | None:
    import apprise

    if "${" in url:  # an Apprise template: its values come at notification time
        return None
    if apprise.Apprise.instantiate(url) is None:
        return f"Apprise cannot use the URL {url}"
    return None


def defined_tags(config_file: Path) -> set[str]:
    """The tags the Apprise configuration file defines (none when it is missing)."""
    return {tag for service in _file_services(config_file) for tag in service.tags}


def _file_services(config_file: Path) -> list[Any]:
    import apprise

    if not config_file.is_file():
        return []
    config = apprise.AppriseConfig()
    config.add(str(config_file))
    try:
        return list(config.services())
    except Exception:  # noqa: BLE001 - PyYAML's errors of bytes it refuses (a NUL) escape Apprise: file_error tells them
        return []


# -- one delivery ------------------------------------------------------------------------------------
def send(
    target: str,
    title: str,
    body: str,
    config_file: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    attach: Path | None = None,
    payload: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    """Send to ``target`` (an Apprise URL, or a tag of ``config_file``) within ``timeout``
    seconds; (delivered, answers). A webhook (``json://``) carries ``payload`` (the run's JSON
    view; what was missed) under ``run``."""
    import apprise

    services = list(_services(target, config_file))
    if not services:
        return False, _no_service(target, config_file)
    ap = apprise.Apprise()
    names = {service.url_id(): str(service.service_name) for service in services}
    for service in services:
        _bounded(service, timeout)
        extras = getattr(service, "payload_extras", None)
        if payload is not None and isinstance(extras, dict):
            extras["run"] = payload
        ap.add(service)
    attachment = apprise.AppriseAttachment(str(attach)) if attach is not None else None
    started = time.monotonic()
    result = ap.notify(
        body=body, title=title, body_format=apprise.NotifyFormat.TEXT, attach=attachment, timeout=timeout
    )
    # a socket's own timeout says only "connection error": say it was the time
    timed_out = time.monotonic() - started >= 0.9 * timeout
    answers = []
    for r in result:
        name = names.get(r.url_id, "service")
        if r.status.name == "TIMEOUT":
            answers.append(f"{name}: no answer within {timeout:g}s")
            continue
        lines = [e.message for e in r.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
        if timed_out and not r:
            note = f"no answer within {timeout:g}s"
            lines.append(f"{lines.pop()}; {note}" if lines else note)
        answers.append(f"{name}: {r.status.name.lower()}" + (f" ({lines[-1]})" if lines else ""))
    return bool(result), "; ".join(answers)


def _bounded(service: Any, timeout: float) -> None:
    """Cap a service's own connect and read timeouts (an URL's ``cto``/``rto``, SMTP's 15 s) by
    ``timeout``: a server that accepts and never answers gives up within it."""
    for name in ("socket_connect_timeout", "socket_read_timeout"):
        own = getattr(service, name, None)
        if isinstance(own, int | float):
            setattr(service, name, min(float(own), timeout))


def _services(target: str, config_file: Path) -> Iterable[Any]:
    import apprise

    if is_url(target):
        service = apprise.Apprise.instantiate(target)
        return [service] if service is not None else []
    ap = apprise.Apprise()
    for service in _file_services(config_file):
        ap.add(service)
    return list(ap.find(tag=target))


def _no_service(target: str, config_file: Path) -> str:
    if is_url(target):
        return f"Apprise cannot use the URL {shown_target(target)}"
    if not config_file.is_file():
        return f"no Apprise configuration file at {config_file} for the tag '{target}'"
    problem = file_error(config_file)
    if problem is not None:
        return f"no service has the tag '{target}': {problem}"
    return f"no service of {config_file} has the tag '{target}'"


@functools.lru_cache(maxsize=512)  # a list of notifications shows the same few targets again and again
def shown_target(target: str) -> str:
    """A target as logs and lists show it: an URL without its password."""
    if not is_url(target):
        return f"tag '{target}'"
    import apprise

    service = apprise.Apprise.instantiate(target)
    if service is None:
        return target.split("://", 1)[0] + "://..."
    return str(service.url(privacy=True))  # type: ignore[no-untyped-call]
