"""Every error Foreman raises, in one tree, so callers catch by meaning rather than by module.

    ForemanError                      anything Foreman itself refuses or reports
    ├── ConfigurationError            the setup is wrong: fix a setting, a name, a file; never retried
    │   ├── UnknownAgentError         an agent name the registry does not know
    │   ├── UnknownToolError          a tool name the catalogue does not know
    │   ├── ModelConfigError          FOREMAN_MODEL and its keys / URLs
    │   │   ├── UnknownModelError     a model name the local catalogue does not know
    │   │   └── VisionRequired        an attached image needs a vision model and OCR cannot stand in
    │   ├── OfflineSetupError         the offline data the stack needs is missing
    │   │   └── MediaSetupError       a media tool's program or model (espeak-ng, pdftoppm, Whisper) is missing
    │   ├── PolicyError               a run asks for more than the person running it allowed
    │   │   ├── FolderNotAllowed      a folder to index lies outside FOREMAN_KNOWLEDGE_ROOTS
    │   │   └── ThreadRefused         a run for one user named another user's conversation thread
    │   ├── UnknownKnowledgeBase      a knowledge-base name the index does not hold
    │   ├── UnknownThread             a conversation thread id the user does not have
    │   ├── StateFileError            a Foreman database (runs, audit) is damaged or unreadable
    │   └── PostgresUnavailable       PostgreSQL is not installed, or a server would not start
    ├── PlanError                     a plan or workflow file cannot run; nothing ran; never retried
    │   ├── PlanInvalid               validation errors, every one listed
    │   ├── WorkflowError             a workflow file's errors, each naming file, step and field
    │   ├── ConditionError            a condition that cannot be parsed or evaluated
    │   └── PlanningFailed            the planner could not write a valid plan
    ├── RunError                      something went wrong while running; finished results are kept
    │   ├── RunFailed                 a run ended FAILED (`.result` keeps what finished)
    │   ├── TaskNotCompleted          an agent did not complete its task
    │   ├── ScriptFailed              a script step exited non-zero or timed out
    │   ├── NotWaiting                an approval answer for a run that is not waiting
    │   ├── UnknownRunKey             `--resume KEY` names no run this store knows
    │   ├── RunStillRunning           `--resume KEY` names a run a live process still holds
    │   └── KnowledgeBusy             another ingest of the same knowledge base kept its lock too long
    ├── ToolError                     a tool call went wrong; the agent sees the message
    │   ├── ToolRefused               a guard said no before anything was touched
    │   │   ├── MediaRefused          a file the media tools will not read: format, size, length, damage
    │   │   └── QueryRefused          a model's SQL that is not one read-only SELECT over the tables shown
    │   ├── QueryFailed               the query engine could not run a checked query (error, time, memory)
    │   └── FetchError                the page could not be fetched
    └── ModelError                    the model layer failed (server, forced output, scripted model)
        ├── LocalModelError           the embedded llama.cpp server
        │   ├── ModelFileError        a model file that is not a usable GGUF (damaged, no chat template)
        │   └── ModelPullError        `foreman model pull` failed; the previous model is untouched
        ├── ForcingError              a forced tool call could not be parsed
        └── ScriptExhausted           the scripted test model ran out of replies

The CLI maps the four top branches to exit codes (`exit_code`) and one-line messages;
Prefect's task retries skip `ConfigurationError` and `PlanError` (`is_retryable`),
because retrying a misspelt agent name only wastes the wait between attempts.

Every class pickles with its fields (Prefect stores a failed state's exception), which a
custom `__init__` would otherwise break.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ForemanError(Exception):
    """The root: `except ForemanError` catches everything Foreman raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


# --- configuration -----------------------------------------------------------------


class ConfigurationError(ForemanError):
    """The setup is wrong; the message says which setting, name or file to fix."""


class UnknownAgentError(ConfigurationError, KeyError):
    def __init__(self, name: str, known: Any) -> None:
        self.name = name
        super().__init__(f"unknown agent {name!r}; known agents: {', '.join(sorted(known))}")


