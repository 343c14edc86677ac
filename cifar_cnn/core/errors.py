"""Exceptions that carry a message meant for the user, not a traceback."""

import signal


class UserError(Exception):
    """Bad input found before or during a run: the message says what was wrong and how to fix it."""


class ConfigError(UserError):
    """A configuration value that cannot work."""


class DataError(UserError):
    """Data that is missing, corrupt or of the wrong shape."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(
            f"training loss became {loss} in epoch {epoch}; the run stopped. "
            "Lower optimizer.lr or enable model.batch_norm to make training stable."
        )
        self.epoch, self.loss = epoch, loss

    def __reduce__(self) -> tuple[type, tuple[int, float]]:
        """Pickle by (epoch, loss): parallel launchers (joblib's worker processes, submitit)
        send a failed job's error back to the sweep, and the default pickling would call
        __init__ with the message alone."""
        return type(self), (self.epoch, self.loss)


class RunRefused(UserError):
    """A run that was not started, leaving its run directory as it was (another process is
    training in it, or it holds a finished run of other settings)."""


class ResultsNotSaved(UserError):
    """A run that trained to the end but whose record could not be written (a full disk)."""


class Interrupted(Exception):
    """A run stopped by a signal (SIGTERM, SIGINT); its last complete checkpoint resumes it."""

    def __init__(self, signum: int, epoch: int | None):
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} during epoch {epoch}; rerun to resume")
        self.signum, self.epoch = signum, epoch

    def __reduce__(self) -> tuple[type, tuple[int, int | None]]:
        return type(self), (self.signum, self.epoch)
