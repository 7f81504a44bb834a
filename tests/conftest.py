import os

# Qt never needs a display in tests; a real-window test starts its own Xvfb.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