class UnknownToolError(ConfigurationError, KeyError):
    def __init__(self, name: str, known: Any) -> None:
        self.name = name
        super().__init__(f"unknown tool {name!r}; known tools: {', '.join(sorted(known))}")


class ModelConfigError(ConfigurationError, ValueError):
    """FOREMAN_MODEL (or its key, URL, model file) cannot be used as given."""


class UnknownModelError(ModelConfigError, KeyError):
    """A model name (FOREMAN_LOCAL_MODEL, `foreman model use/pull NAME`) the catalogue does not know."""

    def __init__(self, name: str, known: Any) -> None:
        self.name = name
        super().__init__(
            f"unknown local model {name!r}; the catalogue has: {', '.join(known)} "
            "(`foreman model list`), or set FOREMAN_LOCAL_MODEL_PATH to any GGUF file"
        )


class OfflineSetupError(ConfigurationError):
    """The offline data the stack needs (tokenizer file, model file) could not be found or copied."""


class PolicyError(ConfigurationError, ValueError):
    """A plan, workflow or call asks for a tool or permission the person running it did not allow."""


class FolderNotAllowed(PolicyError):
    """A folder to index lies outside the allowed roots (FOREMAN_KNOWLEDGE_ROOTS)."""

    def __init__(self, folder: Path | str, roots: Any) -> None:
        self.folder = Path(folder)
        self.roots = [str(r) for r in roots]
        super().__init__(
            f"{self.folder} is outside the folders knowledge may be built from "
            f"({', '.join(self.roots) or 'none'}); add it to FOREMAN_KNOWLEDGE_ROOTS or pick a folder inside one"
        )


class UnknownKnowledgeBase(ConfigurationError, KeyError):
    def __init__(self, name: str, known: Any) -> None:
        self.name = name
        super().__init__(
            f"unknown knowledge base {name!r}; known: {', '.join(sorted(known)) or 'none yet'} "
            "(build one with `foreman knowledge ingest FOLDER --name NAME`)"
        )


class StateFileError(ConfigurationError):
    """A Foreman database could not be opened; names the file and what to do."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{self.path}: {problem}. Move it aside (e.g. `mv {self.path} {self.path}.damaged`) "
            "and Foreman starts a new one; the old file is kept for you to inspect."
        )


class UnknownThread(ConfigurationError, KeyError):
    """A thread id this user has no thread under: an error, never a silent new thread."""

    def __init__(self, thread: str, user: str, known: Any, reason: str = "is not one of your threads") -> None:
        self.thread = thread
        self.user = user
        known = list(known)
        super().__init__(
            f"thread {thread!r} {reason} (user {user}; yours: {', '.join(known) or 'none yet'}); "
            "leave --thread out to start a new thread, or pick one from `foreman memory list`"
        )


class ThreadRefused(PolicyError):
    """A run for one user named a thread of another user. Says nothing of the other user."""

    def __init__(self, thread: str, user: str) -> None:
        self.thread = thread
        self.user = user
        super().__init__(
            f"thread {thread!r} belongs to another user; a run for {user} may not read, continue or delete it "
            "(refused and audited). Leave --thread out to start a new thread"
        )


class PostgresUnavailable(ConfigurationError):
    """Debian's PostgreSQL binaries are missing, or a PostgreSQL server would not start or answer."""


# --- plans -------------------------------------------------------------------------


class PlanError(ForemanError, ValueError):
    """A plan, workflow file or condition cannot run; nothing ran."""


class PlanInvalid(PlanError):
    """The plan cannot run. `errors` lists every problem found, not just the first."""

    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors
        super().__init__("invalid plan:\n" + "\n".join(f"- {e}" for e in errors))


