"""The TTS engines callgate ships: piper (neural), espeak-ng (many languages), gtts (Google)."""
