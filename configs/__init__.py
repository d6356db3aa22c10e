"""Presets (YAML) and label files; a wheel ships them as ``sim2real/configs``."""
