"""Setting values as the environment spells them: on/off words, comma lists, escaped text.

Shared by the settings (`config`), the queue systems and the outputs, which each parse the
settings they own from the environment mapping they are handed. Standard library only.
"""

from __future__ import annotations

from typing import Mapping, Optional, Tuple

from queue_metrics.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def boolean(values: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off, any case."""
    if name not in values:
        return default
    word = values[name].strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {values[name]!r}")


def name_list(text: Optional[str]) -> Tuple[str, ...]:
    """A comma list of names, blanks dropped, each once, in order."""
    if text is None:
        return ()
    return tuple(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))


def escaped_text(values: Mapping[str, str], name: str, default: str) -> str:
    """Config vars cannot easily hold control characters, so accept `\\x06\\x16` spelled out."""
    if name not in values:
        return default
    text = values[name]
    try:
        decoded = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not a valid escaped string: {text!r}") from None
    if not decoded:
        raise ConfigError(f"{name} must not be empty")
    return decoded


def whole_numbers(values: Mapping[str, str], name: str, lowest: int, highest: int) -> Optional[Tuple[int, ...]]:
    """A comma list of whole numbers within [lowest, highest], sorted; None when unset."""
    if name not in values:
        return None
    text = values[name]
    try:
        numbers = sorted({int(word) for word in text.split(",") if word.strip()})
    except ValueError:
        raise ConfigError(f"{name} must be a comma list of whole numbers, got {text!r}") from None
    if not numbers or numbers[0] < lowest or numbers[-1] > highest:
        raise ConfigError(f"{name} needs whole numbers from {lowest} to {highest}, got {text!r}")
    return tuple(numbers)


def host_port(text: str, name: str, example: str) -> Tuple[str, int]:
    """`host:port` or `[ipv6]:port`; ConfigError naming the variable `name` otherwise."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not bracket:
            port_text = ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name} must be host:port (e.g. {example}), got {text!r}")
    return host, int(port_text)
