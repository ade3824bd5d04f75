"""Voice masking: a persona's synthetic voice in place of the speaker's, timing kept exactly.

* :mod:`engine.voice.profile` — :class:`VoiceProfile`, a persona's voice as plain data.
* :mod:`engine.voice.convert` — the conversions on arrays (persona voice; McAdams).
* :mod:`engine.voice.audio` — reading any audio or video sound track, writing WAV/FLAC/MP3/AAC.
* :mod:`engine.voice.mask` — whole files in constant memory: :func:`mask_file`.
"""
from engine.errors import AudioError, AudioTooLong, EmptyAudio, NoAudioStream, UnreadableAudio
from engine.voice.audio import OUTPUT_FORMATS, AudioInfo, probe_audio, read_audio, write_audio
from engine.voice.mask import MaskResult, mask_array, mask_file
from engine.voice.profile import METHODS, PARAMETERS, VoiceProfile

__all__ = [
    "AudioError", "AudioInfo", "AudioTooLong", "EmptyAudio", "MaskResult", "METHODS", "NoAudioStream",
    "OUTPUT_FORMATS", "PARAMETERS", "UnreadableAudio", "VoiceProfile", "mask_array", "mask_file",
    "probe_audio", "read_audio", "write_audio",
]
