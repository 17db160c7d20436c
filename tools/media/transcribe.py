"""Speech in an audio file (wav, mp3, ogg, flac, m4a) as text, offline, by faster-whisper.

Whisper base (see `whisper_model`), int8 on the CPU with two threads: it loads in about a
second and transcribes at about a fifth of real time here. The length is read from the
container header first, so a file over the limit is refused before it is decoded, and a
file that is not audio is refused with what to do. The model loads once per process.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from foreman.settings import Settings, get_settings
from foreman.tools.media.limits import MediaLimits, refuse_if
from foreman.tools.media.whisper_model import ensure_model

CPU_THREADS = 2
_model_lock = threading.Lock()  # one transcription at a time: two would fight for 2 cores


class Segment(BaseModel):
    start_s: float
    end_s: float
    text: str


class Transcript(BaseModel):
    text: str
    language: str
    duration_s: float
    segments: list[Segment]


def audio_seconds(path: Path, tool: str = "attach") -> float:
    """The audio's length from its container header (nothing is decoded)."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            refuse_if(not streams, tool, f"{path.name} has no audio stream; attach a wav, mp3 or ogg file")
            if container.duration is not None:
                return container.duration / 1_000_000  # av.time_base
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except av.FFmpegError as exc:
        refuse_if(True, tool, f"{path.name} is not a readable audio file ({exc}); attach a wav, "
                              "mp3 or ogg file (e.g. convert it with `ffmpeg -i in out.wav`)")
    refuse_if(True, tool, f"{path.name} does not say how long it is; convert it to wav and attach that")
    return 0.0  # unreachable


def check_audio(path: Path, limits: MediaLimits, tool: str = "attach") -> float:
    seconds = audio_seconds(path, tool)
    refuse_if(
        seconds > limits.max_audio_s, tool,
        f"{path.name} is {seconds / 60:.1f} minutes long, over the limit of "
        f"{limits.max_audio_s / 60:.0f} minutes; cut it into shorter files "
        "(e.g. `ffmpeg -i in.mp3 -f segment -segment_time 600 part%02d.mp3`) or raise FOREMAN_MEDIA_MAX_AUDIO_S",
    )
    return seconds


@cache
def _model(folder: str) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(folder, device="cpu", compute_type="int8", cpu_threads=CPU_THREADS)


def transcribe(path: Path, limits: MediaLimits, *, settings: Settings | None = None,
               language: str | None = None, tool: str = "attach") -> Transcript:
    """The words spoken in `path`; MediaRefused for a file too long or not audio."""
    seconds = check_audio(path, limits, tool)
    model = _model(str(ensure_model(settings or get_settings())))
    with _model_lock:
        try:
            segments, info = model.transcribe(str(path), language=language, beam_size=5,
                                              vad_filter=False, condition_on_previous_text=False)
            found = [Segment(start_s=round(s.start, 2), end_s=round(s.end, 2), text=s.text.strip())
                     for s in segments]
        except (ValueError, RuntimeError, OSError) as exc:
            refuse_if(True, tool, f"{path.name} could not be decoded ({exc}); convert it to wav and attach that")
    text = " ".join(s.text for s in found if s.text)
    return Transcript(text=text, language=info.language, duration_s=round(seconds, 2), segments=found)
