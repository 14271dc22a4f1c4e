"""What a catalog operation left out and why: problems that are said, and do not stop it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """Something left out: the project at fault (or the upstream, when its listing is), and why."""

    name: str
    message: str  # a whole sentence for the user, naming the project itself


@dataclass
class Report:
    """The problems an operation met, in the order it met them."""

    problems: list[Problem] = field(default_factory=list)

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(name, message))
