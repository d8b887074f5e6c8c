"""Speech layer: Mandarin prompt catalog, pinyin normalisation, TTS worker and Asterisk prompt audio."""
