"""Which video sources the API may open: an allow-list, checked before a stream is added.

``POST /streams`` makes the server open a URL or a file. Unchecked, anyone with the token
could make it fetch internal URLs (cloud metadata, admin pages) and show them in
``preview.png``, or read any video file the process can. So a source must pass
:func:`check_source` under the configuration's ``ingest`` keys:

- a URL's scheme is one of ``ingest.source_schemes``;
- its host resolves (DNS, now) only to public addresses, or is listed in
  ``ingest.source_hosts`` by name pattern or network: loopback, private, link-local and
  other non-global addresses are refused unless listed (cameras usually sit on private
  networks: list their subnets);
- a local file lies under ``ingest.media_root`` (unset: the API opens no local file).

The decoder then limits FFmpeg to the protocols the source's scheme needs
(:func:`protocol_whitelist`), so a playlist cannot reach for ``file:`` or another protocol.
What is refused is said plainly to the client (which rule, and the key that changes it);
why an allowed source fails to open is in the ingest's log and drops, not in the answer.
DNS may answer differently when FFmpeg connects than when the check ran: resolving names
of public hosts to private addresses at the right moment would pass (DNS rebinding); list
camera networks and keep ``source_hosts`` narrow.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ausm_stream.errors import InvalidInputError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], list[str]]

_PROTOCOLS = {
    "rtsp": "rtsp,rtp,udp,tcp",
    "rtsps": "rtsp,rtsps,rtp,udp,tcp,tls",
    "rtmp": "rtmp,tcp",
    "http": "http,tcp,hls,crypto",
    "https": "https,http,tcp,tls,hls,crypto",
    "srt": "srt,udp",
    "udp": "udp,rtp",
    "tcp": "tcp",
    "file": "file",
}
"""FFmpeg protocols each scheme needs (HTTP(S) sources may be HLS playlists)."""
NETWORK_SCHEMES = tuple(s for s in _PROTOCOLS if s != "file")
"""The URL schemes of live sources (cameras, streaming servers)."""


def protocol_whitelist(source: str) -> str:
    """FFmpeg's ``protocol_whitelist`` for ``source``: its scheme's protocols, or ``file``."""
    scheme = urlsplit(source).scheme.lower() if "://" in source else "file"
    return _PROTOCOLS.get(scheme, scheme)


@dataclass(frozen=True)
class SourcePolicy:
    schemes: frozenset[str]
    host_patterns: tuple[str, ...]
    networks: tuple[Network, ...]
    media_root: Path | None

    @classmethod
    def parse(cls, schemes: str, hosts: str | None, media_root: str | None) -> SourcePolicy:
        """From the comma-separated ``ingest.source_schemes`` and ``ingest.source_hosts``."""
        names = frozenset(s.strip().lower() for s in schemes.split(",") if s.strip())
        unknown = sorted(names - set(NETWORK_SCHEMES))
        if unknown:
            raise InvalidInputError(
                f"ingest.source_schemes names unknown scheme(s) {unknown}; "
                f"known: {sorted(NETWORK_SCHEMES)}"
            )
        patterns, networks = [], []
        for entry in (e.strip() for e in (hosts or "").split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                patterns.append(entry.lower())
        root = Path(media_root).resolve() if media_root else None
        return cls(names, tuple(patterns), tuple(networks), root)

    def listed(self, host: str, address: Address) -> bool:
        return any(fnmatch.fnmatchcase(host, p) for p in self.host_patterns) or any(
            address in n for n in self.networks
        )


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to now (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return []
    return sorted({info[4][0] for info in infos})


def check_source(source: str, policy: SourcePolicy, resolver: Resolver = resolve) -> None:
    """Raise :class:`InvalidInputError` unless ``policy`` lets the API open ``source``."""
    if "://" not in source:
        _check_path(source, policy)
        return
    parts = urlsplit(source)
    scheme = parts.scheme.lower()
    shown = f"{scheme}://{parts.hostname or ''}"
    if scheme not in policy.schemes:
        raise InvalidInputError(
            f"source scheme {scheme!r} is not allowed (ingest.source_schemes: "
            f"{', '.join(sorted(policy.schemes)) or 'none'})"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidInputError(f"source {shown!r} names no host")
    addresses = resolver(host)
    if not addresses:
        raise InvalidInputError(f"source host {host!r} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if not address.is_global and not policy.listed(host, address):
            raise InvalidInputError(
                f"source host {host!r} resolves to a loopback, private or link-local address, "
                "which sources may not name unless ingest.source_hosts lists the host or its "
                "network (e.g. 10.20.0.0/16 for a camera subnet)"
            )


def _check_path(source: str, policy: SourcePolicy) -> None:
    if policy.media_root is None:
        raise InvalidInputError(
            "local files are not allowed as sources: set ingest.media_root to the directory "
            "the API may read videos from"
        )
    path = Path(os.path.abspath(source)).resolve()  # links followed: no way out of the root
    if not path.is_relative_to(policy.media_root):
        raise InvalidInputError(
            f"local sources must lie under ingest.media_root ({policy.media_root})"
        )
    if not path.is_file():
        raise InvalidInputError(f"source file {source!r} does not exist under ingest.media_root")
