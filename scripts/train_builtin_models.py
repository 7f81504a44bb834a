"""Train, test and package MedViewer's built-in models from synthetic phantoms.

    python scripts/train_builtin_models.py            # writes resources/models/chest-ct-nodule, .../chest-ct-lung-nodule-seg
    python scripts/train_builtin_models.py --quick --out-dir /tmp/models   # a smoke test
    python scripts/train_builtin_models.py --retest   # no training: the test metrics again, through today's engine

Reproducible (fixed seeds, CPU) and about 14 minutes on two CPU cores (838 s measured); see medviewer/ai/builtin.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medviewer.ai.builtin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
