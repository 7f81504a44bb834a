"""Test-only phantom families: synthetic studies with truth that no built-in model is trained on.

:mod:`medviewer.phantoms.heldout` is an independent chest-CT generator (its own anatomy and acquisition
models); it shares only the output contract with :mod:`medviewer.ai.phantom` and must stay out of training.
"""
