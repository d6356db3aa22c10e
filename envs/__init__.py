"""Simulation side: PyBullet tabletop envs with domain randomisation."""