class WorkflowError(PlanError):
    """The workflow file cannot run. Each line names the file, the step and the field."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"{path}: invalid workflow\n" + "\n".join(f"- {path.name}: {e}" for e in errors))


class ConditionError(PlanError):
    """A condition that is not in the condition language, or cannot be evaluated on the results."""


class PlanningFailed(PlanError):
    """The planner did not produce a valid plan within its repair budget. Nothing ran."""

    def __init__(self, errors: list[str], attempts: int) -> None:
        self.errors = errors
        self.attempts = attempts
        super().__init__(
            f"no valid plan after {attempts} attempt(s); last errors:\n" + "\n".join(f"- {e}" for e in errors)
        )


# --- runs --------------------------------------------------------------------------


class RunError(ForemanError):
    """Something failed while running; every finished result is kept."""


class RunFailed(RunError):
    """The run ended FAILED. `result` keeps everything it did: finished results, statuses, plan."""

    def __init__(self, result: Any) -> None:
        self.result = result
        answer = getattr(result, "answer", None)
        super().__init__(answer or f"run {getattr(result, 'run_key', '?')} failed")


class TaskNotCompleted(RunError):
    """The agent did not complete the task: it failed it, or ran out of model calls."""

    def __init__(self, task_name: str, status: str, reason: str) -> None:
        self.task_name = task_name
        self.status = status
        self.reason = reason
        super().__init__(f"{task_name} ended {status}: {reason}")


class ScriptFailed(RunError):
    """A script step exited non-zero, timed out, or could not start."""


class NotWaiting(RunError):
    """An approval answer for a run that is not (or no longer) waiting at an approval point."""


class UnknownRunKey(RunError, ValueError):
    """`resume` names a run key the run store has never seen."""


class KnowledgeBusy(RunError):
    """Another ingest of the same knowledge base held its lock past the wait; nothing was changed."""


class RunStillRunning(RunError):
    """`resume` names a run another live process is still running (or holding at an approval)."""


# --- tools -------------------------------------------------------------------------


class ToolError(ForemanError):
    """A tool call went wrong; the agent sees the message and may try something else."""


class ToolRefused(ToolError):
    """A guard refused the call before it did anything. The message says what is allowed."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"{tool} refused: {reason}")


class QueryRefused(ToolRefused):
    """A query is not one read-only SELECT over the tables shown; it never reached the engine."""

    def __init__(self, reason: str) -> None:
        super().__init__("query", reason)


class QueryFailed(ToolError):
    """The engine could not run a checked query: an error, or past its time or memory limit."""


class FetchError(ToolError):
    """The page could not be fetched (network, status, size, time)."""


class MediaRefused(ToolRefused):
    """An attached or produced file the media tools refuse: unsupported format, damaged, too
    large or too long. Raised before anything is read further; the message says what to do."""


class VisionRequired(ModelConfigError):
    """An attached image needs a model that reads images, and OCR found no text to stand in."""


class MediaSetupError(OfflineSetupError):
    """A media program (espeak-ng, pdftoppm) or model (Whisper base) is not installed here."""


# --- models ------------------------------------------------------------------------


class ModelError(ForemanError):
    """The model layer failed: the embedded server, forced output, or the scripted test model."""


class LocalModelError(ModelError):
    """The embedded llama.cpp server could not start or answer."""


class ModelFileError(LocalModelError):
    """A model file that llama.cpp should not be asked to serve: not GGUF, cut short, no chat template."""


class ModelPullError(LocalModelError):
    """Installing, assembling or verifying a catalogue model failed. Nothing replaced the previous model."""


class ForcingError(ModelError, ValueError):
    """A forced tool call could not be parsed from the model's output."""


class ScriptExhausted(ModelError):
    """The scripted test model has no reply left for this turn."""


# --- what callers do with them -----------------------------------------------------

EXIT_CODES: dict[type[ForemanError], int] = {
    ConfigurationError: 2,
    PlanError: 3,
    ToolError: 4,
    ModelError: 5,
    RunError: 1,
}


def exit_code(error: ForemanError) -> int:
    """The CLI's exit code for `error`: 2 setup, 3 plan, 4 tool, 5 model, 1 run (and anything else)."""
    for cls, code in EXIT_CODES.items():
        if isinstance(error, cls):
            return code
    return 1


def is_retryable(error: BaseException) -> bool:
    """Whether retrying could help. Setup and plan errors fail the same way every time."""
    return not isinstance(error, (ConfigurationError, PlanError))
