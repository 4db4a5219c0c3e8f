"""Trainers (Accelerate). The library never imports this package."""
