"""Which of a spec's own notification URLs may be reached: the operator's say.

A spec may come over REST from someone the operator does not trust, and a notification URL is a
request the server makes (``json://169.254.169.254/latest/meta-data/`` reads a cloud machine's
credentials). So a spec's URLs are checked against an allow-list (``NbschedApp.notify_allow``,
``NBSCHED_NOTIFY_ALLOW``), at register and again at each delivery (a name may resolve elsewhere
later, the list may have changed). The tags of the operator's Apprise configuration file are
always allowed: the operator wrote them.

An entry is ``*`` (every URL), a scheme (``slack``: every URL of it), or a scheme and host
(``json://hooks.example.com``, ``json://*.example.com``, ``*://hooks.example.com``). A loopback,
link-local or unspecified address (``127.0.0.1``, ``169.254.169.254``, ``0.0.0.0``, a name that
resolves to one) is refused unless its host is listed itself (or ``*`` is).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from nbsched.errors import ConfigError
from nbsched.notices import is_url

# a host without a port (an URL's port is not checked); an IPv6 address in brackets
_ENTRY = re.compile(r"^(\*|[a-z][a-z0-9+.-]*)(?:://(\*|(?:\*\.)?[a-z0-9_.-]+|\[[0-9a-f:.]+\]))?$")


@dataclass(frozen=True)
class NotifyAllow:
    """The parsed allow-list: ``(scheme, host)`` pairs, a host of None meaning every host."""

    entries: tuple[tuple[str, str | None], ...]
    setting: str = "NBSCHED_NOTIFY_ALLOW"  # named in refusals, so people know what to change

    @classmethod
    def parse(cls, values: Iterable[str], setting: str = "NBSCHED_NOTIFY_ALLOW") -> NotifyAllow:
        entries = []
        for raw in values:
            value = raw.strip().lower()
            if not value or value == "none":
                continue
            found = _ENTRY.match(value)
            if found is None:
                ported = "://" in value and ":" in value.split("://", 1)[1] and not value.endswith("]")
                raise ConfigError(
                    f"{setting}: {raw!r}: a host without its port (json://hooks.example.com)"
                    if ported
                    else f"{setting}: {raw!r}: expected *, a scheme (slack) or a scheme and host (json://hooks.example.com)"
                )
            scheme, host = found.group(1), found.group(2)
            entries.append((scheme, None if host in (None, "*") else host))
        return cls(tuple(entries), setting)

    @classmethod
    def everything(cls) -> NotifyAllow:
        return cls((("*", None),))

    @property
    def everything_allowed(self) -> bool:
        return ("*", None) in self.entries

    def refusal(self, target: str, *, resolve: bool = True) -> str | None:
        """Why ``target`` may not be reached, in a few words; None when it may (a tag always)."""
        if not is_url(target) or self.everything_allowed:
            return None
        import apprise

        scheme = target.split("://", 1)[0].lower()
        service = apprise.Apprise.instantiate(target)
        hosts = _hosts(service) if service is not None else []
        listed = [host for (s, host) in self.entries if s in ("*", scheme) and host is not None]
        if hosts and all(any(_host_match(h, pattern) for pattern in listed) for h in hosts):
            return None  # its hosts are listed themselves: loopback too, if so listed
        if (scheme, None) not in self.entries:
            what = f"{scheme}://{hosts[0]}" if hosts else scheme
            return f"{what} is not in {self.setting} ({self._shown()})"
        for host in hosts:
            special = _special_address(host, resolve=resolve)
            if special is not None:
                return f"{host} is {special}: refused unless {self.setting} lists {scheme}://{host}"
        return None

    def _shown(self) -> str:
        if not self.entries:
            return "it is empty: only the tags of the Apprise configuration file"
        return "it lists " + ", ".join(s if h is None else f"{s}://{h}" for s, h in self.entries)


def _hosts(service: Any) -> list[str]:
    """The hosts a service connects to, as far as its URL says: an email's SMTP server; the host
    of a service whose URL names one (``json://HOST/``), none for one whose URL holds only tokens
    (``slack://T/B/C``: Apprise's own host for the service)."""
    smtp = getattr(service, "smtp_host", None)
    if isinstance(smtp, str) and smtp:
        return [smtp.lower()]
    host = getattr(service, "host", None)
    templates = getattr(service, "templates", ())
    if isinstance(host, str) and host and any("{host}" in t for t in templates):
        return [host.lower().strip("[]")]
    return []


def _host_match(host: str, pattern: str) -> bool:
    return fnmatchcase(host, pattern.strip("[]")) or (pattern.startswith("*.") and host == pattern[2:])


def _special_address(host: str, *, resolve: bool) -> str | None:
    """'a loopback address' (link-local, unspecified) when ``host`` is or resolves to one."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return None
        try:
            infos = socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):  # it does not resolve (now): nothing to reach there
            return None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        mapped = getattr(address, "ipv4_mapped", None) or address
        if mapped.is_loopback:
            return "a loopback address"
        if mapped.is_link_local:
            return "a link-local address"
        if mapped.is_unspecified:
            return "an unspecified address (this machine)"
    return None
