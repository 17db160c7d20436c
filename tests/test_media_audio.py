"""Audio is transcribed offline (espeak-ng speaks, Whisper must hear it); text can be
spoken to a wav in the workspace; too-long or non-audio files are refused first."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from foreman.errors import MediaRefused, ToolRefused
from foreman.tools.media.limits import MediaLimits

SENTENCE = "Please restart the web server before noon."


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_speech_of_a_known_sentence_is_transcribed_back(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments
    from foreman.tools.media.speech import speak

    spoken = speak(SENTENCE, workspace / "voicemail.wav")
    assert 1.0 < spoken.seconds < 10.0
    attached = prepare_attachments(["voicemail.wav"], workspace=workspace)
    found = attached.files[0]
    assert found.methods == ["transcript"] and "transcript of" in found.text
    heard = _words(found.text.split("\n", 1)[1])
    assert heard == _words(SENTENCE)


def test_speak_text_tool_writes_a_wav_only_when_the_run_may_write(workspace: Path) -> None:
    from foreman.tools.media.tools import speak_text
    from foreman.tools.workspace import Workspace

    read_only = Workspace(root=workspace, max_read_bytes=200_000)
    with pytest.raises(ToolRefused, match="writing is off.*--allow-write"):
        speak_text(read_only, "hello", "out/hello.wav")
    assert not (workspace / "out").exists()
    writable = read_only.model_copy(update={"allow_write": True})
    done = speak_text(writable, "The disk is almost full.", "out/hello.wav")
    assert done["path"] == "out/hello.wav" and done["seconds"] > 0.5
    with wave.open(str(workspace / "out" / "hello.wav")) as wav:
        assert wav.getnframes() > 0


def test_audio_longer_than_the_limit_is_refused_before_decoding(tmp_path: Path, foreman_home: Path) -> None:
    from foreman.tools.media.transcribe import transcribe

    path = tmp_path / "meeting.wav"
    with wave.open(str(path), "wb") as wav:  # 90 s of silence at 8 kHz
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(2 * 8000 * 90))
    with pytest.raises(MediaRefused, match=r"meeting.wav is 1.5 minutes long, over the limit of 1 minutes; cut it"):
        transcribe(path, MediaLimits(max_audio_s=60))


def test_a_file_that_is_not_audio_is_refused(workspace: Path, foreman_home: Path) -> None:
    from foreman.engine.attachments import prepare_attachments

    (workspace / "song.mp3").write_text("not an mp3, just text\n")
    with pytest.raises(MediaRefused, match="song.mp3 is not a readable audio file.*attach a wav, mp3 or ogg"):
        prepare_attachments(["song.mp3"], workspace=workspace)
