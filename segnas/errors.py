"""The one error type for user mistakes: the CLI prints its message in one line and exits 2."""


class SegnasError(Exception):
    """A user-facing error that names the file, field or value at fault and what was expected."""


class TrainingDiverged(SegnasError):
    """A training whose loss became non-finite: the network does not train under its settings. When
    one network is trained, a user's error (lower the learning rate); in a search that trains its
    candidates briefly, that candidate failed and the search goes on."""


class TargetOutOfReach(SegnasError):
    """A latency target no network of a search's space can meet. For one search, a user's error
    (raise the target, or search a smaller space); in a comparison, that method's result (it fails,
    the other methods go on). ``reach``: why; ``remedies``: what a search's user can do, and
    ``comparison_remedies`` what a comparison's can (its settings are named otherwise)."""

    def __init__(self, reach: str, remedies: str, comparison_remedies: str | None = None) -> None:
        super().__init__(f"{reach}; {remedies}")
        self.reach, self.comparison_remedies = reach, comparison_remedies or remedies

    def in_comparison(self) -> str:
        """The error as a comparison's method meets it."""
        return f"{self.reach}; {self.comparison_remedies}"


class CannotWrite(SegnasError):
    """A file a job could not write (a full disk, a quota, a file-size limit): the job stops, what it
    wrote before stays, and it continues once there is room. Not a result of what it computed: a
    comparison stops rather than recording the job as failed."""


class SegnasWarning(UserWarning):
    """What segnas warns of (a busy host during a measurement, a rebuilt cache file, a plugin left
    out): the command prints it as one ``warning:`` line."""
