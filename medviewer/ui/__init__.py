"""The Qt user interface: main window, viewer, panels and workers."""
