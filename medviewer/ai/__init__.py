"""The diagnosis assistant: networks, model packages, preprocessing, inference, training, phantoms. Never imports Qt."""
