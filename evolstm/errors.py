"""The one exception type for mistakes a user can fix by editing a config or a command line."""

from __future__ import annotations


class ConfigError(Exception):
    """A user/config error: one line naming the key, the bad value and the valid choices.

    The CLI prints ``error: <message>`` to stderr and exits with status 2, without a
    traceback. Line breaks in the message are folded into ``"; "`` so it stays one line.
    """

    def __init__(self, message: str) -> None:
        lines = [part.strip() for part in str(message).splitlines() if part.strip()]
        super().__init__("; ".join(lines))


class FileFormatError(ConfigError, ValueError):
    """A policy or checkpoint file that is not valid evolstm data: crafted (it names code),
    corrupted, truncated or of another kind. The message starts with the file's path."""


class EnvError(RuntimeError):
    """An environment failed during a rollout: it raised, returned a non-finite observation or
    reward, or an observation that does not fit its declared space.

    The message is one line naming the env id, what happened, the step, the member / episode /
    slot and (on Ray) the worker. ``details`` keeps the original traceback text; the trainer
    writes it to the run folder instead of the console.
    """

    def __init__(
        self,
        env_id: str,
        what: str,
        step: int,
        slot: int | None = None,
        episodes: int = 1,
        *,
        member_offset: int = 0,
        worker: str | None = None,
        details: str = "",
    ) -> None:
        self.env_id, self.what, self.step, self.slot = env_id, what, step, slot
        self.episodes, self.member_offset, self.worker = episodes, member_offset, worker
        self.details = details
        if slot is None:
            where = "slot unknown"
        else:
            member, episode = divmod(slot, episodes)
            where = f"member {member + member_offset}, episode {episode} (slot {slot})"
        text = f"env {env_id!r}: {what} at step {step}, {where}"
        if worker is not None:
            text += f", on {worker}"
        super().__init__(" ".join(text.split()))

    def __reduce__(self):  # Ray ships it back from its workers
        args = (self.env_id, self.what, self.step, self.slot, self.episodes)
        return (_rebuild_env_error, (args, self.member_offset, self.worker, self.details))

    def relocated(self, member_offset: int, worker: str) -> EnvError:
        """The same error for a shard that starts at ``member_offset``, run on ``worker``."""
        return EnvError(
            self.env_id,
            self.what,
            self.step,
            self.slot,
            self.episodes,
            member_offset=member_offset,
            worker=worker,
            details=self.details,
        )


def _rebuild_env_error(args: tuple, member_offset: int, worker: str | None, details: str):
    return EnvError(*args, member_offset=member_offset, worker=worker, details=details)


class TrainingDiverged(RuntimeError):
    """A learner's loss or gradient became NaN or infinite (policy-gradient agents).

    The message is one line naming the iteration and which loss or gradient; the update was
    not applied, so the agent still holds the last completed iteration, which the trainer
    checkpoints before the error reaches the command line (exit status 1, traceback in the
    run folder's ``error.log``).
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(" ".join(message.split()))
        self.details = details
